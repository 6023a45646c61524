"""Rosenbrock (linearly implicit) methods: adaptive stiff solvers with one LU factorisation per step.

A Rosenbrock method (Hairer & Wanner, "Solving Ordinary Differential
Equations II", 2nd ed., §IV.7) replaces the Newton iteration of an implicit
Runge–Kutta method by ``s`` linear solves with one matrix. In Hairer's
implementation form (ibid., eq. (7.4)-(7.6), as in his code RODAS), with
``J = ∂f/∂y(t0, y0)`` and ``f_t = ∂f/∂t(t0, y0)``, the stages ``u_i`` solve

    (I/(hγ) - J) u_i = f(t0 + α_i h, y0 + Σ_{j<i} a_ij u_j) + Σ_{j<i} (c_ij/h) u_j + γ_i h f_t

and ``y1 = y0 + Σ m_i u_i``, the embedded ``ŷ1 = y0 + Σ m̂_i u_i``; the error
estimate is ``y1 - ŷ1``. Here both sides are multiplied by ``hγ``, so the
matrix factored is ``W = I - hγJ`` (no ``1/h`` on the diagonal):

* in the shared loop ``J`` is dense over the flattened state, ``(n, n)``;
* in the batch-parallel loop (per-sample ``h``, a ``(B,)`` float64 tensor)
  ``J`` is block-diagonal, ``(B, d, d)`` blocks (``jacobian.block_jacobian``),
  and the ``B`` blocks are factored in one batched LU;
* with ``lband``/``uband`` (either loop) only ``J``'s band is formed, exactly,
  from grouped vector–Jacobian products (``jacobian.exact_banded_jacobian``),
  and ``W`` is factored by block cyclic reduction (``banded.BandFactors``).

A singular ``W`` (``hγ`` meets the reciprocal of an eigenvalue of ``J``) is
not a crash: the step returns an infinite error estimate, which the loops
treat as a rejection with their strongest shrink (the controller's
``dfactor``); a sample that cannot recover fails with the loop's typed error
naming the sample, ``t`` and ``dt``.

The order of a Rosenbrock method rests on ``J`` (and ``f_t``) being exact:
they come from autograd (``jacobian.py``; forward differences only where
``f`` has no graph) or from the user's ``jac(t, y)``. ``f_t`` is taken by
autograd (a forward difference in ``t`` where ``f`` has no graph) unless the
option ``autonomous=True`` says ``f`` does not depend on ``t``.

Gradients (``direct``): the step is differentiated as the map it computes.
``J`` and ``f_t`` are formed detached (they are constants of the linear
solves), so their dependence on ``y0`` and on ``f``'s parameters is added
back without changing any value: stage ``i`` gets the zero-valued correction
``W⁻¹ hγ (J u_i - [J u_i])`` whose derivative is ``W⁻¹ hγ (dJ) u_i``, with
``J u_i`` a Jacobian–vector product carrying its graph (double backward), and
``f_t`` is recomputed with its graph. Without this the gradient would be
that of a W-method with frozen ``J``, only first-order accurate.

Tangent error control is off (``supports_tangent = False``): replaying a step
on a tangent would differentiate ``J``'s construction, not the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD

from neurode.framework.banded import BandFactors, band_matvec, check_bandwidths
from neurode.framework.errors import InvalidInputError
from neurode.framework.explicit_rk import hermite
from neurode.framework.jacobian import (
    banded_jacobian,
    exact_banded_jacobian,
    jacobian,
    largest_stray,
    record,
    unwatched,
)
from neurode.framework.partitioned_jacobian import PartitionedJacobian
from neurode.framework.solver import AbstractSolver, Step


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method in Hairer's implementation form (see the module docstring).

    Attributes:
        gamma: the diagonal ``γ`` (the same for every stage, so one ``W`` per step).
        alpha: the stage nodes ``α_i``.
        gamma_sums: ``γ_i = Σ_j γ_ij`` (the ``f_t`` coefficients; ``γ_1 = γ``).
        a: strictly lower rows ``a_ij`` (row ``i`` has ``i`` entries, row 0 none).
        coupling: strictly lower rows ``c_ij`` (Hairer's ``C``; the ``u_j/h`` terms).
        m, m_hat: solution and embedded weights.
        order, embedded_order: orders of ``y1`` and ``ŷ1``.
        dense: ``None``, or the rows ``(d_2j, d_3j, ...)`` of Hairer's continuous
            output ``y(θ) = (1-θ) y0 + θ (y1 + (1-θ)(Σ d_2j u_j + θ Σ d_3j u_j))``
            (RODAS; a third row adds ``θ² Σ d_4j u_j`` inside, as Rodas5P's);
            without it the dense output is the cubic Hermite interpolant.
        l_stable: whether the published method is L-stable (checked in the tests).
        adaptive: whether the embedded pair can control the step. ``False`` where its estimate is known to fail
            (the method is then offered on fixed grids, ``step_size``, like torchdiffeq's fixed-grid methods).
    """

    name: str
    gamma: float
    alpha: tuple[float, ...]
    gamma_sums: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    coupling: tuple[tuple[float, ...], ...]
    m: tuple[float, ...]
    m_hat: tuple[float, ...]
    order: int
    embedded_order: int
    dense: tuple[tuple[float, ...], ...] | None = None
    dense_order: int | None = None
    l_stable: bool = False
    adaptive: bool = True
    citation: str = ""
    #: stage i evaluates f at the same point as stage i-1 (ROS3P's third stage): the value is reused
    reuses: tuple[bool, ...] = field(init=False, repr=False)

    #: a Rosenbrock step carries nothing from the previous step (read by the batch loop as for RK tableaus)
    fsal = False

    def __post_init__(self) -> None:
        s = len(self.alpha)
        lengths = {"gamma_sums": len(self.gamma_sums), "m": len(self.m), "m_hat": len(self.m_hat),
                   "a": len(self.a), "coupling": len(self.coupling)}
        bad = {k: v for k, v in lengths.items() if v != s}
        if s == 0 or bad:
            raise ValueError(f"tableau {self.name!r}: {bad} entries, expected {s} (one per stage)")
        for name in ("a", "coupling"):
            for i, row in enumerate(getattr(self, name)):
                if len(row) != i:
                    raise ValueError(f"tableau {self.name!r}: row {i} of {name} has {len(row)} entries, expected {i}")
        if not math.isclose(self.gamma_sums[0], self.gamma, abs_tol=1e-15):
            raise ValueError(f"tableau {self.name!r}: gamma_sums[0] = {self.gamma_sums[0]!r} must equal gamma")
        if self.dense is not None and (len(self.dense) < 2 or any(len(row) != s for row in self.dense)):
            raise ValueError(f"tableau {self.name!r}: dense must be two or more rows of {s} weights")
        reuses = tuple(i > 0 and self.alpha[i] == self.alpha[i - 1]
                       and tuple(self.a[i]) == tuple(self.a[i - 1]) + (0.0,) for i in range(s))
        object.__setattr__(self, "reuses", reuses)

    @property
    def stages(self) -> int:
        return len(self.alpha)

    def standard_form(self) -> tuple[list[list[float]], list[list[float]], list[float], list[float]]:
        """``(α_ij, γ_ij, b, b̂)`` of the standard form ``k_i = h f(y0 + Σ α_ij k_j) + hJ Σ γ_ij k_j``.

        The implementation form's ``u = Γ k`` gives (Hairer & Wanner II, §IV.7): ``Γ = (I/γ - C)⁻¹``,
        ``α = A Γ``, ``b = Γᵀ m``. Used to check the order conditions and by quadratures over the stages.
        """
        s = self.stages
        inv_gamma = [[(1.0 / self.gamma if i == j else 0.0) - (self.coupling[i][j] if j < i else 0.0)
                      for j in range(s)] for i in range(s)]
        big_gamma = _lower_inverse(inv_gamma)
        a_full = [[self.a[i][j] if j < i else 0.0 for j in range(s)] for i in range(s)]
        alpha = [[sum(a_full[i][k] * big_gamma[k][j] for k in range(s)) for j in range(s)] for i in range(s)]
        b = [sum(self.m[k] * big_gamma[k][j] for k in range(s)) for j in range(s)]
        b_hat = [sum(self.m_hat[k] * big_gamma[k][j] for k in range(s)) for j in range(s)]
        return alpha, big_gamma, b, b_hat


