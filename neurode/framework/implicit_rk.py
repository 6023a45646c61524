"""Fixed-step implicit Runge–Kutta methods: any full Butcher tableau, stages by simplified Newton.

For a tableau ``(c, A, b)`` with a full (or lower-triangular, DIRK) matrix
``A``, the stage derivatives ``K`` of a step from ``(t0, y0)`` of size ``h``
solve

    K_i = f(t0 + c_i h, y0 + h Σ_j a_ij K_j),   i = 1..s

and ``y1 = y0 + h Σ_i b_i K_i`` (Hairer & Wanner, "Solving ODEs II", §IV.8).
The system is solved by simplified Newton (ibid., §IV.8, "simplified Newton
iterations"): the iteration matrix ``I - h (A ⊗ J)`` with ``J = ∂f/∂y`` at
``(t0, y0)`` (autograd, one Jacobian per step) is LU-factored once and reused
by every iteration, starting from ``K_i = f(t0, y0)``. The iteration stops
when the scaled increment ``h ΔK / (atol + rtol |y0|)`` is below ``newton_tol``
(RMS norm) or stalls at round-off; if it has not converged after
``max_iters`` iterations, the step raises :class:`SolverError` naming ``t``,
``h`` and the last increment, instead of returning an unconverged state.

This is the first part of the stiff-solver work (issue 15, item 1): the
methods torchdiffeq offers, under its names and its ``max_iters`` option.
Still to come: adaptive stiff methods with error estimates, Jacobian reuse
across steps, per-sample block-diagonal Jacobians (``J`` is dense over the
whole state here, as torchdiffeq's), Newton–Krylov, and gradients by the
implicit function theorem. Gradients here flow through the Newton
iterations (``direct``/``checkpoint``), whose derivative converges with the
iterates: the iteration is continued until the increment is at round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neurode.framework.errors import InvalidInputError, SolverError
from neurode.framework.explicit_rk import grid_interpolate
from neurode.framework.jacobian import dense_jacobian, record, unwatched
from neurode.framework.solver import PERTURB_NEXT, PERTURB_NONE, PERTURB_PREV, AbstractSolver, Step

_INTERPS = ("linear", "cubic")


@dataclass(frozen=True)
class ImplicitTableau:
    """The Butcher tableau of an implicit Runge–Kutta method: nodes ``c``, full matrix ``a``, weights ``b``."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    citation: str = ""

    def __post_init__(self) -> None:
        s = len(self.c)
        if s == 0 or len(self.b) != s or len(self.a) != s or any(len(row) != s for row in self.a):
            raise ValueError(f"tableau {self.name!r}: c, b and every row of a must have {s} entries (s x s matrix)")
        if not math.isclose(sum(self.b), 1.0, abs_tol=1e-12):
            raise ValueError(f"tableau {self.name!r}: the weights b sum to {sum(self.b)!r}, expected 1")
        for i, (row, c_i) in enumerate(zip(self.a, self.c)):
            if not math.isclose(sum(row), c_i, abs_tol=1e-12):
                raise ValueError(f"tableau {self.name!r}: row {i} of a sums to {sum(row)!r}, expected c[{i}] = {c_i!r}")

    @property
    def stages(self) -> int:
        return len(self.c)


