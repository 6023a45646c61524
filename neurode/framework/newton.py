"""The stage solve of diagonally implicit methods: simplified Newton, row by row, with a reused Jacobian.

A stage of a diagonally implicit Runge–Kutta method (SDIRK, ESDIRK) solves

    z = hγ f(t_i, a_i + z)

for the increment ``z`` over the explicit part ``a_i = y0 + h Σ_{j<i} a_ij k_j``
(the stage value is ``Y_i = a_i + z`` and its derivative ``k_i = z / (hγ)``).
Simplified Newton (Hairer & Wanner, "Solving ODEs II", §IV.8) iterates

    (I - hγ J) Δ_k = -(z_k - hγ f(t_i, a_i + z_k)),   z_{k+1} = z_k + Δ_k

with one matrix ``I - hγ J`` for every stage of a step (an SDIRK's stages
share ``γ``) and ``J = ∂f/∂y`` kept across steps while the iteration
converges. Its convergence rate ``θ_k = ‖Δ_k‖ / ‖Δ_{k-1}‖`` drives every
decision (ibid., eq. 8.10–8.13): the iteration has converged when
``η_k ‖Δ_k‖ ≤ κ`` with ``η_k = θ_k / (1 - θ_k)`` (``η`` of the previous solve,
``max(η, eps)^0.8``, for the first increment); it is abandoned as soon as
``θ_k`` exceeds ``max_rate`` or ``θ_k^(k_max - k) / (1 - θ_k) ‖Δ_k‖ > κ``
predicts that ``max_iters`` will not be enough. The norm is the loop's RMS
norm of ``Δ / (atol + rtol |y0|)``, so ``κ`` (``newton_tol``) is a fraction of
the local error tolerance.

Everything works on **rows**: the state is viewed as ``(B, d)`` — one row of
``n`` components in the shared loop (where the Jacobian is dense over the
whole state: its components may be coupled in any way), one row per sample
in the batch-parallel loop (each sample its own ``(d, d)`` block, its own
``hγ``, its own iteration count). A row that has converged stops iterating:
``f`` is evaluated only on the rows still iterating, as the loop compacts
finished samples; the rows evaluated are counted.

Linear solvers (:class:`DenseLU`, :class:`NewtonKrylov`): batched dense LU
of ``I - hγ J`` (``torch.linalg.lu_factor_ex`` on ``(B, d, d)``; the default),
or Jacobian-free Newton–Krylov: GMRES (``krylov.batched_gmres``) on
``v ↦ v - hγ J v`` with ``J v`` a forward difference at the current iterate
(Knoll & Keyes, J. Comput. Phys. 193 (2004) 357, eq. 11), for states too
large for a dense Jacobian. The Krylov iterate is then a full (inexact)
Newton method; no dense Jacobian is stored or factored. It may be
preconditioned (on the right, ``krylov.py``) by a band: ``P = I - hγ J_band``
with ``J_band`` the ``lband``/``uband`` diagonals of ``J`` by grouped forward
differences and ``P`` factored by block cyclic reduction (``banded.py``),
SUNDIALS' CVBANDPRE (Hindmarsh et al., ACM TOMS 31 (2005) 363): GMRES then
solves ``(I - hγ J) P⁻¹``, close to the identity, in a few products where the
unpreconditioned operator — ``hγ`` times a stiff ``J`` — needs dozens (52
per Newton increment against 1.9 on the N = 500 Brusselator, kvaerno4).

Failures are not exceptions: a row whose iteration diverges, stalls or
meets a non-finite value is reported in :class:`StageSolution` (``code``,
``residual``) and its ``z`` keeps its last finite iterate; the method makes
that row's error infinite, so the loop rejects the step and shrinks it.

Gradients (``direct``, ``checkpoint``): the ESDIRK step runs this solve under
``torch.no_grad()`` and attaches each converged stage by the implicit function
theorem (``implicit_gradient.implicit_root``; ``esdirk.ESDIRK._differentiable_stage``),
so neither the iterates nor GMRES are differentiated. Called with a graph, the
Krylov solver refuses (see :func:`solve_stage`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neurode.framework.errors import InvalidInputError
from neurode.framework.krylov import batched_gmres
from neurode.framework.solver import NEWTON_DIVERGED, NEWTON_NON_FINITE, NEWTON_SLOW
from neurode.framework.vector_field import slice_args


class RowField:
    """``f`` on rows of the ``(B, d)`` view of the state: all rows, or the subset ``rows`` (counted in ``rows``).

    ``per_sample``: ``t`` is a ``(B,)`` tensor of per-sample times and row ``b`` is sample ``b`` (its ``args``,
    for a loop's vector field with ``args``, are sliced with it); otherwise there is one row, the whole state,
    and ``t`` is a float.
    """

    def __init__(self, func, shape: tuple[int, ...], per_sample: bool) -> None:
        self.func, self.shape, self.per_sample = func, tuple(shape), per_sample
        self.evaluated = 0

    def __call__(self, t, z: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        m = z.shape[0]
        self.evaluated += m
        if not self.per_sample:
            return self.func(t, z.reshape(self.shape)).reshape(1, -1)
        y = z.reshape(m, *self.shape)
        args = getattr(self.func, "args", None)
        if rows is None:
            return self.func(t, y).reshape(m, -1)
        if args is None:
            return self.func(t[rows], y).reshape(m, -1)
        self.func.args = slice_args(args, rows)  # the loop's args follow its active set; a subset of it here
        try:
            return self.func(t[rows], y).reshape(m, -1)
        finally:
            self.func.args = args


def rms_rows(x: torch.Tensor) -> torch.Tensor:
    """The RMS norm of every row of ``x`` (``(m, d)``), in float64."""
    return torch.linalg.vector_norm(x.detach().double(), dim=1) / math.sqrt(max(x.shape[1], 1))


class DenseLU:
    """``(I - hγ J)⁻¹`` by batched dense LU: factors ``(B, d, d)``, solved row by row (``lu_solve``)."""

    def __init__(self, lu: torch.Tensor, pivots: torch.Tensor) -> None:
        self.lu, self.pivots = lu, pivots

    def solve(self, rows, rhs: torch.Tensor, **_) -> torch.Tensor:
        lu, pivots = (self.lu, self.pivots) if rows is None else (self.lu[rows], self.pivots[rows])
        return torch.linalg.lu_solve(lu, pivots, rhs.unsqueeze(-1)).squeeze(-1)


class NewtonKrylov:
    """``(I - hγ J)⁻¹ r`` by GMRES on forward-difference Jacobian–vector products at the current iterate.

    The system is solved in the variables ``Δ / scale`` (``scale = atol + rtol |y0|``), the norm the
    convergence test uses, so that components of very different magnitudes (chemical kinetics) do not make
    GMRES's 2-norm blind to the small ones.

    ``preconditioner``: ``(I - hγ J_band)`` factored (``banded.BandFactors``, one band per row), applied on
    the right; in the scaled variables that is ``w ↦ P⁻¹(w · scale) / scale``. The band may be older than the
    iterate (formed at some earlier step's ``y``): GMRES still solves the system with the exact product, a
    lagged ``P`` only costs it iterations: :attr:`extra` counts them per row, the GMRES iterations beyond one
    per solve (a batched GMRES runs until its last row converges; every row in it is charged its count), for
    the caller to decide when a new band costs less than the lag.
    """

    def __init__(self, field: RowField, *, rtol: float = 1e-3, restart: int = 30, max_iters: int | None = None,
                 preconditioner=None):
        self.field, self.rtol, self.restart, self.max_iters = field, rtol, restart, max_iters
        self.preconditioner = preconditioner
        self.iterations = 0
        self.extra: torch.Tensor | None = None  # (B,) float64 when the caller wants it

    def solve(self, rows, rhs: torch.Tensor, *, t, point: torch.Tensor, f_point: torch.Tensor,
              hg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        real = point.real.dtype if point.is_complex() else point.dtype
        root_eps = math.sqrt(torch.finfo(real).eps)
        point, f_point = point.detach(), f_point.detach()
        base_norm = 1.0 + torch.linalg.vector_norm(point, dim=1, keepdim=True)

        def matvec(u: torch.Tensor) -> torch.Tensor:
            v = u * scale
            norm_v = torch.linalg.vector_norm(v, dim=1, keepdim=True)
            eps = root_eps * base_norm / torch.where(norm_v > 0, norm_v, torch.ones_like(norm_v))
            jv = (self.field(t, point + eps * v, rows) - f_point) / eps  # Knoll & Keyes 2004, eq. 11, per row
            return (v - hg[:, None] * jv) / scale

        precondition = None
        if self.preconditioner is not None:
            factors = self.preconditioner

            def precondition(w: torch.Tensor) -> torch.Tensor:
                return factors.solve(w * scale, rows) / scale

        with torch.no_grad():
            u, info = batched_gmres(matvec, rhs.detach() / scale, rtol=self.rtol, restart=self.restart,
                                    max_iters=self.max_iters, preconditioner=precondition)
        self.iterations += info.iterations
        if self.extra is not None and info.iterations > 1:
            if rows is None:
                self.extra += info.iterations - 1
            else:
                self.extra.index_add_(0, rows, torch.full(rows.shape, info.iterations - 1.0, dtype=self.extra.dtype,
                                                           device=self.extra.device))
        return u * scale


@dataclass
class StageSolution:
    """What :func:`solve_stage` found, row by row.

    Attributes:
        z: ``(B, d)`` the increment (the last finite iterate where the row failed).
        f: ``(B, d)`` ``f`` at the last evaluated iterate (not at ``z`` itself: at the point before the last
            increment), for diagnostics.
        failed: ``(B,)`` bool; ``code``: ``(B,)`` int64 ``NEWTON_*`` (0 where it converged).
        residual: ``(B,)`` float64, the last scaled increment norm.
        eta: ``(B,)`` float64, ``θ / (1 - θ)`` of the last rate measured (for the next solve's first test).
        rate: ``(B,)`` float64, the largest convergence rate ``θ`` seen (0 when one increment sufficed).
        iterations: ``(B,)`` int64, the increments each row took.
    """

    z: torch.Tensor
    failed: torch.Tensor
    code: torch.Tensor
    residual: torch.Tensor
    eta: torch.Tensor
    rate: torch.Tensor
    iterations: torch.Tensor


def solve_stage(field: RowField, t, base: torch.Tensor, hg: torch.Tensor, z0: torch.Tensor, linear,
                scale: torch.Tensor, eta: torch.Tensor, live: torch.Tensor, *, tol: float, max_iters: int,
                max_rate: float = 0.9, to_roundoff: bool = False) -> StageSolution:
    """Solve ``z = hγ f(t, base + z)`` row by row by simplified Newton (see the module docstring).

    Args:
        field: ``f`` on rows; ``t`` its time (float, or ``(B,)`` per sample).
        base: ``(B, d)`` the explicit part ``a_i`` of the stage; ``hg``: ``(B,)`` ``hγ`` in the state's dtype.
        z0: ``(B, d)`` the predictor.
        linear: :class:`DenseLU` or :class:`NewtonKrylov`, the solver of ``(I - hγ J) Δ = r``.
        scale: ``(B, d)`` ``atol + rtol |y0|``, the norm's weights.
        eta: ``(B,)`` float64, ``η`` for the first increment's test.
        live: ``(B,)`` bool, the rows to solve (a row that already failed in an earlier stage is left alone).
        tol: ``κ``; ``max_iters``: increments per row at most; ``max_rate``: the largest acceptable ``θ``.
        to_roundoff: iterate past ``κ`` until the increments stop shrinking (``θ >= max_rate``), reach round-off
            or ``max_iters`` (a row within ``κ`` then counts as converged): the root itself, not an iterate
            within a tolerance, for fixed-step solves (see ``ESDIRK``'s ``fixed_step``).

    This is the function an implicit-function-theorem gradient replaces: its result ``z`` depends on
    ``base``, ``hg`` and what ``f`` reads only through the fixed point ``z = hγ f(t, base + z)``.
    """
    batch = base.shape[0]
    device = base.device
    real = base.real.dtype if base.is_complex() else base.dtype
    roundoff = 10 * torch.finfo(real).eps
    z = z0
    code = torch.zeros(batch, dtype=torch.int64, device=device)
    residual = torch.zeros(batch, dtype=torch.float64, device=device)
    rate = torch.zeros(batch, dtype=torch.float64, device=device)
    iterations = torch.zeros(batch, dtype=torch.int64, device=device)
    eta = eta.clone()
    previous = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    settled = torch.zeros(batch, dtype=torch.bool, device=device)  # within κ at the last increment (to_roundoff)
    rows = torch.nonzero(live).flatten()
    krylov = isinstance(linear, NewtonKrylov)
    # to round-off: up to 2 max_iters more increments for rows already within κ (simplified Newton converges
    # linearly: from κ to round-off is as far again as from the predictor to κ)
    total = 3 * max_iters if to_roundoff else max_iters
    for k in range(total):
        if rows.numel() == 0:
            break
        index = None if rows.numel() == batch else rows
        take = (lambda x: x) if index is None else (lambda x: x[index])  # noqa: E731
        z_rows, base_rows, hg_rows = take(z), take(base), take(hg)
        point = base_rows + z_rows
        f_rows = field(t, point, index)
        if krylov and f_rows.requires_grad:
            raise InvalidInputError(
                "linear_solver='krylov' cannot carry gradients through its stage solve (GMRES is not "
                "differentiated); use linear_solver='lu' for direct/checkpoint gradients, or solve without "
                "gradients (torch.no_grad(), or the backsolve adjoint)")
        rhs = hg_rows[:, None] * f_rows - z_rows  # -(z - hγ f)
        if krylov:
            delta = linear.solve(index, rhs, t=t if not field.per_sample or index is None else t, point=point,
                                 f_point=f_rows, hg=hg_rows, scale=take(scale))
        else:
            delta = linear.solve(index, rhs)
        norm = rms_rows(delta / take(scale))
        finite = torch.isfinite(norm)
        relative = delta.detach().abs().amax(dim=1).double() / (1.0 + point.detach().abs().amax(dim=1).double())
        theta = norm / take(previous)
        rate_rows = torch.where(torch.isfinite(theta), theta, torch.zeros_like(theta))
        eta_rows = torch.where(torch.isfinite(theta) & (theta < 1), theta / (1 - theta), take(eta))
        left = max_iters - 1 - k
        if to_roundoff:
            # past the tolerance, the rate of increments that are round-off says nothing about J or the next solve
            settled_rows = take(settled)
            rate_rows = torch.where(settled_rows, torch.zeros_like(rate_rows), rate_rows)
            eta_rows = torch.where(settled_rows, take(eta), eta_rows)
            within = finite & (eta_rows * norm <= tol)
            # on to round-off: stop when the increments no longer shrink (or the budget ends) once within tol
            last = k == total - 1
            converged = finite & ((norm == 0) | (relative <= roundoff) | (within & ((theta >= max_rate) | last)))
        else:
            within = converged = finite & ((eta_rows * norm <= tol) | (norm == 0) | (relative <= roundoff))
        # Hairer & Wanner II, eq. 8.13: the rate predicts the increment after max_iters; too slow -> stop now
        # (unless it would reach round-off by then, the other way to converge)
        factor = theta.pow(left) / (1 - theta)
        slow = (~within) & finite & torch.isfinite(theta) & (theta < 1) & (factor * norm > tol) & (
            factor * relative > roundoff)
        diverged = (~within) & finite & torch.isfinite(theta) & (theta >= max_rate)
        out_of_budget = (~within) & finite & (left == 0)
        why = torch.where(~finite, NEWTON_NON_FINITE, torch.where(diverged, NEWTON_DIVERGED, 0))
        why = torch.where((why == 0) & (slow | out_of_budget), NEWTON_SLOW, why)
        # a non-finite increment is not applied: the row keeps its last finite iterate
        z_new = torch.where(finite[:, None], z_rows + delta, z_rows) if not bool(finite.all()) else z_rows + delta
        if to_roundoff:
            settled = within if index is None else settled.index_copy(0, index, within)
        if index is None:
            z = z_new
            code, residual, iterations = why, norm, iterations + 1
            rate, eta, previous = torch.maximum(rate, rate_rows), eta_rows, norm
        else:
            z = z.index_copy(0, index, z_new)
            code = code.index_copy(0, index, why)
            residual = residual.index_copy(0, index, norm)
            iterations = iterations.index_add(0, index, torch.ones_like(index))
            rate = rate.index_copy(0, index, torch.maximum(rate[index], rate_rows))
            eta = eta.index_copy(0, index, eta_rows)
            previous = previous.index_copy(0, index, norm)
        going = ~converged & (why == 0)
        rows = rows[going]  # one host synchronisation per iteration: who still iterates
    failed = code != 0
    return StageSolution(z, failed, code, residual, eta, rate, iterations)
