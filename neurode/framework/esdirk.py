"""Adaptive ESDIRK methods: L-stable, stiffly accurate, with embedded error estimates, per-sample capable.

An ESDIRK (singly diagonally implicit Runge–Kutta with an explicit first
stage; Kværnø, BIT 44 (2004) 489–502; Kennedy & Carpenter, NASA/TM-2016-219173)
has a lower-triangular matrix ``A`` with ``a_11 = 0`` and ``a_ii = γ`` after:

    k_1 = f(t0, y0)                                       (the last stage of the step before: FSAL)
    Y_i = y0 + h Σ_{j<i} a_ij k_j + hγ k_i,   k_i = f(t0 + c_i h, Y_i),   i = 2..s
    y1  = Y_s                                             (stiffly accurate: b = the last row of A)
    ŷ1  = y0 + h Σ b̂_j k_j                               (Kværnø: b̂ = row s-1, so ŷ1 = Y_{s-1})

Each implicit stage is solved for ``z = Y_i - a_i`` by simplified Newton
(``newton.py``) with one matrix ``I - hγ J`` per step; ``k_i = z / (hγ)``
rather than ``f(Y_i)``, which would amplify the Newton error by the
stiffness (Shampine 1980; Hairer & Wanner II, §IV.8). The error estimate
``y1 - ŷ1 = h Σ (b - b̂)_j k_j`` goes to the loop's controller as an explicit
pair's does, with ``error_order`` = embedded order + 1.

Jacobian policy (Hairer & Wanner II, §IV.8; RADAU5's strategy for an
SDIRK): the carried state holds ``J``, the LU factors of ``I - hγ J`` with
the ``hγ`` they were made for, ``η`` of the last Newton solve, and a flag:
``0`` J was formed at this state's ``y``, ``1`` it is older, ``2`` form a new
one before the next use. The LU is refactored whenever ``hγ`` differs from
the factored one (every step the controller changes ``h``); ``J`` is formed
again only when a step's Newton iteration converged slowly (rate above
``refresh_rate``) or failed with an old ``J``. A Newton failure is not an
exception: the failing rows get an infinite error, the loop rejects the
step and shrinks it, and the retry starts from :attr:`Step.state_retry`
(with the Jacobian just formed at ``y0``, or the request to form one).

Per sample (``h`` a ``(B,)`` tensor, the batch-parallel loop): every row of
the state is one sample with its own ``(d, d)`` block of ``J``, its own LU,
``hγ``, flag, ``η`` and Newton iteration count; a converged sample stops
iterating, and only the samples whose flag asks for it have their block
formed. :attr:`Step.rows` reports the rows of ``f`` really evaluated.

Band preconditioner (``linear_solver="krylov"`` with ``lband``/``uband``): the
carried state holds the band of ``J`` (``(B, d, lband + uband + 1)``, one per
sample) and the same flag, under the same policy — formed again after a
slow or failed Newton solve with an old band — plus one a Jacobian-free
iteration needs: Newton's rate there measures GMRES's tolerance, not the
band's age, which shows instead in GMRES iterations. A band is formed again
after a step whose GMRES iterations beyond one per solve (what a lagged
band cost) exceed the ``lband + uband + 2`` evaluations a new band costs
(SUNDIALS refreshes CVBANDPRE's band on a fixed age of 51 steps; this
balances the two costs instead: on the N = 100 Brusselator, never refreshing
took 5674 evaluations with kvaerno4, refreshing every step 4719, this rule 4030). And
``I - hγ J_band`` is factored once per step (``banded.py``: a few batched
``m × m`` operations per reduction level, cheaper than carrying the factors
through the loop's state) and serves every GMRES product of every stage.

Dense output: a continuous extension where the tableau has one
(``ESDIRKTableau.dense``: ``y(t0 + θh) = y0 + h Σ_j b_j(θ) k_j`` with
polynomial weights ``b_j(θ)`` that satisfy the order conditions with
``θ^|τ|/γ(τ)`` in place of ``1/γ(τ)``, Hairer et al. I, §II.6, eq. 6.8, and
``b(1) = b``, ``b'(0) = e_1``, ``b'(1) = e_s``: C¹ across steps); otherwise
the cubic Hermite interpolant on ``(y0, k_1, y1, k_s)`` — ``k_s`` is the
derivative at ``y1`` — third order, C¹ across steps (what diffrax uses for
these methods). Neither costs an evaluation. The order matters: the loop
steps past the last output and interpolates back (as torchdiffeq), so on a
stiff problem whose steps grow to a fifth of the span the final output is an
interpolated value; kvaerno5 with the cubic Hermite was 33 tolerances off on
Robertson at t = 1e5 where its step end was 3.3 (issue 15).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from neurode.framework.banded import BandFactors, check_bandwidths
from neurode.framework.errors import InvalidInputError
from neurode.framework.explicit_rk import hermite
from neurode.framework.implicit_gradient import implicit_root
from neurode.framework.jacobian import banded_jacobian, block_jacobian, record, unwatched, user_jacobian
from neurode.framework.newton import DenseLU, NewtonKrylov, RowField, StageSolution, solve_stage
from neurode.framework.partitioned_jacobian import PartitionedFactors, PartitionedJacobian
from neurode.framework.solver import NEWTON_DIVERGED, NEWTON_SINGULAR, NEWTON_SLOW, AbstractSolver, Step, StepFailure

_LINEAR_SOLVERS = ("lu", "krylov")
#: flags of the carried Jacobian (see the module docstring)
_JAC_AT_Y, _JAC_OLD, _JAC_REFRESH = 0.0, 1.0, 2.0
#: the largest degree of the stage-derivative polynomial the stage predictor extrapolates (see stage_predictors)
PREDICTOR_DEGREE = 2


def _rows_where(mask: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
    """Whether any row of ``mask`` is set, and the positions of those rows (``None``: every row), from one host
    read of the count (the positions themselves only when some rows are set and some not)."""
    count = int(mask.sum())
    if count == 0:
        return False, None
    return True, (None if count == mask.numel() else torch.nonzero(mask).flatten())


@dataclass(frozen=True)
class ESDIRKTableau:
    """The coefficients of a stiffly accurate ESDIRK pair.

    Attributes:
        name: the method's name (diffrax's where it has one).
        gamma: the diagonal ``a_ii`` (i >= 2).
        c: nodes, ``c_1 = 0`` and ``c_s = 1``.
        a: the full ``s x s`` lower-triangular matrix, first row zero; ``b`` is its last row.
        b_hat: the embedded weights.
        order, embedded_order: orders of ``y1`` and ``ŷ1``.
        citation: where the coefficients are published.
        dense: optional continuous extension, one row per stage: the coefficients of ``θ, θ², ...`` in
            ``b_j(θ)`` (see the module docstring); ``None``: the cubic Hermite interpolant.
        dense_order: the order of ``dense`` (the order conditions it meets at every ``θ``).
    """

    name: str
    gamma: float
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b_hat: tuple[float, ...]
    order: int
    embedded_order: int
    citation: str = ""
    dense: tuple[tuple[float, ...], ...] | None = None
    dense_order: int | None = None

    def __post_init__(self) -> None:
        s = len(self.c)
        if s < 2 or len(self.a) != s or any(len(row) != s for row in self.a) or len(self.b_hat) != s:
            raise ValueError(f"tableau {self.name!r}: a must be {s} x {s} and b_hat of length {s}")
        if any(x != 0.0 for x in self.a[0]) or self.c[0] != 0.0 or self.c[-1] != 1.0:
            raise ValueError(f"tableau {self.name!r}: an ESDIRK has an explicit first stage (a row and c of 0) and "
                             f"c_s = 1, got c = {self.c}")
        for i in range(1, s):
            if self.a[i][i] != self.gamma or any(x != 0.0 for x in self.a[i][i + 1:]):
                raise ValueError(f"tableau {self.name!r}: row {i} of a must end with gamma={self.gamma} on the "
                                 f"diagonal and zeros after it, got {self.a[i]}")
            if not math.isclose(sum(self.a[i]), self.c[i], rel_tol=1e-12, abs_tol=1e-12):
                raise ValueError(f"tableau {self.name!r}: row {i} of a sums to {sum(self.a[i])!r}, "
                                 f"expected c[{i}] = {self.c[i]!r}")
        if not math.isclose(sum(self.b_hat), 1.0, abs_tol=1e-12):
            raise ValueError(f"tableau {self.name!r}: b_hat sums to {sum(self.b_hat)!r}, expected 1")
        if self.dense is not None:
            if len(self.dense) != s or len({len(row) for row in self.dense}) != 1 or self.dense_order is None:
                raise ValueError(f"tableau {self.name!r}: dense must have one row of θ-coefficients per stage "
                                 f"({s}), all of one length, and a dense_order")
            at_one = tuple(sum(row) for row in self.dense)
            if not all(math.isclose(w, b_j, abs_tol=1e-12) for w, b_j in zip(at_one, self.b)):
                raise ValueError(f"tableau {self.name!r}: the dense weights at θ = 1 are {at_one}, expected b = "
                                 f"{self.b} (the interpolant must end at y1)")

    @property
    def b(self) -> tuple[float, ...]:
        return self.a[-1]

    @property
    def stages(self) -> int:
        return len(self.c)

    #: the first stage is the last one of the step before (the batch loop counts it once, at the start)
    fsal = True


class ESDIRK(AbstractSolver):
    """An adaptive ESDIRK method given by its tableau (see the module docstring).

    Options:
        linear_solver: ``"lu"`` (batched dense LU of ``I - hγ J``, the default) or ``"krylov"`` (GMRES on
            Jacobian-vector products: no Jacobian is formed, for large states).
        jac: ``jac(t, y) -> ∂f/∂y``, the user's Jacobian, instead of autograd: ``(n, n)`` (or
            ``(*y.shape, *y.shape)``) over the whole state in a shared solve; ``(B, d, d)`` blocks in a
            per-sample solve, where ``t`` is then the ``(B,)`` tensor of the samples' times.
        newton_tol: ``κ``, the Newton iteration's tolerance as a fraction of the local error tolerance
            (default: RADAU5's ``max(10 eps / rtol, min(0.03, rtol^(1/2)))``, Hairer & Wanner II, §IV.8: 0.03 at
            rtol 1e-3, 1e-3 at rtol 1e-6 — a fixed 0.01 stopped Newton too early at tight tolerances, where
            an increment accepted on the previous stage's rate left errors of many tolerances on van der Pol).
        max_iters: Newton increments per stage before the step is rejected (default 10).
        max_rate: the largest acceptable convergence rate ``θ`` (default 0.9).
        refresh_rate: form ``J`` again after a step whose Newton rate exceeded this (default 0.2).
        krylov_rtol, krylov_restart, krylov_max_iters: GMRES's relative tolerance (default 1e-3), restart
            length (30) and budget of products per solve (default 10 d).
        lband, uband: the half-bandwidths of ``∂f/∂y`` (scipy's and LSODA's names; one given, the other
            defaults to 0): GMRES is then preconditioned by the band (SUNDIALS' CVBANDPRE; see the module
            docstring), formed by ``lband + uband + 1`` grouped evaluations of ``f``. Only with
            ``linear_solver="krylov"``; each below ``d`` (a sample's components in a per-sample solve).
        rtol, atol: the solve's tolerances, which scale the Newton norm (passed in by ``solve``).
        fixed_step: whether the solve takes fixed steps (passed in by ``solve`` when it has ``step_size`` or
            ``grid_constructor``). A fixed step has no local error tolerance for the Newton error to be a
            fraction of: its stages are iterated past ``κ`` until the increments stop shrinking (round-off), as
            the fixed-step implicit methods do (``implicit_rk.py``), so that a step's result is the method's and
            not the iteration's — the measured order is the method's down to round-off, and a batch member
            equals its own solve (with ``κ``, the iterations stopped by one norm over the whole state differed
            from a member's own by 3e-10 on ``neurode.testing.ManufacturedProblem``).
    """

    adaptive = True
    stiff = True
    supports_per_sample = True
    supports_tangent = False  # Newton iteration counts depend on the values: nothing to replay linearly
    steps_onto_outputs = True  # see AbstractSolver: outputs are L-stable step ends, not interpolated

    def __init__(self, tableau: ESDIRKTableau, *, linear_solver: str = "lu", jac: Callable | None = None,
                 newton_tol: float | None = None, max_iters: int = 10, max_rate: float = 0.9, refresh_rate: float = 0.2,
                 krylov_rtol: float = 1e-3, krylov_restart: int = 30, krylov_max_iters: int | None = None,
                 lband: int | None = None, uband: int | None = None, rtol=1e-7, atol=1e-9,
                 fixed_step: bool = False) -> None:
        if not isinstance(tableau, ESDIRKTableau):
            raise TypeError(f"tableau must be an ESDIRKTableau, got {type(tableau).__name__}")
        if linear_solver not in _LINEAR_SOLVERS:
            raise InvalidInputError(f"linear_solver must be one of {_LINEAR_SOLVERS}, got {linear_solver!r}")
        if jac is not None and not callable(jac):
            raise InvalidInputError(f"jac must be callable as jac(t, y) -> the Jacobian, got {jac!r}")
        if jac is not None and linear_solver == "krylov":
            raise InvalidInputError("jac is not used by linear_solver='krylov' (it forms no Jacobian); pass one "
                                    "or the other")
        self.band = None
        if lband is not None or uband is not None:
            if linear_solver != "krylov":
                raise InvalidInputError(f"lband={lband!r}, uband={uband!r} set the band preconditioner of "
                                        f"linear_solver='krylov', got linear_solver={linear_solver!r} (the dense LU "
                                        "forms the whole Jacobian; pass linear_solver='krylov' or drop the bands)")
            self.band = (0 if lband is None else lband, 0 if uband is None else uband)
            check_bandwidths(*self.band)
        if newton_tol is None:
            newton_tol = _radau5_newton_tol(rtol)
        for name, value, low, high in (("newton_tol", newton_tol, 0, 1), ("max_rate", max_rate, 0, 1),
                                       ("refresh_rate", refresh_rate, 0, 1), ("krylov_rtol", krylov_rtol, 0, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise InvalidInputError(f"{name} must be a number in ({low}, {high}], got {value!r}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise InvalidInputError(f"max_iters must be a positive integer, got {max_iters!r}")
        self.tableau = tableau
        self.order = tableau.order
        self.error_order = tableau.embedded_order + 1
        self.linear_solver, self.jac = linear_solver, jac
        self.newton_tol, self.max_iters = float(newton_tol), max_iters
        self.max_rate, self.refresh_rate = float(max_rate), float(refresh_rate)
        self.krylov = {"rtol": float(krylov_rtol), "restart": krylov_restart, "max_iters": krylov_max_iters}
        self.rtol, self.atol = rtol, atol
        self.fixed_step = bool(fixed_step)
        s = tableau.stages
        # (j, a_ij) without zeros, below the diagonal, for the explicit part of every stage
        self._lower = tuple(tuple((j, a_ij) for j, a_ij in enumerate(tableau.a[i][:i]) if a_ij != 0.0)
                            for i in range(s))
        self._error = tuple((j, b_j - bh_j) for j, (b_j, bh_j) in enumerate(zip(tableau.b, tableau.b_hat))
                            if b_j != bh_j)
        self._predictor = stage_predictors(tableau)

    @property
    def name(self) -> str:
        return self.tableau.name

    def __repr__(self) -> str:
        return f"ESDIRK({self.tableau.name!r})"

    @property
    def initial_step_order(self) -> int:
        return self.error_order

    # ------------------------------------------------------------------ carried state

    def init(self, func, t0, y0):
        per_sample = isinstance(t0, torch.Tensor)
        batch, d = _rows(y0, per_sample)
        f0 = func(t0, y0)
        eta = torch.ones(batch, dtype=torch.float64, device=y0.device)
        if self.linear_solver == "krylov":
            if self.band is None:
                return (f0, eta)
            check_bandwidths(*self.band, d)
            band = torch.zeros(batch, d, sum(self.band) + 1, dtype=y0.dtype, device=y0.device)
            return (f0, eta, band, torch.full((batch,), _JAC_REFRESH, dtype=torch.float64, device=y0.device))
        nan = torch.full((batch,), math.nan, dtype=torch.float64, device=y0.device)
        if self.jac is not None and not per_sample:
            # the user's Jacobian decides the layout (dense, or a PartitionedJacobian's parts): formed here at y0,
            # it serves the first step
            jac = self._jacobian(func, RowField(func, y0.shape, False), t0, y0.reshape(1, d), None)
            at_y = torch.full((1,), _JAC_AT_Y, dtype=torch.float64, device=y0.device)
            if isinstance(jac, PartitionedJacobian):
                blocks = jac.blocks
                starts = torch.tensor(jac.starts, dtype=torch.float64, device=y0.device)
                pivots = torch.zeros(blocks.shape[:2], dtype=torch.float64, device=y0.device)
                return (f0, eta, blocks, torch.zeros_like(blocks), pivots, nan, starts, at_y)
            return (f0, eta, jac, torch.zeros_like(jac), torch.zeros(1, d, dtype=torch.float64, device=y0.device),
                    nan, at_y)
        blocks = torch.zeros(batch, d, d, dtype=y0.dtype, device=y0.device)
        return (f0, eta, blocks, blocks.clone(), torch.zeros(batch, d, dtype=torch.float64, device=y0.device),
                nan, torch.full((batch,), _JAC_REFRESH, dtype=torch.float64, device=y0.device))

    # ------------------------------------------------------------------ the step

    def step(self, func, t0, h, y0, state):
        tab = self.tableau
        per_sample = isinstance(h, torch.Tensor)
        batch, d = _rows(y0, per_sample)
        field = RowField(func, y0.shape[1:] if per_sample else y0.shape, per_sample)
        device, dtype = y0.device, y0.dtype
        h64 = h.to(torch.float64) if per_sample else torch.full((1,), float(h), dtype=torch.float64, device=device)
        t64 = t0 if per_sample else float(t0)
        h_col = h64.to(dtype)[:, None]
        hg = (tab.gamma * h64).to(dtype)
        y0r = y0.reshape(batch, d)
        with torch.no_grad():
            scale = (self.atol + self.rtol * y0.abs()).reshape(batch, d)
        if scale.dtype != dtype:
            scale = scale.to(dtype)
        k_first = state[0].reshape(batch, d)
        eta = state[1].clamp_min(torch.finfo(torch.float64).eps).pow(0.8)  # Hairer's start of a step
        failed = torch.zeros(batch, dtype=torch.bool, device=device)
        code = torch.zeros(batch, dtype=torch.int64, device=device)
        residual = torch.zeros(batch, dtype=torch.float64, device=device)
        if self.linear_solver == "lu":
            jac, flag, linear, carried = self._factor(func, field, t64, y0r, h64, hg, state, failed, code)
            if isinstance(linear, _PartitionedLU):
                # the quadratures converge with the parts they integrate (each increment makes them consistent
                # with the last iterate of the parts): the Newton norm measures the parts only
                scale = torch.where(linear.in_parts, scale, torch.full_like(scale, math.inf))
        else:
            linear, carried = NewtonKrylov(field, **self.krylov), ()
            if self.band is not None:
                jac, flag, linear.preconditioner = self._band_preconditioner(func, field, t64, y0r, hg, state)
                linear.extra = torch.zeros(batch, dtype=torch.float64, device=device)
        rate = torch.zeros(batch, dtype=torch.float64, device=device)
        graph = torch.is_grad_enabled()
        ks, values = [k_first], [y0r]
        for i in range(1, tab.stages):
            base = y0r
            terms = self._lower[i]
            if terms:
                acc = ks[terms[0][0]] * terms[0][1]
                for j, a_ij in terms[1:]:
                    acc = acc + a_ij * ks[j]
                base = y0r + h_col * acc
            t_i = t0 + tab.c[i] * h64 if per_sample else t64 + tab.c[i] * float(h)
            with torch.no_grad():  # the Newton iterations off the graph: the stage gets its gradient by the IFT
                z0 = self._predict(i, ks, values, base, hg)
                newton = {"tol": self.newton_tol, "max_iters": self.max_iters, "max_rate": self.max_rate,
                          "to_roundoff": self.fixed_step}
                solution = solve_stage(field, t_i, base.detach(), hg, z0, linear, scale, eta, ~failed, **newton)
                if isinstance(linear, DenseLU) and bool(solution.failed.any()):
                    solution, linear, jac, carried, flag = self._refresh_at_stage(
                        func, field, t_i, base.detach(), hg, z0, solution, linear, scale, eta, failed, jac,
                        carried, flag, newton)
            new = solution.failed & ~failed
            code = torch.where(new, solution.code, code)
            residual = torch.where(new, solution.residual, residual)
            failed = failed | solution.failed
            eta, rate = solution.eta, torch.maximum(rate, solution.rate)
            z = solution.z
            if graph:
                z = self._differentiable_stage(field, t_i, base, hg, z, ~failed)
                # nothing the step reads requires grad (f's first implicit stage told): the others need no graph
                graph = z.requires_grad or base.requires_grad
            ks.append(z / hg[:, None])
            values.append(base + z)
        y1, k_last = values[-1], ks[-1]
        error = ks[self._error[0][0]] * self._error[0][1]
        for j, e_j in self._error[1:]:
            error = error + e_j * ks[j]
        error = h_col * error
        failure = None
        if bool(failed.any()):
            # rejected with a strong shrink: an infinite error; y1 and k stay finite (they are selected away)
            rows = failed[:, None]
            error = torch.where(rows, torch.full_like(error, math.inf), error)
            y1 = torch.where(rows, y0r, y1)
            k_last = torch.where(rows, k_first, k_last)
            failure = StepFailure(failed, code, residual)
        state1 = (k_last.view_as(y0), eta)
        retry = (state[0], eta)
        if self.linear_solver == "lu" or self.band is not None:
            refresh = torch.full_like(flag, _JAC_REFRESH)
            slow = rate > self.refresh_rate
            if isinstance(linear, NewtonKrylov):  # the band's lag cost more evaluations than a new band would
                slow = slow | (linear.extra > sum(self.band) + 2)
            flag1 = torch.where(slow, refresh, torch.full_like(flag, _JAC_OLD))
            # after a Newton failure with an old J: form one at y0 for the retry; with a fresh one: only shrink
            flag_retry = torch.where(failed & (flag != _JAC_AT_Y), refresh, flag)
            state1 = (*state1, jac, *carried, flag1)
            retry = (*retry, jac, *carried, flag_retry)
        return Step(t0, h, y0, y1.view_as(y0), state, state1, error.view_as(y0), dense=(ks, values), func=func,
                    state_retry=retry, failure=failure, rows=field.evaluated)

    def _predict(self, i: int, ks: list[torch.Tensor], values: list[torch.Tensor], base: torch.Tensor,
                 hg: torch.Tensor) -> torch.Tensor:
        """The Newton start ``z⁰ = Y⁰_i - a_i`` of stage ``i`` (see :func:`stage_predictors`)."""
        terms = self._predictor[i]
        if not terms:
            return hg[:, None] * ks[-1]
        guess = values[terms[0][0]] * terms[0][1]
        for j, w in terms[1:]:
            guess = guess + w * values[j]
        return guess - base

    def _refresh_at_stage(self, func, field: RowField, t_i, base: torch.Tensor, hg: torch.Tensor,
                          z0: torch.Tensor, solution: StageSolution, linear: DenseLU, scale: torch.Tensor,
                          eta: torch.Tensor, failed: torch.Tensor, jac, carried, flag, newton: dict):
        """Retry a stage whose simplified Newton iteration failed, with ``J`` formed at the stage itself.

        The step's ``J`` was formed at some earlier ``y`` (this step's ``y0`` at best). A stage far from it — a
        large step on a nonlinear problem, or kvaerno5's stage 3 at ``c = 1.23`` — sees ``J`` change along the
        step, and the iteration contracts at rate ``‖(I - hγJ)⁻¹ hγ (J(Y_i) - J)‖``: 0.46 to 0.78 on
        ``neurode.testing.ManufacturedProblem`` at ``h ≈ 1``, too slow to converge in ``max_iters``. As ARKODE
        does for its DIRK stages (its linear-solver setup evaluates ``J`` at the stage's current guess;
        Hindmarsh et al., ACM TOMS 31 (2005), SUNDIALS), the failing rows form ``J`` at their last iterate (at the
        predictor where the iteration diverged), refactor ``I - hγ J`` and iterate again from there, once. The
        new ``J`` and LU replace those rows' carried ones (any ``J`` serves simplified Newton; the flag marks it
        fresh, so a second failure shrinks the step instead of forming yet another). Only a stage that fails
        again rejects the step: a whole step's evaluations are not thrown away for want of one ``J``.
        A row whose iterate is not finite, or whose matrix is singular, is left to the step's rejection.
        """
        retry = solution.failed & ~failed & ((solution.code == NEWTON_SLOW) | (solution.code == NEWTON_DIVERGED))
        rows = torch.nonzero(retry).flatten()  # one host read: which rows, and whether any
        if rows.numel() == 0:
            return solution, linear, jac, carried, flag
        start = torch.where((solution.code == NEWTON_SLOW)[:, None], solution.z, z0)
        blocks = self._jacobian(func, field, t_i, base + start, rows if field.per_sample else None)
        eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
        factors, piv, info = torch.linalg.lu_factor_ex(eye - hg[rows][:, None, None] * blocks)
        record(func, factorisations=1)
        ok = info == 0
        rows, blocks, factors, piv = rows[ok], blocks[ok], factors[ok], piv[ok]
        if rows.numel() == 0:
            return solution, linear, jac, carried, flag
        lu, pivots, hg_lu = carried
        jac = jac.index_copy(0, rows, blocks)
        lu, pivots = lu.index_copy(0, rows, factors), pivots.index_copy(0, rows, piv.to(torch.float64))
        flag = flag.index_copy(0, rows, torch.full((rows.numel(),), _JAC_AT_Y, dtype=flag.dtype, device=flag.device))
        linear = DenseLU(lu, pivots.to(torch.int32))
        live = torch.zeros_like(failed).index_fill_(0, rows, True)
        again = solve_stage(field, t_i, base, hg, start, linear, scale, eta, live, **newton)
        merged = {name: torch.where(live if value.ndim == 1 else live[:, None], getattr(again, name), value)
                  for name, value in vars(solution).items()}
        merged["iterations"] = solution.iterations + again.iterations
        solution = StageSolution(**merged)
        return solution, linear, jac, (lu, pivots, hg_lu), flag

    def _differentiable_stage(self, field: RowField, t_i, base: torch.Tensor, hg: torch.Tensor, root: torch.Tensor,
                              ok: torch.Tensor) -> torch.Tensor:
        """The converged stage increment ``root`` of ``z = hγ f(t_i, base + z)``, differentiable by the implicit
        function theorem (``implicit_gradient.py``) with respect to ``base`` (so the earlier stages and ``y0``)
        and everything ``f`` reads, on the rows ``ok``; a row whose Newton iteration failed stays a constant (its
        step is rejected, and its last iterate is no root: its ``∂G/∂z`` may be singular or non-finite).

        ``∂G/∂z = I - hγ ∂f/∂y(t_i, base + z)`` is formed by autograd at the root when a backward pass runs (the
        exact matrix, not the Newton iteration's ``J`` at ``y0``), or applied by GMRES on vector–Jacobian
        products with ``linear_solver="krylov"``; per sample, one ``(d, d)`` system per row.
        """
        some, index = _rows_where(ok)
        if not some:
            return root
        pick = (lambda x: x) if index is None else (lambda x: x[index])  # noqa: E731
        base_rows, hg_rows = pick(base), pick(hg)[:, None]
        func = field.func
        args = getattr(func, "args", None)  # the batch loop's args of this step's active set, for the backward pass

        def residual(base_: torch.Tensor, hg_: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            current = getattr(func, "args", None)
            if current is not args:
                func.args = args
            try:
                return z - hg_ * field(t_i, base_ + z, index)
            finally:
                if current is not args:
                    func.args = current

        base_const, hg_const = base_rows.detach(), hg_rows.detach()
        # ∂G/∂z from the residual with base and hγ detached: without walking the solve's history (quadratic)
        z = implicit_root(lambda z_: residual(base_rows, hg_rows, z_), pick(root),
                          local_residual=lambda z_: residual(base_const, hg_const, z_), per_sample=field.per_sample,
                          linear_solver="gmres" if self.linear_solver == "krylov" else "lu")
        return z if index is None else root.index_copy(0, index, z)

    def _factor(self, func, field, t64, y0r, h64, hg, state, failed, code):
        """The Jacobian (formed again where the flag asks) and the LU of ``I - hγ J`` (refactored where ``hγ``
        changed); rows whose matrix is singular are marked failed in ``failed``/``code`` (in place)."""
        jac, lu, pivots, hg_lu, *partition, flag = (s.detach() for s in state[2:])
        stale = flag == _JAC_REFRESH
        some, rows = _rows_where(stale)
        if some:
            blocks = self._jacobian(func, field, t64, y0r, rows)
            if isinstance(blocks, PartitionedJacobian) != bool(partition) or (
                    partition and tuple(blocks.starts) != tuple(int(x) for x in partition[0].tolist())):
                raise InvalidInputError("jac(t, y) must keep one layout through a solve: it returned "
                                        f"{type(blocks).__name__} after a Jacobian of another layout")
            if partition:
                blocks = blocks.blocks
            jac = blocks if rows is None else jac.index_copy(0, rows, blocks)
            flag = torch.where(stale, torch.full_like(flag, _JAC_AT_Y), flag)
        refactor = stale | (hg_lu != h64 * self.tableau.gamma)
        if partition:
            return self._factor_parts(func, jac, lu, pivots, hg_lu, partition[0], flag, refactor, y0r.shape[1],
                                      h64, failed, code)
        some, rows = _rows_where(refactor)
        if some:
            pick = (lambda x: x) if rows is None else (lambda x: x[rows])  # noqa: E731
            eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
            factors, piv, info = torch.linalg.lu_factor_ex(eye - pick(hg).detach()[:, None, None] * pick(jac))
            record(func, factorisations=1)
            piv = piv.to(torch.float64)  # every carried tensor is floating point (the checkpointed replay's leaves)
            hg_new = (pick(h64) * self.tableau.gamma).to(torch.float64)
            if rows is None:
                lu, pivots, hg_lu = factors, piv, hg_new
            else:
                lu, pivots = lu.index_copy(0, rows, factors), pivots.index_copy(0, rows, piv)
                hg_lu = hg_lu.index_copy(0, rows, hg_new)
            singular = torch.zeros_like(failed)
            singular[rows if rows is not None else slice(None)] = info != 0
            failed |= singular
            code.masked_fill_(singular, NEWTON_SINGULAR)
            hg_lu = torch.where(singular, torch.full_like(hg_lu, math.nan), hg_lu)
        linear = DenseLU(lu, pivots.to(torch.int32))
        return jac, flag, linear, (lu, pivots, hg_lu)

    def _factor_parts(self, func, jac, lu, pivots, hg_lu, starts, flag, refactor, size, h64, failed, code):
        """:meth:`_factor` for a :class:`PartitionedJacobian` (shared loop, one row): the LU of ``I - hγ J_p``
        part by part (``PartitionedJacobian.factor`` with ``A = [[γ]]``), the quadratures' identity left implicit.
        The dropped off-diagonal blocks make the iteration a simplified Newton one: it converges to the same
        root (for a block lower-triangular ``J`` the missing coupling is nilpotent), only in more increments."""
        parts = PartitionedJacobian(size, tuple(int(x) for x in starts.tolist()), jac)
        if bool(refactor.any()):
            a = torch.full((1, 1), self.tableau.gamma, dtype=jac.dtype, device=jac.device)
            factors = parts.factor(float(h64[0]), a)
            record(func, factorisations=1)
            lu, pivots = factors.lu, factors.pivots.to(torch.float64)
            hg_lu = (h64 * self.tableau.gamma).to(torch.float64)
            if factors.singular:
                failed.fill_(True)
                code.fill_(NEWTON_SINGULAR)
                hg_lu = torch.full_like(hg_lu, math.nan)
        linear = _PartitionedLU(PartitionedFactors(parts, lu, pivots.to(torch.int32), False))
        return jac, flag, linear, (lu, pivots, hg_lu, starts)

    def _band_preconditioner(self, func, field: RowField, t64, y0r: torch.Tensor, hg: torch.Tensor, state):
        """The carried band of ``J`` (formed again by grouped differences where the flag asks) and the factors of
        ``I - hγ J_band`` for this step: ``(band, flag, BandFactors)``."""
        band, flag = (s.detach() for s in state[2:4])
        stale = flag == _JAC_REFRESH
        some, rows = _rows_where(stale)
        if some:
            y_rows = y0r.detach() if rows is None else y0r.detach()[rows]
            record(func, jacobians=1)
            with unwatched(func), torch.no_grad():
                # f at y0 itself, not the carried k_1 (the previous step's last stage to the Newton tolerance,
                # an error far above the differences' √eps)
                new = banded_jacobian(lambda z: field(t64, z, rows), y_rows, field(t64, y_rows, rows), *self.band)
            band = new if rows is None else band.index_copy(0, rows, new)
            flag = torch.where(stale, torch.full_like(flag, _JAC_AT_Y), flag)
        factors = BandFactors.factor(band, *self.band, hg.detach())
        record(func, factorisations=1)
        return band, flag, factors

    def _jacobian(self, func, field: RowField, t64, y0r: torch.Tensor, rows):
        """``∂f/∂y`` at ``(t0, y0)`` for the rows ``rows`` (all for ``None``): ``(m, d, d)``."""
        y_rows = y0r if rows is None else y0r[rows]
        record(func, jacobians=1)
        with unwatched(func):
            if self.jac is not None:
                if field.per_sample:
                    t_rows = (t64 if rows is None else t64[rows]).to(y0r.dtype)
                    return user_jacobian(self.jac, t_rows, y_rows.reshape(-1, *field.shape), per_sample=True)
                time = func.time(t64) if hasattr(func, "time") else torch.tensor(t64, dtype=y0r.dtype)
                value = self.jac(time, y_rows.reshape(field.shape))
                if isinstance(value, PartitionedJacobian):  # e.g. backsolve's augmented system: its parts
                    if value.size != y_rows.numel():
                        raise InvalidInputError(f"jac returned a PartitionedJacobian of size {value.size} for a "
                                                f"state of {y_rows.numel()} components")
                    return PartitionedJacobian(value.size, value.starts, value.blocks.detach().to(y0r.dtype))
                return user_jacobian(lambda *_: value, time, y_rows.reshape(field.shape), per_sample=False)[None]
            return block_jacobian(lambda z: field(t64, z, rows), y_rows.detach())

    # ------------------------------------------------------------------ dense output

    def interpolate(self, step: Step, theta):
        if isinstance(theta, float) and theta in (0.0, 1.0):
            return step.y0 if theta == 0.0 else step.y1
        ks = step.dense[0]
        shape = step.y0.shape
        if isinstance(theta, torch.Tensor):
            theta = theta.to(step.y0.dtype)
        if self.tableau.dense is not None:
            return self._continuous_extension(step.y0, [k.view(shape) for k in ks], step.h, theta)
        return hermite(step.y0, step.y1, ks[0].view(shape), ks[-1].view(shape), step.h, theta)

    def interpolate_per_sample(self, step: Step, rows: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        y0 = step.y0[rows]
        shape = (-1, *([1] * (y0.ndim - 1)))
        h = step.h[rows].to(y0.dtype).view(shape)
        ks = step.dense[0]
        theta = theta.to(y0.dtype).view(shape)
        if self.tableau.dense is not None:
            return self._continuous_extension(y0, [k[rows].view_as(y0) for k in ks], h, theta)
        f0, f1 = ks[0][rows].view_as(y0), ks[-1][rows].view_as(y0)
        return hermite(y0, step.y1[rows], f0, f1, h, theta)

    def _continuous_extension(self, y0: torch.Tensor, ks: list[torch.Tensor], h, theta) -> torch.Tensor:
        """``y0 + h Σ_j b_j(θ) k_j`` with the tableau's polynomial weights (Horner in ``θ`` per stage)."""
        acc = None
        for row, k in zip(self.tableau.dense, ks):
            if not any(row):
                continue
            weight = row[-1]
            for coefficient in reversed(row[:-1]):
                weight = weight * theta + coefficient
            term = (weight * theta) * k
            acc = term if acc is None else acc + term
        return y0 + h * acc

    @property
    def stage_weights(self) -> tuple[float, ...]:
        return self.tableau.b

    def stage_points_per_sample(self, step: Step, stages=None) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """``(t_i, Y_i, b_i)`` of a per-sample step (the stage values are kept with the step)."""
        values = step.dense[1]
        tab = self.tableau
        return [(torch.add(step.t0, step.h, alpha=tab.c[i]), values[i].view_as(step.y0), tab.b[i])
                for i in (range(tab.stages) if stages is None else stages)]


def stage_predictors(tableau: ESDIRKTableau,
                     max_degree: int = PREDICTOR_DEGREE) -> tuple[tuple[tuple[int, float], ...], ...]:
    """The Newton start of every stage, as Lagrange weights on the stage values already known: ``((j, ℓ_ij), ...)``.

    Stage ``i`` starts from ``Y⁰_i = Σ_j ℓ_ij Y_j``, the polynomial through the stage values ``(c_j, Y_j)``
    (``Y_1 = y0``) evaluated at ``c_i`` (a stage-value predictor in the sense of Kennedy & Carpenter,
    NASA/TM-2016-219173, §5; Hairer & Wanner II, §IV.8, start Newton from an interpolant of known values).
    It interpolates values, not derivatives: in a stiff problem the stage values lie near the slow manifold
    while the derivatives ``k_j = f(Y_j)`` carry ``λ`` times their small distance from it, which an
    extrapolation of derivatives would amplify. At most ``max_degree + 1`` distinct nodes are used, those
    nearest ``c_i``. Stage 2 has one value (``y0``), too few: it keeps ``z⁰ = hγ k_1`` (``Y⁰ = y0 + 2γh k_1``,
    explicit Euler), marked by an empty tuple.
    """
    c = tableau.c
    predictors: list[tuple[tuple[int, float], ...]] = [(), ()]
    for i in range(2, tableau.stages):
        nodes: list[int] = []
        for j in sorted(range(i), key=lambda j: (abs(c[j] - c[i]), -j)):
            if len(nodes) <= max_degree and all(abs(c[j] - c[m]) > 1e-12 for m in nodes):
                nodes.append(j)
        weights = []
        for j in nodes:
            w = 1.0
            for m in nodes:
                if m != j:
                    w *= (c[i] - c[m]) / (c[j] - c[m])
            weights.append((j, w))
        predictors.append(tuple(weights))
    return tuple(predictors)


def _radau5_newton_tol(rtol) -> float:
    """RADAU5's default Newton tolerance ``fnewt = max(10 eps / rtol, min(0.03, sqrt(rtol)))`` (Hairer & Wanner's
    code; ``rtol`` its smallest component)."""
    smallest = float(torch.as_tensor(rtol, dtype=torch.float64).min())
    if not smallest > 0:
        return 0.03
    return max(10 * torch.finfo(torch.float64).eps / smallest, min(0.03, math.sqrt(smallest)))

class _PartitionedLU:
    """``(I - hγ J)⁻¹`` part by part for a :class:`PartitionedJacobian` (the one row of the shared loop)."""

    def __init__(self, factors: PartitionedFactors) -> None:
        self.factors = factors
        jac = factors.jacobian
        m = jac.blocks.shape[1]
        self.in_parts = torch.zeros(1, jac.size, dtype=torch.bool, device=jac.blocks.device)
        for start in jac.starts:
            self.in_parts[0, start : start + m] = True

    def solve(self, rows, rhs: torch.Tensor, **_) -> torch.Tensor:
        return self.factors.solve(rhs)  # rhs: (1, size), the stage matrix's one "stage" row


def _rows(y0: torch.Tensor, per_sample: bool) -> tuple[int, int]:
    """``(B, d)``: the rows the state is viewed as (samples, or one row of the whole state)."""
    if per_sample:
        return y0.shape[0], (y0[0].numel() if y0.shape[0] else 1)
    return 1, y0.numel()
