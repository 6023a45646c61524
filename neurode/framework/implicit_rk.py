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

Gradients (``direct``, ``checkpoint``) do not flow through the Newton
iterations: they run without a graph, and the converged stages are made
differentiable by the implicit function theorem (``implicit_gradient.py``),
with the exact ``∂G/∂K = I - h blockdiag_i(J(Y_i)) (A ⊗ I)`` at the stage
values ``Y_i`` — not the simplified-Newton matrix at ``y0`` — formed only
when a backward pass runs (``implicit_gradient="gmres"``: applied
matrix-free instead). A ``jac`` option gives ``J`` (dense), or a
:class:`PartitionedJacobian` for a system with quadrature parts (the
continuous adjoint's augmented state, ``backsolve``): the iteration matrix
is then factored part by part, the quadratures need none.

Still to come (other modules): adaptive stiff methods, Jacobian reuse
across steps, per-sample block-diagonal Jacobians (``J`` is dense over the
whole state here, as torchdiffeq's) and Newton–Krylov for the forward
iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neurode.framework.errors import InvalidInputError, SolverError
from neurode.framework.explicit_rk import grid_interpolate
from neurode.framework.implicit_gradient import LINEAR_SOLVERS, implicit_root
from neurode.framework.jacobian import dense_jacobian, record, unwatched, user_jacobian
from neurode.framework.partitioned_jacobian import PartitionedJacobian
from neurode.framework.solver import PERTURB_NEXT, PERTURB_NONE, PERTURB_PREV, AbstractSolver, Step

_INTERPS = ("linear", "cubic")
#: how gradients pass through the stage solve: the implicit function theorem with a dense LU or GMRES
#: transposed solve, or backpropagation through the Newton iterations
IMPLICIT_GRADIENTS = (*LINEAR_SOLVERS, "unrolled")


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
        jac: ``jac(t, y) -> ∂f/∂y``, the Jacobian of ``f`` (``(n, n)`` over the flattened state, or
            ``(*y.shape, *y.shape)``), or a :class:`PartitionedJacobian` (block-diagonal with quadrature parts:
            the continuous adjoint's augmented system); default autograd.
        implicit_gradient: how gradients (``direct``, ``checkpoint``) pass through the stage solve:
            ``"lu"`` (default) or ``"gmres"`` — the implicit function theorem (``implicit_gradient.py``), with
            the exact ``∂G/∂K`` at the stages factored densely or applied matrix-free — or ``"unrolled"``,
            backpropagation through every Newton iteration. The theorem's gradient is exact for the converged
            stages, costs one transposed solve per step whatever the iteration count and keeps no iterate;
            ``"unrolled"`` is kept for second derivatives (``create_graph=True``), which the theorem's
            backward (a constant ``∂G/∂K``) does not give.
        rtol, atol: the solve's tolerances, which scale the Newton increment.
    """

    adaptive = False
    stiff = True
    supports_tangent = False  # the Newton iteration count depends on the values: nothing to replay

    def __init__(self, tableau: ImplicitTableau, *, max_iters: int = 100, newton_tol: float = 1e-3,
                 interp: str = "linear", perturb: bool = False, jac=None, implicit_gradient: str = "lu",
                 rtol=1e-7, atol=1e-9) -> None:
        if not isinstance(tableau, ImplicitTableau):
            raise TypeError(f"tableau must be an ImplicitTableau, got {type(tableau).__name__}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise InvalidInputError(f"max_iters must be a positive integer, got {max_iters!r}")
        if not (isinstance(newton_tol, (int, float)) and 0 < newton_tol < 1):
            raise InvalidInputError(f"newton_tol must be a number in (0, 1), got {newton_tol!r}")
        if interp not in _INTERPS:
            raise InvalidInputError(f"interp must be one of {_INTERPS}, got {interp!r}")
        if jac is not None and not callable(jac):
            raise InvalidInputError(f"jac must be callable as jac(t, y), got {type(jac).__name__}")
        if implicit_gradient not in IMPLICIT_GRADIENTS:
            raise InvalidInputError(f"implicit_gradient must be one of {IMPLICIT_GRADIENTS}, got {implicit_gradient!r}")
        self.tableau = tableau
        self.jac, self.implicit_gradient = jac, implicit_gradient
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

    def _flags(self) -> list[int]:
        """The perturb flag of each stage: just after ``t0`` for a node ``c = 0``, just before ``t1`` for ``c = 1``."""
        flags = []
        for c_i in self.tableau.c:
            flag = PERTURB_NONE
            if self.perturb and c_i == 0.0:
                flag = PERTURB_NEXT
            elif self.perturb and c_i == 1.0:
                flag = PERTURB_PREV
            flags.append(flag)
        return flags

    def _evaluate(self, func, t0: float, h: float, y0: torch.Tensor, a: torch.Tensor, k: torch.Tensor):
        """``F(K)``: the stage derivatives at the stage values ``y0 + h A K`` (``k`` is ``(s, *y0.shape)``)."""
        stage_values = y0 + h * torch.tensordot(a, k, dims=1)
        return torch.stack([func(t0 + c_i * h, stage_values[i], flag)
                            for i, (c_i, flag) in enumerate(zip(self.tableau.c, self._flags()))])

    def _state_jacobian(self, func, t: float, y: torch.Tensor, flag: int, f: torch.Tensor | None = None):
        """``∂f/∂y`` at ``(t, y)``: the user's ``jac`` (a dense matrix, or a :class:`PartitionedJacobian`) or
        autograd, with the vector field's tensor capture off (``jacobian.unwatched``); counted."""
        record(func, jacobians=1)
        if self.jac is not None:
            real = y.real.dtype if y.is_complex() else y.dtype
            t_tensor = torch.scalar_tensor(t, dtype=real, device=y.device)
            value = self.jac(t_tensor, y)
            if isinstance(value, PartitionedJacobian):
                if value.size != y.numel():
                    raise InvalidInputError(f"jac returned a PartitionedJacobian of size {value.size} for a state "
                                            f"of {y.numel()} components")
                return value
            return user_jacobian(lambda *_: value, t, y, per_sample=False)
        with unwatched(func):
            return dense_jacobian(lambda z: func(t, z, flag), y.detach(), None if f is None else f.detach())

    def _iteration_matrix(self, func, t0: float, h: float, y0: torch.Tensor, f0: torch.Tensor, flag: int,
                          a: torch.Tensor):
        """A solver of ``(I - h (A ⊗ J)) x = r`` for ``r`` of shape ``(s, n)``, ``J`` at ``(t0, y0)``, factored once
        per step: dense LU, or part by part for a :class:`PartitionedJacobian`."""
        s, n = self.tableau.stages, y0.numel()
        jac = self._state_jacobian(func, t0, y0, flag, f0)
        record(func, factorisations=1)
        if isinstance(jac, PartitionedJacobian):
            factors = jac.factor(h, a.detach())
            singular, solve = factors.singular, factors.solve
        else:
            eye = torch.eye(s * n, dtype=y0.dtype, device=y0.device)
            lu, pivots, info = torch.linalg.lu_factor_ex(eye - h * torch.kron(a.detach(), jac))
            singular = int(info) != 0

            def solve(r: torch.Tensor) -> torch.Tensor:
                return torch.linalg.lu_solve(lu, pivots, r.reshape(s * n, 1)).reshape(s, n)
        if singular:
            raise SolverError(
                f"{self.name}: the Newton iteration matrix I - h (A ⊗ ∂f/∂y) is singular at t={t0:.9g} with step "
                f"size {h:.3g} (h times an eigenvalue of ∂f/∂y meets 1 / an eigenvalue of A); take a smaller "
                f"step_size", t=t0, dt=h)
        return solve

    def _stage_system_matrix(self, func, t0: float, h: float, y0: torch.Tensor, a: torch.Tensor,
                             k: torch.Tensor) -> torch.Tensor:
        """The exact ``∂G/∂K`` of ``G(K) = K - F(y0 + h A K)`` at the stages ``k``:
        ``I - h blockdiag_i(J(t_i, Y_i)) (A ⊗ I)``, with ``J`` at each stage value (block ``(i, j)`` is
        ``δ_ij I - h a_ij J_i``), for the implicit-function-theorem gradient."""
        s, n = self.tableau.stages, y0.numel()
        stage_values = (y0 + h * torch.tensordot(a, k, dims=1)).detach()
        blocks = []
        for i, (c_i, flag) in enumerate(zip(self.tableau.c, self._flags())):
            jac = self._state_jacobian(func, t0 + c_i * h, stage_values[i], flag)
            if isinstance(jac, PartitionedJacobian):  # an iteration matrix, not the exact Jacobian: autograd's
                with unwatched(func):
                    jac = dense_jacobian(lambda z, t=t0 + c_i * h, f=flag: func(t, z, f), stage_values[i])
            blocks.append(jac)
        jacobians = torch.stack(blocks)  # (s, n, n)
        coupled = (a.detach()[:, None, :, None] * jacobians[:, :, None, :]).reshape(s * n, s * n)
        record(func, factorisations=1)
        return torch.eye(s * n, dtype=y0.dtype, device=y0.device) - h * coupled

    def _newton(self, func, t0: float, h: float, y0: torch.Tensor, f0: torch.Tensor, a: torch.Tensor, solve):
        """The stages ``K`` by simplified Newton from ``K = f(t0, y0)`` (see the module docstring)."""
        s = self.tableau.stages
        real = y0.real.dtype if y0.is_complex() else y0.dtype
        scale = (self.atol + self.rtol * y0.detach().abs()).reshape(1, -1)
        roundoff = 10 * torch.finfo(real).eps
        magnitude = 1.0 + y0.detach().abs().max()
        k = f0.unsqueeze(0).expand(s, *y0.shape).clone()
        previous = math.inf
        for _ in range(self.max_iters):
            residual = k - self._evaluate(func, t0, h, y0, a, k)
            delta = solve(residual.reshape(s, -1)).reshape(k.shape)
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
        return k

    def step(self, func, t0, h, y0, state):
        if isinstance(h, torch.Tensor):
            raise InvalidInputError(f"{self.name} takes one step size for the whole state, not per-sample steps")
        a, b = self._coefficients(y0.dtype, y0.device)
        start = PERTURB_NEXT if self.perturb else PERTURB_NONE
        f0 = func(t0, y0, start)
        solve = self._iteration_matrix(func, t0, h, y0.detach(), f0.detach(), start, a)
        if self.implicit_gradient == "unrolled":
            k = self._newton(func, t0, h, y0, f0, a, solve)
        else:
            # the Newton iterations off the graph; the stages differentiable by the implicit function theorem
            fixed = y0.detach()
            with torch.no_grad():
                root = self._newton(func, t0, h, fixed, f0.detach(), a, solve)
            k = implicit_root(lambda stages: stages - self._evaluate(func, t0, h, y0, a, stages), root,
                              local_residual=lambda stages: stages - self._evaluate(func, t0, h, fixed, a, stages),
                              jacobian=lambda: self._stage_system_matrix(func, t0, h, fixed, a, root),
                              linear_solver=self.implicit_gradient)
        y1 = y0 + h * torch.tensordot(b, k, dims=1)
        return Step(t0, h, y0, y1, state, (), None, dense=[f0], func=func)

    def interpolate(self, step: Step, theta):
        if isinstance(theta, float) and theta in (0.0, 1.0):
            return step.y0 if theta == 0.0 else step.y1
        return grid_interpolate(step, theta, self.interp)
