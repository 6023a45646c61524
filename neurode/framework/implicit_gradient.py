"""Gradients of an implicit stage solve by the implicit function theorem, not through the Newton iterations.

An implicit step finds the root ``K*`` of a residual ``G(K; y0, θ) = 0`` (the
stages of an implicit Runge–Kutta step, one stage of a DIRK/ESDIRK step),
where ``θ`` is everything ``G`` reads that requires grad — the step's start
state ``y0``, the parameters of ``f``, what a closure captures, ``args``.
Where ``∂G/∂K`` is invertible at the root, the implicit function theorem
(Krantz & Parks, "The Implicit Function Theorem", 2002, Thm. 3.3.1) gives its
derivative exactly:

    dK*/dθ = -(∂G/∂K)⁻¹ ∂G/∂θ,    so    (dK*/dθ)ᵀ ḡ = (∂G/∂θ)ᵀ w,   (∂G/∂K)ᵀ w = -ḡ

(reverse mode: one transposed linear solve per cotangent ḡ, then one
vector–Jacobian product of ``G``; Blondel et al., "Efficient and Modular
Implicit Differentiation", NeurIPS 2022, §2). The Newton iterations are not
differentiated at all: they run without a graph, their count does not
change the backward cost, and their iterates are not kept.

Construction (no input has to be enumerated): with the root ``K*`` found
under ``torch.no_grad()``,

    z = G(K*.detach(); y0, θ)                  one evaluation, with its graph
    K = K*.detach() + S(z)

where ``S`` is an ``autograd.Function`` whose forward returns zeros (so
``K == K*`` bit for bit) and whose backward maps the cotangent ``ḡ`` of
``K`` to ``w = -(∂G/∂K)⁻ᵀ ḡ``. Autograd then carries ``w`` back through
``z``'s graph, which gives ``(∂G/∂θ)ᵀ w`` for ``y0`` and every tensor ``G``
read — parameters, closure captures — exactly as if ``K*`` had been
computed by differentiable operations. ``∂G/∂K`` is formed (or applied)
only when a backward pass actually runs.

The interface, for a stage solve (``implicit_root``)::

    K = implicit_root(residual, root, *, jacobian=None, per_sample=False, linear_solver="lu",
                      rtol=None, restart=30, max_iters=None)

* ``residual``: ``K ↦ G(K)``, a callable of one tensor of ``root``'s shape
  that closes over everything else (``y0``, the step size, earlier stages,
  ``f``). It is called once at ``root`` with grad enabled in the forward
  pass (``z``), and in the backward pass again (to form or apply
  ``∂G/∂K``), so what it closes over must still be valid then — a step's
  locals are.
* ``root``: the converged root ``K*`` (detached here; its value is returned
  unchanged).
* ``jacobian``: ``None`` (``∂G/∂K`` by autograd of ``residual`` at ``root``:
  exact, ``N`` reverse passes, batched) or a callable ``() -> Tensor``
  returning the *exact* ``∂G/∂K`` at ``root`` — ``(N, N)`` over the
  flattened ``root``, or ``(B, N_b, N_b)`` blocks with ``per_sample`` — called
  once per backward pass. Not the simplified-Newton matrix at ``y0``: the
  gradient is only as exact as this matrix. An implicit Runge–Kutta step
  passes ``I - h blockdiag_i(J(Y_i)) (A ⊗ I)`` with ``J`` at each stage value.
* ``per_sample``: ``root`` is ``(B, ...)`` and sample ``b``'s residual reads
  only sample ``b``'s stages (the batch-parallel loop's contract): ``B``
  independent systems of size ``N_b``, never one ``(B N_b)²`` matrix.
* ``linear_solver``: ``"lu"`` (dense or batched LU of ``∂G/∂K``) or
  ``"gmres"`` (matrix-free: GMRES, ``framework/krylov.py``, on
  vector–Jacobian products of ``residual`` w.r.t. ``K``, one backward pass of
  ``G`` per iteration; for states too large for a dense matrix), to relative
  residual ``rtol`` (default ``max(1e-10, 100 eps)``).

* ``local_residual``: the same ``G`` with every input but ``K`` detached
  (``y0``, earlier stages, the step size), used only for ``∂G/∂K`` (the
  matrix, or GMRES's products) in the backward pass. Pass it in a solver:
  autograd walks the whole graph reachable from an output, so forming
  ``∂G/∂K`` from ``residual`` itself walks the history of ``y0`` — the whole
  solve so far — at every stage, and the backward pass becomes quadratic in
  the number of steps (measured: 80 s instead of under a second for 1030
  steps of kvaerno3).

Where no gradient is recorded (grad mode off, or nothing ``G`` reads
requires grad) ``root`` is returned as it is, and ``residual`` is not called.

Plugging into a stage solve: run the Newton iteration under
``torch.no_grad()`` (on detached inputs), then pass its result through
``implicit_root`` with the residual the iteration solved. For a DIRK stage
``z_i = hγ f(t_i, a_i + z_i)`` (``a_i = y0 + h Σ_{j<i} a_ij k_j``, built from the
earlier stages *as returned by* ``implicit_root``, so their gradients chain)::

    with torch.no_grad():
        z_star = newton(...)
    z = implicit_root(lambda z_: z_ - h * gamma * f(t_i, a_i + z_), z_star, per_sample=per_sample)

Second derivatives (``create_graph=True`` through the step) are refused with
an error: ``∂G/∂K`` is a constant of the backward solve here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from neurode.framework.errors import InvalidInputError, SolverError
from neurode.framework.jacobian import block_jacobian, dense_jacobian
from neurode.framework.krylov import batched_gmres, gmres

#: the linear solvers of the transposed system
LINEAR_SOLVERS = ("lu", "gmres")


def implicit_root(residual: Callable[[torch.Tensor], torch.Tensor], root: torch.Tensor, *,
                  jacobian: Callable[[], torch.Tensor] | None = None,
                  local_residual: Callable[[torch.Tensor], torch.Tensor] | None = None, per_sample: bool = False,
                  linear_solver: str = "lu", rtol: float | None = None, restart: int = 30,
                  max_iters: int | None = None) -> torch.Tensor:
    """``root``, differentiable by the implicit function theorem of ``residual(root) = 0`` (see the module
    docstring for every argument)."""
    if linear_solver not in LINEAR_SOLVERS:
        raise InvalidInputError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {linear_solver!r}")
    if per_sample and (root.ndim < 1 or root.shape[0] == 0):
        raise InvalidInputError(f"a per-sample root needs a shape (batch, ...), got {tuple(root.shape)}")
    root = root.detach()
    if not torch.is_grad_enabled():
        return root
    z = residual(root)
    if not isinstance(z, torch.Tensor) or z.shape != root.shape:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise InvalidInputError(f"the residual must return a tensor of the root's shape {tuple(root.shape)}, "
                                f"got {shape}")
    if not z.requires_grad:
        return root  # G reads nothing that requires grad: K* is a constant
    if rtol is None:
        real = root.real.dtype if root.is_complex() else root.dtype
        rtol = max(1e-10, 100 * torch.finfo(real).eps)
    system = _TransposedSystem(local_residual or residual, root, jacobian, per_sample, linear_solver, rtol, restart,
                               max_iters)
    return root + _ImplicitFunction.apply(system, z)


class _TransposedSystem:
    """Solves ``(∂G/∂K)ᵀ w = ḡ`` at the root (conjugate transpose for a complex ``G``: autograd's convention)."""

    def __init__(self, residual, root, jacobian, per_sample, linear_solver, rtol, restart, max_iters) -> None:
        self.residual, self.root, self.jacobian = residual, root, jacobian
        self.per_sample, self.linear_solver = per_sample, linear_solver
        self.rtol, self.restart, self.max_iters = rtol, restart, max_iters

    def solve(self, cotangent: torch.Tensor) -> torch.Tensor:
        if self.linear_solver == "gmres":
            return self._solve_gmres(cotangent)
        return self._solve_lu(cotangent)

    def _matrix(self) -> torch.Tensor:
        root = self.root
        if self.jacobian is not None:
            matrix = self.jacobian()
        elif self.per_sample:
            matrix = block_jacobian(self.residual, root)
        else:
            matrix = dense_jacobian(self.residual, root)
        if self.per_sample:
            n = root[0].numel()
            expected = (root.shape[0], n, n)
        else:
            expected = (root.numel(), root.numel())
        if not isinstance(matrix, torch.Tensor) or tuple(matrix.shape) != expected:
            shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            raise InvalidInputError(f"jacobian() must return ∂G/∂K of shape {expected} for a root of shape "
                                    f"{tuple(root.shape)}, got {shape}")
        return matrix.detach()

    def _solve_lu(self, cotangent: torch.Tensor) -> torch.Tensor:
        matrix = self._matrix()
        if self.per_sample:
            rhs = cotangent.reshape(matrix.shape[0], -1, 1)
        else:
            rhs = cotangent.reshape(-1, 1)
        w, info = torch.linalg.solve_ex(matrix.mH, rhs)
        if bool((info != 0).any()):
            where = f" for samples {torch.nonzero(info).flatten().tolist()}" if self.per_sample else ""
            raise SolverError(f"the stage Jacobian ∂G/∂K is singular at the converged root{where}: the implicit "
                              "function theorem gives no gradient there; take a smaller step size")
        return w.reshape(cotangent.shape)

    def _solve_gmres(self, cotangent: torch.Tensor) -> torch.Tensor:
        root = self.root
        with torch.enable_grad():
            point = root.clone().requires_grad_(True)
            value = self.residual(point)

        def transposed_product(v: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                (product,) = torch.autograd.grad(value, point, v.reshape(root.shape), retain_graph=True,
                                                 allow_unused=True)
            return (torch.zeros_like(root) if product is None else product).reshape(v.shape)

        options = dict(rtol=self.rtol, restart=self.restart, max_iters=self.max_iters)
        if self.per_sample:
            w, info = batched_gmres(transposed_product, cotangent.reshape(root.shape[0], -1), **options)
        else:
            w, info = gmres(transposed_product, cotangent, **options)
        if not info.converged:
            warnings.warn(f"GMRES on the transposed stage system did not reach rtol={self.rtol:.1e} in "
                          f"{info.iterations} iterations (residual {info.residual_norm:.3g}): the gradient of "
                          "this implicit step is inexact; raise max_iters or use linear_solver='lu'",
                          RuntimeWarning, stacklevel=2)
        return w.reshape(cotangent.shape)


class _ImplicitFunction(torch.autograd.Function):
    """Forward: zeros. Backward: the cotangent of ``K`` becomes ``-(∂G/∂K)⁻ᵀ ḡ`` on ``z = G(K*)``."""

    @staticmethod
    def forward(ctx, system: _TransposedSystem, z: torch.Tensor) -> torch.Tensor:
        ctx.system = system
        return torch.zeros_like(z)

    @staticmethod
    def backward(ctx, cotangent: torch.Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "second derivatives through an implicit step's implicit-function-theorem gradient are not "
                "supported (∂G/∂K is a constant of its backward solve); pass implicit_gradient='unrolled' to the "
                "solver to differentiate through the Newton iterations instead")
        return None, -ctx.system.solve(cotangent)