def _lower_inverse(lower: list[list[float]]) -> list[list[float]]:
    """The inverse of a lower-triangular matrix, by forward substitution (exact enough in float64)."""
    s = len(lower)
    inverse = [[0.0] * s for _ in range(s)]
    for j in range(s):
        for i in range(j, s):
            acc = (1.0 if i == j else 0.0) - sum(lower[i][k] * inverse[k][j] for k in range(j, i))
            inverse[i][j] = acc / lower[i][i]
    return inverse


def _combine(terms: list[tuple[float, torch.Tensor]], base: torch.Tensor | None = None):
    """``base + Σ coef u`` over the non-zero terms (``None`` when there is nothing to add and no base)."""
    out = base
    for coef, u in terms:
        if coef == 0.0:
            continue
        out = torch.mul(u, coef) if out is None else torch.add(out, u, alpha=coef)
    return out


class Rosenbrock(AbstractSolver):
    """A Rosenbrock method given by its :class:`RosenbrockTableau` (see the module docstring); adaptive unless the
    tableau says its error estimate fails.

    Options:
        jac: the Jacobian ``jac(t, y) -> ∂f/∂y``, instead of autograd: ``(n, n)`` over the flattened state
            in the shared loop, ``(B, d, d)`` blocks in the batch-parallel loop (checked).
        autonomous: ``True`` when ``f`` does not depend on ``t`` (saves one evaluation of ``f`` per step);
            by default ``∂f/∂t`` is formed every step (autograd; zero when ``f``'s graph does not read ``t``).
        lband, uband: the Jacobian is banded with these half-bandwidths (scipy's and LSODA's names; RODAS's
            MLJAC, MUJAC), per sample in the batch-parallel loop: ``J``'s band is formed exactly by
            ``lband + uband + 1`` vector–Jacobian products (forward differences where ``f`` has no graph)
            and ``I - hγJ`` factored by block cyclic reduction (``banded.py``), so no ``d × d`` matrix is
            formed — a reaction–diffusion system on a fine 1-d grid. The method keeps its order: the band *is*
            ``J``, and a Jacobian with entries outside the declared band is refused (``InvalidInputError``
            naming the column; checked at every Jacobian by one more product in the same backward pass).
    """

    adaptive = True
    stiff = True
    supports_per_sample = True
    supports_tangent = False  # see the module docstring
    steps_onto_outputs = True  # see AbstractSolver: outputs are step ends, not interpolated

    def __init__(self, tableau: RosenbrockTableau, *, jac=None, autonomous: bool | None = None,
                 lband: int | None = None, uband: int | None = None) -> None:
        if not isinstance(tableau, RosenbrockTableau):
            raise TypeError(f"tableau must be a RosenbrockTableau, got {type(tableau).__name__}")
        if jac is not None and not callable(jac):
            raise InvalidInputError(f"jac must be a callable jac(t, y) -> dF/dy, got {type(jac).__name__}")
        if autonomous not in (None, True, False):
            raise InvalidInputError(f"autonomous must be True, False or None, got {autonomous!r}")
        self.band = None
        if lband is not None or uband is not None:
            if jac is not None:
                raise InvalidInputError(f"jac and lband={lband!r}, uband={uband!r} both describe the Jacobian: pass "
                                        "jac for a dense (or per-sample block) Jacobian of your own, or the "
                                        "bandwidths for a band formed by autograd")
            self.band = (0 if lband is None else lband, 0 if uband is None else uband)
            check_bandwidths(*self.band)
        self.tableau = tableau
        self.adaptive = self.supports_per_sample = tableau.adaptive  # the batch-parallel loop steps adaptively
        self.order = tableau.order
        self.error_order = tableau.order  # the explicit pairs' convention: h ratio^(-1/order)
        self.jac = jac
        self.autonomous = bool(autonomous)
        _, _, b, _ = tableau.standard_form()
        self._weights = tuple(b)

    @property
    def name(self) -> str:
        return self.tableau.name

    def __repr__(self) -> str:
        return f"Rosenbrock({self.tableau.name!r})"

    def init(self, func, t0, y0):
        return ()

    # ------------------------------------------------------------------ stepping

    def step(self, func, t0, h, y0, state):
        tab = self.tableau
        per_sample = isinstance(h, torch.Tensor)
        shape = y0.shape
        if per_sample:
            rows, d = shape[0], y0[0].numel()
            h_col = h.to(y0.dtype).view(-1, *([1] * (y0.ndim - 1)))
            hg = h_col * tab.gamma
        else:
            rows, d = 1, y0.numel()
            h_col, hg = h, h * tab.gamma

        def at(node: float):
            return torch.add(t0, h, alpha=node) if per_sample else t0 + node * h

        f0 = func(t0, y0)
        graph = torch.is_grad_enabled() and f0.requires_grad
        with unwatched(func):
            if self.band is None:
                jac = jacobian(lambda y: func(t0, y), y0.detach(), f0.detach(), per_sample=per_sample,
                               jac=None if self.jac is None else self._exact_jacobian,
                               t=self._time_tensor(func, t0, y0))
            else:
                band = self._band(func, t0, y0, f0, rows, d)
            f_t = None if self.autonomous else self._time_derivative(func, t0, y0, f0, graph)
            jvp = self._graph_jvp(func, t0, y0, f0) if graph else None
        record(func, jacobians=1, factorisations=1)
        if self.band is not None:
            c = hg.reshape(rows) if per_sample else torch.full((1,), float(hg), dtype=band.dtype, device=band.device)
            factors = BandFactors.factor(band, *self.band, c)
            singular = ~factors.usable | ~self._band_solves_accurately(factors, band, c)

            def solve(rhs: torch.Tensor) -> torch.Tensor:
                flat = rhs.reshape(rows, d)
                # as for a singular dense block: a rejected sample's stages stay finite (identity), so that its
                # values poison neither the batch nor the backward pass
                return torch.where(singular[:, None], flat, factors.solve(flat)).reshape(shape)
        else:
            blocks = jac.reshape(rows, d, d)
            eye = torch.eye(d, dtype=blocks.dtype, device=blocks.device)
            scale = hg.reshape(rows, 1, 1) if per_sample else hg
            lu, pivots, info = torch.linalg.lu_factor_ex(eye - scale * blocks)
            singular = info != 0
            if per_sample:
                # a singular block must not poison the batch (nor the backward pass): factor I there, reject below
                lu = torch.where(singular[:, None, None], eye, lu)
                pivots = torch.where(singular[:, None], torch.arange(1, d + 1, dtype=pivots.dtype,
                                                                      device=pivots.device), pivots)

            def solve(rhs: torch.Tensor) -> torch.Tensor:
                return torch.linalg.lu_solve(lu, pivots, rhs.reshape(rows, d, 1)).reshape(shape)
        if not per_sample and bool(singular.any()):
            error = torch.full_like(y0, math.inf)
            return Step(t0, h, y0, y0, state, (), error, dense=None, func=func)

        u: list[torch.Tensor] = []
        f_i = f0
        for i in range(tab.stages):
            if i > 0 and not tab.reuses[i]:
                y_i = _combine(list(zip(tab.a[i], u)), y0)
                f_i = func(at(tab.alpha[i]), y_i)
            # hγ × (f_i + Σ c_ij u_j / h + γ_i h f_t)
            rhs = torch.mul(f_i, hg)
            coupled = _combine(list(zip(tab.coupling[i], u)))
            if coupled is not None:
                rhs = torch.add(rhs, coupled, alpha=tab.gamma)
            if f_t is not None and tab.gamma_sums[i] != 0.0:
                rhs = rhs + (h_col * h_col * (tab.gamma * tab.gamma_sums[i])) * f_t
            u_i = solve(rhs)
            if jvp is not None:
                product = jvp(u_i.detach())
                if product is not None:  # zero in value; carries (dJ) u_i into the derivative
                    u_i = u_i + solve(hg * (product - product.detach()))
            u.append(u_i)
        y1 = _combine(list(zip(tab.m, u)), y0)
        error = _combine([(m - m_hat, u_i) for m, m_hat, u_i in zip(tab.m, tab.m_hat, u)])
        if error is None:
            error = torch.zeros_like(y0)
        if per_sample:
            bad = singular.view(-1, *([1] * (y0.ndim - 1)))
            error = torch.where(bad, math.inf, error)
            y1 = torch.where(bad, y0, y1)
        dense = {"u": u, "f0": f0}
        if tab.dense is not None:
            dense["cont"] = tuple(_combine(list(zip(row, u))) for row in tab.dense)
        return Step(t0, h, y0, y1, state, (), error, dense=dense, func=func)

    def _band_solves_accurately(self, factors: BandFactors, band: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``(rows,)``: whether the factors solve ``W x = W p`` back to ``p`` for a fixed probe ``p``, to 1e-6
        relative (float64; 1e-3 in lower precision). Cyclic reduction pivots within blocks only: stable where ``W``
        is block diagonally dominant (``banded.py``), which ``I - hγJ`` of a diffusion–reaction system is; where
        it is not, a step whose solves would be inaccurate is rejected (like a singular ``W``) and retried smaller,
        where ``W`` is nearer the identity — never taken with wrong stages. One band product and solve a step."""
        rows, d, _ = band.shape
        probe = 1.0 + (torch.arange(d, dtype=band.dtype, device=band.device) % 7) / 7.0
        probe = probe.expand(rows, d)
        image = probe - c.to(band.dtype)[:, None] * band_matvec(band, *self.band, probe)
        back = factors.solve(image)
        tolerance = 1e-6 if band.dtype == torch.float64 else 1e-3
        return ((back - probe).abs().amax(dim=1) <= tolerance * 2.0) & torch.isfinite(back).all(dim=1)

    def _band(self, func, t0, y0: torch.Tensor, f0: torch.Tensor, rows: int, d: int) -> torch.Tensor:
        """``J``'s band per row, ``(rows, d, lband + uband + 1)``: exact by autograd (refusing a Jacobian with
        entries outside it, found by one more product in the same pass), by grouped forward differences where
        ``f`` has no graph (unchecked there)."""
        lband, uband = self.band
        check_bandwidths(lband, uband, d)

        def f(z: torch.Tensor) -> torch.Tensor:
            return func(t0, z.reshape(y0.shape)).reshape(rows, d)

        y, value = y0.detach().reshape(rows, d), f0.detach().reshape(rows, d)
        exact = exact_banded_jacobian(f, y, lband, uband)
        if exact is None:
            return banded_jacobian(f, y, value, lband, uband)
        band, strays = exact
        scale = band.abs().amax().clamp_min(1.0)
        # round-off of wᵀJ (w <= 2.5, at most lband + uband + 1 terms a column) is ~eps of that; strays are not.
        # One host read a step; the details only for the message
        if bool((strays > 100 * torch.finfo(band.dtype).eps * 2.5 * (lband + uband + 1) * scale).any()):
            stray, sample, column = largest_stray(strays)
            scale = float(band.abs().max())
            raise InvalidInputError(
                f"{self.name} was given lband={lband}, uband={uband}, but the Jacobian has entries outside that band"
                f" (column {column}{f' of sample {sample}' if rows > 1 else ''}: a weighted sum of its entries "
                f"differs from the band's by {stray:.3g}, where the band's largest entry is {scale:.3g}): a "
                "Rosenbrock method needs the exact Jacobian for its order. Give the true bandwidths (a state "
                "ordered so that each component couples to its neighbours: interleave the species of a grid "
                "point), or leave them out for the dense Jacobian")
        return band

    def _exact_jacobian(self, t, y):
        """The user's ``jac(t, y)``, refused where it is only an iteration matrix (a :class:`PartitionedJacobian`)."""
        value = self.jac(t, y)
        if isinstance(value, PartitionedJacobian):
            raise InvalidInputError(
                f"{self.name} needs the exact Jacobian of the system for its order, and jac returned a "
                "PartitionedJacobian (diagonal blocks only: an iteration matrix, as adjoint='backsolve' gives for its "
                "augmented system). For gradients of a Rosenbrock solve use adjoint='checkpoint' (exact discrete "
                "gradients, bounded memory) or 'direct'. (backsolve would need a method with a Newton iteration for "
                "its backward solve, and an adaptive backward solve of a stiff problem follows the modes that decay "
                "forward and grow backward: its gradient is not to be trusted there)")
        return value

    @staticmethod
    def _time_tensor(func, t0, y0: torch.Tensor) -> torch.Tensor:
        """``t0`` as ``f`` receives it: a 0-d tensor (shared loop) or ``(B,)`` (per sample), in the time dtype."""
        dtype = getattr(func, "time_dtype", y0.real.dtype if y0.is_complex() else y0.dtype)
        if isinstance(t0, torch.Tensor):
            return t0.to(dtype)
        return torch.scalar_tensor(t0, dtype=dtype, device=y0.device)

    def _time_derivative(self, func, t0, y0: torch.Tensor, f0: torch.Tensor, graph: bool) -> torch.Tensor | None:
        """``∂f/∂t(t0, y0)``: autograd (``None`` where ``f``'s graph does not read ``t``), else a forward difference.

        ``∂f_b/∂t_b`` of every sample at once with two backward passes (the double-vjp form of a
        forward-mode derivative): ``g(w) = Σ w ∂f/∂t`` per time, then ``∂g/∂w`` against ones. With
        ``graph``, the result keeps its dependence on ``y0`` and ``f``'s parameters.
        """
        if graph and y0.grad_fn is not None:  # forward mode: a gradient from f(t, y0) would walk the solve's history
            t = self._time_tensor(func, t0, y0).detach()
            try:
                with torch.enable_grad(), fwAD.dual_level():
                    f_t = fwAD.unpack_dual(func(fwAD.make_dual(t, torch.ones_like(t)), y0)).tangent
                return f_t  # None: f does not read t
            except (RuntimeError, NotImplementedError):
                pass  # an operation without a forward-mode derivative: the double-vjp form below
        t = self._time_tensor(func, t0, y0).detach().requires_grad_(True)
        with torch.enable_grad():
            # y with a graph too: an out without one then means f cannot be differentiated, not that it ignores t
            out = func(t, y0 if graph else y0.detach().requires_grad_(True))
            if out.requires_grad:
                w = torch.zeros_like(out, requires_grad=True)
                (g,) = torch.autograd.grad(out, t, w, create_graph=True, allow_unused=True)
                if g is None or not g.requires_grad:
                    return None
                (f_t,) = torch.autograd.grad(g, w, torch.ones_like(g), create_graph=graph)
                return f_t if graph else f_t.detach()
        # f has no graph (it runs under no_grad, e.g. inside a continuous adjoint): a forward difference in t
        with torch.no_grad():
            t_now = t.detach()
            delta = math.sqrt(torch.finfo(t_now.dtype).eps) * torch.clamp(t_now.abs(), min=1.0)
            shifted = func(t_now + delta, y0)
            delta = ((t_now + delta) - t_now).to(y0.dtype)  # the increment actually taken, after rounding
            if delta.ndim:
                delta = delta.view(-1, *([1] * (y0.ndim - 1)))
            return (shifted - f0.detach()) / delta

    @staticmethod
    def _graph_jvp(func, t0, y0: torch.Tensor, f0: torch.Tensor):
        """``v -> J v`` carrying the graph of ``J``'s dependence on ``y0`` and ``f``'s parameters (for ``direct``).

        ``g(w) = Jᵀ w`` is built once with ``create_graph``; ``J v = ∂(g·v)/∂w`` per stage.
        """
        if y0.requires_grad and y0.grad_fn is not None:
            return _forward_mode_jvp(func, t0, y0, lambda: Rosenbrock._double_backward_jvp(func, t0, y0, f0))
        return Rosenbrock._double_backward_jvp(func, t0, y0, f0)

    @staticmethod
    def _double_backward_jvp(func, t0, y0: torch.Tensor, f0: torch.Tensor):
        """``v -> J v`` as ``∂(g·v)/∂w`` of ``g(w) = Jᵀ w`` (built once with ``create_graph``), or ``None``."""
        with torch.enable_grad():
            if y0.requires_grad:
                y, out = y0, f0
            else:
                y = y0.detach().requires_grad_(True)
                out = func(t0, y)
            w = torch.zeros_like(out, requires_grad=True)
            (g,) = torch.autograd.grad(out, y, w, create_graph=True, allow_unused=True)
        if g is None or not g.requires_grad:
            return None

        def product(v: torch.Tensor) -> torch.Tensor | None:
            with torch.enable_grad():
                (jv,) = torch.autograd.grad(g, w, v, create_graph=True, retain_graph=True, allow_unused=True)
            return jv if jv is not None and jv.requires_grad else None

        return product

    # ------------------------------------------------------------------ dense output

    def interpolate(self, step: Step, theta):
        if isinstance(theta, float) and theta in (0.0, 1.0):
            return step.y0 if theta == 0.0 else step.y1
        if isinstance(theta, torch.Tensor):
            theta = theta.to(step.y0.dtype)
        if self.tableau.dense is None:
            return self._hermite(step, theta, None)
        return _rodas_dense(step.y0, step.y1, step.dense["cont"], theta)

    def interpolate_per_sample(self, step: Step, rows: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        y0 = step.y0[rows]
        th = theta.to(y0.dtype).view(-1, *([1] * (y0.ndim - 1)))
        if self.tableau.dense is None:
            return self._hermite(step, th, rows)
        return _rodas_dense(y0, step.y1[rows], [k[rows] for k in step.dense["cont"]], th)

    def _hermite(self, step: Step, theta, rows):
        """The cubic Hermite interpolant from ``y0, y1, f(t0, y0)`` and ``f(t1, y1)`` (one evaluation per step
        that produces outputs, for the whole active batch, cached)."""
        if step.cache is None:
            step.cache = {}
        if "f1" not in step.cache:
            t1 = torch.add(step.t0, step.h) if isinstance(step.h, torch.Tensor) else step.t0 + step.h
            step.cache["f1"] = step.func(t1, step.y1)
        if rows is None:
            return hermite(step.y0, step.y1, step.dense["f0"], step.cache["f1"], step.h, theta)
        h = step.h[rows].to(step.y0.dtype).view_as(theta)
        return hermite(step.y0[rows], step.y1[rows], step.dense["f0"][rows], step.cache["f1"][rows], h, theta)

    # ------------------------------------------------------------------ quadrature (per-sample backsolve)

    @property
    def stage_weights(self) -> tuple[float, ...]:
        """The standard form's weights ``b_i``: with the nodes ``α_i`` a quadrature rule of the method's order
        (the bushy-tree order conditions ``Σ b_i α_i^q = 1/(q+1)``)."""
        return self._weights

    def stage_points_per_sample(self, step: Step, stages=None) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """``(t_i, Y_i, b_i)``: the stage times, the stage arguments ``y0 + Σ a_ij u_j`` and the weights."""
        tab, u = self.tableau, step.dense["u"]
        points = []
        for i in range(tab.stages) if stages is None else stages:
            y_i = _combine(list(zip(tab.a[i], u)), step.y0)
            points.append((torch.add(step.t0, step.h, alpha=tab.alpha[i]), y_i, self._weights[i]))
        return points


def _rodas_dense(y0, y1, k, theta):
    """Hairer's RODAS continuous output ``(1-θ) y0 + θ (y1 + (1-θ)(k1 + θ k2))`` (rodas.f, CONTRO), and its
    extension by further powers of ``θ``, ``(1-θ) y0 + θ (y1 + (1-θ)(k1 + θ (k2 + θ k3)))`` (Rodas5P's order-4
    output), the inner polynomial by Horner's scheme."""
    inner = k[-1]
    for k_j in reversed(k[:-1]):
        inner = k_j + theta * inner
    return (1 - theta) * y0 + theta * (y1 + (1 - theta) * inner)


def _forward_mode_jvp(func, t0, y0: torch.Tensor, fallback):
    """``v -> J v`` by forward-mode AD at ``y0``, differentiable in reverse (for ``direct``); where ``f`` has an
    operation without a forward-mode derivative, the double-backward product ``fallback()`` builds instead.

    Used when ``y0`` carries the history of the solve: the double-backward form asks autograd for a gradient
    from ``f(y0)``, and autograd walks the whole graph reachable from there — every step so far — so each step
    would cost time proportional to the steps before it (246 steps of rodas4: 29 s, against 1.2 s with this and
    ``∂f/∂t`` in forward mode too).
    Forward mode walks nothing backwards.
    """
    backup: list = []

    def product(v: torch.Tensor) -> torch.Tensor | None:
        if not backup:
            try:
                with torch.enable_grad(), fwAD.dual_level():
                    tangent = fwAD.unpack_dual(func(t0, fwAD.make_dual(y0, v))).tangent
                return tangent if tangent is not None and tangent.requires_grad else None
            except (RuntimeError, NotImplementedError):
                backup.append(fallback())
        return None if backup[0] is None else backup[0](v)

    return product
