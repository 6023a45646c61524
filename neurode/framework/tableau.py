"""Butcher tableaus: an explicit Runge–Kutta method as data.

A method is its coefficients (Butcher 2016, *Numerical Methods for Ordinary
Differential Equations*, §23)::

    k_i     = f(t0 + c_i h, y0 + h Σ_{j<i} a_ij k_j)
    y1      = y0 + h Σ_i b_i k_i
    error   = h Σ_i e_i k_i            (e = b - b_hat, the embedded pair)
    y(θ)    = y0 + h Σ_i k_i Σ_p B_ip θ^(p+1)   (dense output, 0 ≤ θ ≤ 1)

A continuous extension may need stages of its own (Hairer, Nørsett & Wanner
I, §II.6, as DOP853's): ``dense_c``/``dense_a`` continue the stage list past
``s``, and the loop evaluates them only for steps that produce an output.

Everything the integration loop needs — stage combinations, the error
estimate, the dense interpolant — is derived from these numbers, so a new
method is a tableau and a name (see ``neurode/plugins/solvers/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

Number = float | int | Fraction


def _f(x: Number) -> float:
    return float(x)


@dataclass(frozen=True)
class ButcherTableau:
    """The coefficients of an explicit Runge–Kutta method.

    Attributes:
        name: the method's name in the literature.
        c: nodes, ``len(c) == s`` with ``c[0] == 0``.
        a: the strictly lower-triangular stage matrix as ``s`` rows, row ``i``
            holding the ``i`` coefficients ``a_i0 .. a_i(i-1)``.
        b: weights of the propagated solution, length ``s``.
        order: order of convergence of the propagated solution.
        b_error: weights of the error estimate ``b - b_hat`` (length ``s``), or
            ``None`` for a method without an embedded pair (fixed step only).
        error_order: the exponent the step-size controller uses,
            ``dt_new = dt * safety * ratio^(-1/error_order)``. Defaults to
            ``order`` (what torchdiffeq uses, so step sequences match).
        fsal: the last stage is reused as the first stage of the next step
            ("first same as last"). For Dormand–Prince and Bogacki–Shampine
            the last stage is evaluated at the new solution; torchdiffeq also
            reuses it for ``fehlberg2`` and ``adaptive_heun``, where it is an
            approximation of ``f(t1, y1)``; neurode keeps that behaviour for
            drop-in identical results.
        interpolant: dense-output coefficients ``B`` (one row of ``P``
            polynomial coefficients per stage, extra dense stages included) or
            ``None`` for linear/cubic Hermite interpolation between steps.
        dense_c, dense_a: the nodes and stage rows of extra stages the
            interpolant needs (row ``j`` has ``s + j`` entries: it may use the
            extra stages before it), evaluated only for steps with an output.
        torchdiffeq_interpolant: the (stage-only, ``s`` rows) interpolant
            torchdiffeq uses for this method, where it differs from
            ``interpolant``; ``neurode.odeint`` keeps it for identical outputs.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = False
    interpolant: tuple[tuple[float, ...], ...] | None = None
    dense_c: tuple[float, ...] = ()
    dense_a: tuple[tuple[float, ...], ...] = ()
    torchdiffeq_interpolant: tuple[tuple[float, ...], ...] | None = None
    # derived, for the hot loop: (stage, [(j, a_ij), ...]) without zeros
    stage_terms: tuple[tuple[tuple[int, float], ...], ...] = field(init=False, repr=False)
    solution_terms: tuple[tuple[int, float], ...] = field(init=False, repr=False)
    error_terms: tuple[tuple[int, float], ...] | None = field(init=False, repr=False)
    solution_is_last_stage: bool = field(init=False, repr=False)
    dense_stage_terms: tuple[tuple[tuple[int, float], ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        c = tuple(_f(x) for x in self.c)
        a = tuple(tuple(_f(x) for x in row) for row in self.a)
        b = tuple(_f(x) for x in self.b)
        e = None if self.b_error is None else tuple(_f(x) for x in self.b_error)
        if s == 0 or c[0] != 0.0:
            raise ValueError(f"tableau {self.name!r}: c must start with 0, got {self.c!r}")
        if len(a) != s or any(len(row) != i for i, row in enumerate(a)):
            raise ValueError(
                f"tableau {self.name!r}: a must have {s} rows with row i of length i, "
                f"got row lengths {[len(r) for r in a]}"
            )
        if len(b) != s:
            raise ValueError(f"tableau {self.name!r}: b must have length {s}, got {len(b)}")
        if e is not None and len(e) != s:
            raise ValueError(f"tableau {self.name!r}: b_error must have length {s}, got {len(e)}")
        n_dense = len(self.dense_c)
        if len(self.dense_a) != n_dense or any(len(row) != s + j for j, row in enumerate(self.dense_a)):
            raise ValueError(
                f"tableau {self.name!r}: dense_a must have {n_dense} rows (one per dense_c) with row j of length "
                f"{s} + j, got row lengths {[len(r) for r in self.dense_a]}"
            )
        if n_dense and self.interpolant is None:
            raise ValueError(f"tableau {self.name!r}: dense stages without an interpolant to use them")
        if self.interpolant is not None and len(self.interpolant) != s + n_dense:
            raise ValueError(
                f"tableau {self.name!r}: interpolant must have {s + n_dense} rows (one per stage, {n_dense} dense "
                f"stages included), got {len(self.interpolant)}"
            )
        if self.torchdiffeq_interpolant is not None and len(self.torchdiffeq_interpolant) != s:
            raise ValueError(f"tableau {self.name!r}: torchdiffeq_interpolant must have {s} rows, "
                             f"got {len(self.torchdiffeq_interpolant)}")
        if self.order < 1:
            raise ValueError(f"tableau {self.name!r}: order must be >= 1, got {self.order}")
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "b_error", e)
        rows = lambda m: None if m is None else tuple(tuple(_f(x) for x in row) for row in m)  # noqa: E731
        object.__setattr__(self, "interpolant", rows(self.interpolant))
        object.__setattr__(self, "torchdiffeq_interpolant", rows(self.torchdiffeq_interpolant))
        object.__setattr__(self, "dense_c", tuple(_f(x) for x in self.dense_c))
        object.__setattr__(self, "dense_a", rows(self.dense_a))
        if self.error_order is None:
            object.__setattr__(self, "error_order", self.order)
        nonzero = lambda row: tuple((j, x) for j, x in enumerate(row) if x != 0.0)  # noqa: E731
        object.__setattr__(self, "stage_terms", tuple(nonzero(row) for row in a))
        object.__setattr__(self, "solution_terms", nonzero(b))
        object.__setattr__(self, "error_terms", None if e is None else nonzero(e))
        object.__setattr__(self, "dense_stage_terms", tuple(nonzero(row) for row in self.dense_a))
        # Dormand–Prince style: the last stage is evaluated at y1 itself, so y1
        # costs no extra combination (Hairer, Nørsett & Wanner I, §II.5).
        last_is_solution = s > 1 and c[-1] == 1.0 and b[-1] == 0.0 and a[-1] == b[:-1]
        object.__setattr__(self, "solution_is_last_stage", last_is_solution)

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    def interpolation_weights(self, theta: float, interpolant=None) -> tuple[float, ...]:
        """``w_i(θ)`` with ``y(θ) = y0 + h Σ w_i k_i``, for a dense interpolant (default: ``self.interpolant``)."""
        interpolant = self.interpolant if interpolant is None else interpolant
        if interpolant is None:
            raise ValueError(f"tableau {self.name!r} has no dense interpolant")
        weights = []
        for row in interpolant:
            acc = 0.0
            power = theta
            for coef in row:
                acc += coef * power
                power *= theta
            weights.append(acc)
        return tuple(weights)


def quartic_interpolant(b: Sequence[Number], b_mid: Sequence[Number]) -> tuple[tuple[float, ...], ...]:
    """Dense-output coefficients of the quartic through y0, y1, y(1/2), f0 and f1.

    This is the interpolant torchdiffeq uses (Shampine 1986, "Some practical
    Runge–Kutta formulas", Math. Comp. 46, for the Dormand–Prince midpoint
    weights). With ``y1 = y0 + h Σ b_i k_i``, ``y_mid = y0 + h Σ m_i k_i``,
    ``f0 = k_0`` and ``f1 = k_{s-1}``, the polynomial
    ``p(θ) = y0 + dθ + cθ² + bθ³ + aθ⁴`` has (torchdiffeq ``_interp_fit``)::

        a = 2h(f1 - f0) - 8(y1 + y0) + 16 y_mid
        b = h(5 f0 - 3 f1) + 18 y0 + 14 y1 - 32 y_mid
        c = h(f1 - 4 f0) - 11 y0 - 5 y1 + 16 y_mid
        d = h f0

    The y0 terms cancel, leaving every coefficient linear in the stages.
    """
    s = len(b)
    if len(b_mid) != s:
        raise ValueError(f"b_mid must have the length of b ({s}), got {len(b_mid)}")
    bf = [_f(x) for x in b]
    mf = [_f(x) for x in b_mid]
    rows = []
    for i in range(s):
        f0 = 1.0 if i == 0 else 0.0
        f1 = 1.0 if i == s - 1 else 0.0
        d = f0
        c = (f1 - 4 * f0) - 5 * bf[i] + 16 * mf[i]
        bb = (5 * f0 - 3 * f1) + 14 * bf[i] - 32 * mf[i]
        a = 2 * (f1 - f0) - 8 * bf[i] + 16 * mf[i]
        rows.append((d, c, bb, a))
    return tuple(rows)