class ImplicitRungeKutta(AbstractSolver):
    """A fixed-step implicit Runge–Kutta method given by its tableau (see the module docstring).

    Options:
        max_iters: Newton iterations per step before the step fails (torchdiffeq's
            option, default 100).
        newton_tol: convergence threshold of the scaled increment (default 1e-3,
            relative to the solve's ``rtol``/``atol``).
        interp: ``"linear"`` (default) or ``"cubic"`` (Hermite) between steps.
        perturb: evaluate ``f`` just after ``t0`` for a node ``c = 0`` and just
            before ``t1`` for ``c = 1`` (torchdiffeq's ``perturb``).
        rtol, atol: the solve's tolerances, which scale the Newton increment.
    """

    adaptive = False
    supports_tangent = False  # the Newton iteration count depends on the values: nothing to replay

    def __init__(self, tableau: ImplicitTableau, *, max_iters: int = 100, newton_tol: float = 1e-3,
                 interp: str = "linear", perturb: bool = False, rtol=1e-7, atol=1e-9) -> None:
        if not isinstance(tableau, ImplicitTableau):
            raise TypeError(f"tableau must be an ImplicitTableau, got {type(tableau).__name__}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise InvalidInputError(f"max_iters must be a positive integer, got {max_iters!r}")
        if not (isinstance(newton_tol, (int, float)) and 0 < newton_tol < 1):
            raise InvalidInputError(f"newton_tol must be a number in (0, 1), got {newton_tol!r}")
        if interp not in _INTERPS:
            raise InvalidInputError(f"interp must be one of {_INTERPS}, got {interp!r}")
        self.tableau = tableau
        self.order = tableau.order
        self.error_order = tableau.order
        self.max_iters, self.newton_tol = max_iters, float(newton_tol)
        self.interp, self.perturb = interp, bool(perturb)
        self.rtol, self.atol = rtol, atol
        self._matrices: dict = {}

    @property
    def name(self) -> str:
        return self.tableau.name

    def __repr__(self) -> str:
        return f"ImplicitRungeKutta({self.tableau.name!r})"

    def init(self, func, t0, y0):
        return ()

    def _coefficients(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device)
        if key not in self._matrices:
            self._matrices[key] = (torch.tensor(self.tableau.a, dtype=dtype, device=device),
                                   torch.tensor(self.tableau.b, dtype=dtype, device=device))
        return self._matrices[key]

    def _evaluate(self, func, t0: float, h: float, y0: torch.Tensor, a: torch.Tensor, k: torch.Tensor):
        """``F(K)``: the stage derivatives at the stage values ``y0 + h A K`` (``k`` is ``(s, *y0.shape)``)."""
        stage_values = y0 + h * torch.tensordot(a, k, dims=1)
        out = []
        for i, c_i in enumerate(self.tableau.c):
            flag = PERTURB_NONE
            if self.perturb and c_i == 0.0:
                flag = PERTURB_NEXT
            elif self.perturb and c_i == 1.0:
                flag = PERTURB_PREV
            out.append(func(t0 + c_i * h, stage_values[i], flag))
        return torch.stack(out)

    def step(self, func, t0, h, y0, state):
        if isinstance(h, torch.Tensor):
            raise InvalidInputError(f"{self.name} takes one step size for the whole state, not per-sample steps")
        s, n = self.tableau.stages, y0.numel()
        real = y0.real.dtype if y0.is_complex() else y0.dtype
        a, b = self._coefficients(y0.dtype, y0.device)
        start = PERTURB_NEXT if self.perturb else PERTURB_NONE
        f0 = func(t0, y0, start)
        # the iteration matrix I - h (A ⊗ J), J = ∂f/∂y(t0, y0), factored once per step
        with unwatched(func):
            jac = dense_jacobian(lambda y: func(t0, y, start), y0.detach(), f0.detach())
        eye = torch.eye(s * n, dtype=y0.dtype, device=y0.device)
        lu, pivots, info = torch.linalg.lu_factor_ex(eye - h * torch.kron(a.detach(), jac))
        record(func, jacobians=1, factorisations=1)
        if int(info) != 0:
            raise SolverError(
                f"{self.name}: the Newton iteration matrix I - h (A ⊗ ∂f/∂y) is singular at t={t0:.9g} with step "
                f"size {h:.3g} (h times an eigenvalue of ∂f/∂y meets 1 / an eigenvalue of A); take a smaller "
                f"step_size", t=t0, dt=h)
        lu = (lu, pivots)
        scale = (self.atol + self.rtol * y0.detach().abs()).reshape(1, -1)
        roundoff = 10 * torch.finfo(real).eps
        magnitude = 1.0 + y0.detach().abs().max()
        k = f0.unsqueeze(0).expand(s, *y0.shape).clone()
        previous = math.inf
        for _ in range(self.max_iters):
            residual = k - self._evaluate(func, t0, h, y0, a, k)
            delta = torch.linalg.lu_solve(*lu, residual.reshape(s * n, 1)).reshape(k.shape)
            k = k - delta
            step_change = h * delta.detach()
            # one host synchronisation per iteration: both convergence measures in one read
            size, relative = torch.stack([step_change.reshape(s, -1).div(scale).abs().square().mean().sqrt(),
                                          step_change.abs().max() / magnitude]).tolist()
            if not math.isfinite(size):
                break  # diverged: say so at once, below
            if relative <= roundoff:
                break  # at round-off: the iterates (and their derivatives) have converged
            if size <= self.newton_tol and size >= previous:
                break  # within the tolerance and no longer shrinking: more iterations add only round-off
            previous = size
        # converged: within the tolerance, or at this precision's round-off (a tolerance below float32's reach);
        # not: diverged (NaN, inf), or still above both after max_iters
        if not (size <= self.newton_tol or relative <= roundoff):
            raise SolverError(
                f"{self.name}: the Newton iteration for the stages did not converge in max_iters={self.max_iters} "
                f"iterations at t={t0:.9g} with step size {h:.3g} (last scaled increment {size:.3g}); take a "
                f"smaller step_size or raise max_iters", t=t0, dt=h)
        y1 = y0 + h * torch.tensordot(b, k, dims=1)
        return Step(t0, h, y0, y1, state, (), None, dense=[f0], func=func)

    def interpolate(self, step: Step, theta):
        if isinstance(theta, float) and theta in (0.0, 1.0):
            return step.y0 if theta == 0.0 else step.y1
        return grid_interpolate(step, theta, self.interp)
