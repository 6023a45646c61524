"""GMRES: the Krylov solver of Jacobian-free Newton–Krylov and of matrix-free adjoint solves.

Restarted GMRES (Saad & Schultz, SIAM J. Sci. Stat. Comput. 7 (1986) 856–869;
Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., §6.5): the
iterate minimises the residual ``‖b - A x‖₂`` over ``x0 + K_k(A, r0)``, the
Krylov space built by Arnoldi's process (modified Gram–Schmidt) from
products ``A v`` alone. ``A`` is never formed: a Newton–Krylov step of a
stiff solver passes ``v ↦ v - hγ J v`` with ``J v`` a forward difference
(``jacobian.difference_jvp``; Knoll & Keyes, J. Comput. Phys. 193 (2004)),
so a state of ``n`` components costs one evaluation of ``f`` per iteration
instead of an ``n × n`` Jacobian and its ``O(n³)`` factorisation.

Two entry points:

* :func:`gmres`: one system over all the entries of ``b`` (any shape).
* :func:`batched_gmres`: ``B`` independent systems, ``b`` of shape
  ``(B, d)`` and ``matvec`` acting row-wise — the per-sample structure of the
  batch-parallel loop. Each system has its own tolerance and its own
  convergence; the iteration stops when all have converged. A system that
  converges early keeps its answer: the GMRES residual never increases as the
  Krylov space grows.

The small least-squares problem ``min ‖β e₁ - H y‖`` of each Arnoldi step is
solved directly (``torch.linalg.lstsq`` on the ``(k+2) × (k+1)`` Hessenberg
matrix) rather than by Givens rotations: it is tiny beside a product ``A v``,
and it gives every system's residual at once. Real dtypes.

Preconditioning is on the **right** (Saad §9.3.2, Algorithm 9.5): GMRES runs
on ``A M⁻¹`` and returns ``x = M⁻¹ u``. Right rather than left because the
residual it minimises and tests is then the true one, ``‖b - A x‖`` — the
quantity a Newton–Krylov iteration's forcing term (``rtol``) is about — and
not ``‖M⁻¹(b - A x)‖``, which a lagged or poor ``M`` (the band preconditioner
of ``newton.py`` is both: the band of a Jacobian formed steps ago) scales by
an unknown amount (Saad §9.3.4). The cost is the same: one ``M⁻¹`` per
product, plus one per restart cycle to map the update back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from neurode.framework.errors import InvalidInputError

#: ``v ↦ A v`` (or ``v ↦ M⁻¹ v``) on tensors of one shape
LinearMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class KrylovInfo:
    """How a GMRES solve ended.

    Attributes:
        iterations: Arnoldi steps taken (products ``A v``, restarts included; a restart adds one product to
            measure the true residual, not counted).
        residual_norm: the largest final residual ``‖b - A x‖₂`` over the systems (the Arnoldi estimate of it
            when the last cycle converged, equal to it in exact arithmetic).
        converged: whether every system met ``‖b - A x‖ <= max(atol, rtol ‖b‖)``.
    """

    iterations: int
    residual_norm: float
    converged: bool


def _check(rtol: float, atol: float, restart: int, max_iters: int | None) -> None:
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise InvalidInputError(f"GMRES needs rtol >= 0 and atol >= 0, not both 0; got rtol={rtol!r}, atol={atol!r}")
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
        raise InvalidInputError(f"GMRES restart must be a positive integer, got {restart!r}")
    if max_iters is not None and (isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1):
        raise InvalidInputError(f"GMRES max_iters must be a positive integer or None, got {max_iters!r}")


def batched_gmres(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, x0: torch.Tensor | None = None,
                  rtol: float = 1e-6, atol: float = 0.0, restart: int = 30,
                  max_iters: int | None = None,
                  preconditioner: LinearMap | None = None) -> tuple[torch.Tensor, KrylovInfo]:
    """Solve ``A_i x_i = b_i`` for the ``B`` rows of ``b`` (shape ``(B, d)``); ``matvec`` maps ``(B, d)`` row-wise.

    ``preconditioner``: ``v ↦ M⁻¹ v`` row-wise, ``M ≈ A``, applied on the right (see the module docstring).
    Stops when every system's residual is at most ``max(atol, rtol ‖b_i‖)``, or after ``max_iters`` products
    (default ``10 d``). Returns ``x`` and a :class:`KrylovInfo`; not converging is reported, not raised: the
    caller (a Newton iteration) decides what an inexact solve means.
    """
    _check(rtol, atol, restart, max_iters)
    if b.ndim != 2:
        raise InvalidInputError(f"batched_gmres needs b of shape (batch, d), got {tuple(b.shape)}")
    batch, d = b.shape
    budget = max_iters if max_iters is not None else 10 * d
    m = min(restart, d)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    target = torch.clamp(rtol * torch.linalg.vector_norm(b, dim=1), min=atol)
    total = 0
    operator = matvec if preconditioner is None else (lambda v: matvec(preconditioner(v)))
    estimate = None
    while True:
        if estimate is not None and (bool((estimate <= target).all()) or total >= budget):
            # the least-squares residual of the last cycle is ‖b - A x‖ (Saad, Prop. 6.9): no product to check it
            # (SUNDIALS' SPGMR trusts it too); only a restart measures the true residual again
            beta = estimate
            break
        r = b - matvec(x) if estimate is not None or x0 is not None else b
        beta = torch.linalg.vector_norm(r, dim=1)
        if bool((beta <= target).all()) or total >= budget:
            break
        basis = [r / torch.where(beta > 0, beta, 1.0).unsqueeze(1)]
        hessenberg = b.new_zeros(batch, m + 1, m)
        e1 = b.new_zeros(batch, m + 1)
        e1[:, 0] = beta
        y = None
        for k in range(m):
            w = operator(basis[k])
            for j in range(k + 1):  # modified Gram–Schmidt
                hessenberg[:, j, k] = torch.linalg.vecdot(basis[j], w)
                w = w - hessenberg[:, j, k].unsqueeze(1) * basis[j]
            norm_w = torch.linalg.vector_norm(w, dim=1)
            hessenberg[:, k + 1, k] = norm_w
            # a zero norm is the "happy breakdown": the solution lies in the space already built
            basis.append(torch.where(norm_w.unsqueeze(1) > 0, w / torch.where(norm_w > 0, norm_w, 1.0).unsqueeze(1),
                                     0.0))
            total += 1
            h = hessenberg[:, : k + 2, : k + 1]
            y = torch.linalg.lstsq(h, e1[:, : k + 2].unsqueeze(-1)).solution.squeeze(-1)
            estimate = torch.linalg.vector_norm(e1[:, : k + 2] - (h @ y.unsqueeze(-1)).squeeze(-1), dim=1)
            if bool((estimate <= target).all()) or total >= budget:
                break
        update = torch.einsum("bk,kbd->bd", y, torch.stack(basis[: y.shape[1]]))
        x = x + (update if preconditioner is None else preconditioner(update))
    return x, KrylovInfo(iterations=total, residual_norm=float(beta.max()), converged=bool((beta <= target).all()))


def gmres(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, x0: torch.Tensor | None = None,
          rtol: float = 1e-6, atol: float = 0.0, restart: int = 30,
          max_iters: int | None = None,
          preconditioner: LinearMap | None = None) -> tuple[torch.Tensor, KrylovInfo]:
    """Solve ``A x = b`` for one system over all the entries of ``b`` (any shape); ``matvec`` (and
    ``preconditioner``, ``v ↦ M⁻¹ v`` on the right) map that shape."""
    shape = b.shape
    if preconditioner is not None:
        inner = preconditioner
        preconditioner = lambda v: inner(v.reshape(shape)).reshape(1, -1)  # noqa: E731
    x, info = batched_gmres(lambda v: matvec(v.reshape(shape)).reshape(1, -1), b.reshape(1, -1),
                            x0=None if x0 is None else x0.reshape(1, -1), rtol=rtol, atol=atol, restart=restart,
                            max_iters=max_iters, preconditioner=preconditioner)
    return x.reshape(shape), info
