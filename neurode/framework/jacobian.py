"""``∂f/∂y`` for implicit and linearly implicit methods: dense over the state, or block-diagonal per sample.

An implicit method needs the Jacobian ``J = ∂f/∂y`` to build its iteration
matrix (``I - h γ J`` for a DIRK stage or a Rosenbrock step, ``I - h A ⊗ J``
for a fully implicit tableau). Two structures:

* **dense** (:func:`dense_jacobian`): ``J`` over the flattened state, an
  ``(n, n)`` matrix. The shared loop uses it: there the components of the
  state may be coupled in any way.
* **banded** (:func:`banded_jacobian`): only the ``lband + uband + 1``
  diagonals around the main one, per sample, by forward differences in
  ``lband + uband + 1`` grouped evaluations (Curtis, Powell & Reid 1974) —
  the band preconditioner of Newton–Krylov (``newton.py``), where ``d`` may
  be far too large for a ``d × d`` block.
* **per sample** (:func:`block_jacobian`): the state is ``(B, *shape)`` and
  sample ``b``'s derivative depends only on sample ``b``'s state — the
  batch-parallel loop's contract. ``J`` is block-diagonal; only its blocks
  are formed, ``(B, d, d)`` with ``d = prod(shape)``, never a ``(B d)²``
  matrix (torchdiffeq's implicit solvers factor one dense matrix over the
  whole flattened batch). By autograd the blocks cost ``d`` reverse passes of
  ``Σ_b f_b`` (one vmapped, batched backward), whatever ``B``: row ``i`` of
  every block is ``∂(Σ_b f_b,i)/∂y``, because ``f_b`` does not read ``y_b'``.

Sources, in order: a user's ``jac(t, y)`` (:func:`user_jacobian`, shape
checked), autograd (vmapped where ``f`` allows, row by row where it does
not: in-place operations, data-dependent control flow), and forward
differences where ``f`` cannot be differentiated again (a continuous
adjoint's augmented dynamics differentiates ``f`` itself and leaves no graph
to differentiate twice). A simplified Newton iteration only needs the
Jacobian as a preconditioner, so differences at ``√eps`` serve; a Rosenbrock
method's order depends on ``J`` being exact to that precision.

The Jacobian is a constant of the iteration: it is returned detached, and
it is computed with the vector field's tensor capture switched off
(:func:`unwatched`), so a gradient method watching the solve
(``capture.py``) sees only what ``f`` itself reads.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from neurode.framework.banded import band_columns
from neurode.framework.errors import InvalidInputError

#: ``f(y) -> dy/dt`` at a fixed time, as the functions here take it
StateFunction = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def unwatched(func):
    """Switch off the tensor capture of a loop's vector field while the Jacobian is formed (see the docstring)."""
    capture = getattr(func, "capture", None)
    if capture is not None:
        func.capture = None
    try:
        yield
    finally:
        if capture is not None:
            func.capture = capture


def record(func, *, jacobians: int = 0, factorisations: int = 0) -> None:
    """Count Jacobians formed and matrices factored on the loop's vector field (``VectorField.n_jac``/``n_lu``,
    reported in ``SolveStats``); a plain callable (a solver's ``step`` called directly) counts nothing."""
    if hasattr(func, "n_jac"):
        func.n_jac += jacobians
        func.n_lu += factorisations


def _difference_step(y: torch.Tensor) -> torch.Tensor:
    """Per-component forward-difference increments ``√eps (1 + |y|)`` (Hairer & Wanner II, §IV.8)."""
    real = y.real.dtype if y.is_complex() else y.dtype
    return math.sqrt(torch.finfo(real).eps) * (1.0 + y.abs())


def dense_jacobian(f: StateFunction, y: torch.Tensor, f0: torch.Tensor | None = None) -> torch.Tensor:
    """``∂f/∂y`` at ``y`` as an ``(n, n)`` matrix over the flattened state (detached): the one block of a batch
    of one sample whose state is the whole flattened state."""
    shape, n = y.shape, y.numel()
    return block_jacobian(lambda z: f(z.view(shape)).reshape(1, n), y.reshape(1, n),
                          None if f0 is None else f0.reshape(1, n))[0]


def block_jacobian(f: StateFunction, y: torch.Tensor, f0: torch.Tensor | None = None) -> torch.Tensor:
    """The per-sample blocks ``∂f_b/∂y_b`` at ``y`` of shape ``(B, *shape)``, as a ``(B, d, d)`` tensor (detached).

    ``f`` must map ``(B, *shape)`` to ``(B, *shape)`` with sample ``b``'s output reading only sample ``b``'s
    state (the batch-parallel loop's contract); the blocks are exact under that contract and meaningless
    without it.
    """
    if y.ndim < 1 or y.shape[0] == 0:
        raise InvalidInputError(f"a per-sample Jacobian needs a state of shape (batch, ...), got {tuple(y.shape)}")
    batch = y.shape[0]
    d = y[0].numel()
    y = y.detach()

    def flat(z: torch.Tensor) -> torch.Tensor:
        return f(z.view_as(y)).reshape(batch, d)

    with torch.enable_grad():
        point = y.reshape(batch, d).clone().requires_grad_(True)
        try:
            out = flat(point)
        except RuntimeError:
            out = None
        if out is not None and out.requires_grad:
            # row i of every block: the gradient of Σ_b f_b,i; all d rows in one batched backward when f allows
            seeds = torch.eye(d, dtype=out.dtype, device=out.device).unsqueeze(1).expand(d, batch, d)
            try:
                (rows,) = torch.autograd.grad(out, point, seeds, retain_graph=True, is_grads_batched=True)
                return rows.detach().permute(1, 0, 2).contiguous()
            except RuntimeError:
                rows = [torch.autograd.grad(out, point, seeds[i], retain_graph=i < d - 1)[0] for i in range(d)]
                return torch.stack(rows, dim=1).detach()
    with torch.no_grad():
        f0 = flat(y.reshape(batch, d)) if f0 is None else f0.detach().reshape(batch, d)
        base = y.reshape(batch, d)
        eps = _difference_step(base)
        columns = []
        for j in range(d):  # column j of every block from one evaluation: sample b's shift moves only f_b
            shifted = base.clone()
            shifted[:, j] += eps[:, j]
            columns.append((flat(shifted) - f0) / eps[:, j : j + 1])
        return torch.stack(columns, dim=2)


def banded_jacobian(f: StateFunction, y: torch.Tensor, f0: torch.Tensor, lband: int, uband: int) -> torch.Tensor:
    """The band of ``∂f_b/∂y_b`` for every row of ``y`` (``(B, d)``), as ``(B, d, lband + uband + 1)`` storage
    (``band[b, i, k] = J_b[i, i - lband + k]``, see ``banded.py``), by forward differences at ``f0 = f(y)``.

    Curtis, Powell & Reid, IMA J. Appl. Math. 13 (1974) 117: column ``j`` of a banded ``J`` has entries only in
    rows ``j - uband .. j + lband``, so columns ``lband + uband + 1`` apart share no row and are perturbed in
    one evaluation; ``lband + uband + 1`` evaluations of ``f`` (fewer when ``d`` is smaller) give the whole
    band, whatever ``d`` — SUNDIALS' CVBANDPRE (Hindmarsh et al., ACM TOMS 31 (2005) 363) forms its band so.
    Entries outside the band are assumed zero: a wrong bandwidth gives a poorer preconditioner, not an error.
    Increments ``√eps (1 + |y_j|)`` (Hairer & Wanner II, §IV.8), taken as the representable ``(y + δ) - y``.
    """
    if y.ndim != 2 or f0.shape != y.shape:
        raise InvalidInputError(f"banded_jacobian needs y and f0 of one shape (batch, d), got {tuple(y.shape)} "
                                f"and {tuple(f0.shape)}")
    batch, d = y.shape
    width = lband + uband + 1
    with torch.no_grad():
        y, f0 = y.detach(), f0.detach()
        step = (y + _difference_step(y)) - y
        group = torch.arange(d, device=y.device) % width
        differences = torch.stack([f(torch.where(group == g, y + step, y)) - f0 for g in range(min(width, d))], 1)
        i, j, inside = band_columns(d, lband, uband, y.device)
        # row i of the group that moved column j holds ∂f_i/∂y_j (no other column of that group reaches row i)
        band = differences[:, j % width, i.expand_as(j)] / step[:, j]
        return torch.where(inside, band, torch.zeros_like(band))


def exact_banded_jacobian(f: StateFunction, y: torch.Tensor, lband: int, uband: int,
                          ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The band of ``∂f_b/∂y_b`` for every row of ``y`` (``(B, d)``), exact, by ``lband + uband + 1``
    vector–Jacobian products (one batched backward pass), and how far ``J`` is from that band; ``None`` where
    ``f`` has no graph (then :func:`banded_jacobian`'s differences are the way).

    Curtis, Powell & Reid's grouping (see :func:`banded_jacobian`) on the rows: rows ``lband + uband + 1``
    apart share no column of a band (column ``j`` reaches rows ``j - uband .. j + lband``), so the gradient
    of the sum of one group of rows holds each of their band entries alone — if ``J`` is banded. An entry
    outside the band would land, unseen, on another row's band entry of the same group; so one more product
    in the same backward pass, with a fixed dense weight vector ``w``, gives ``wᵀJ`` to compare with ``wᵀ``
    times the band: ``|wᵀJ - wᵀ band|``, ``(B, d)``, is returned beside the band for the caller to refuse a
    Jacobian that is not banded as declared (zero to round-off when it is; :func:`largest_stray` names where
    it is not). Tensors only: no host read here.
    """
    batch, d = y.shape
    width = lband + uband + 1
    groups = min(width, d)
    index = torch.arange(d, device=y.device)
    with torch.enable_grad():
        point = y.detach().clone().requires_grad_(True)
        try:
            out = f(point)
        except RuntimeError:
            return None
        if not out.requires_grad:
            return None
        seeds = (index[None, :] % width == torch.arange(groups, device=y.device)[:, None]).to(out.dtype)
        weights = 1.5 + torch.cos(1.3 * index.to(out.dtype))  # in [0.5, 2.5], no pattern of a grid's
        seeds = torch.cat([seeds, weights[None]])[:, None, :].expand(groups + 1, batch, d)
        try:
            (sums,) = torch.autograd.grad(out, point, seeds, retain_graph=True, is_grads_batched=True)
        except RuntimeError:
            sums = torch.stack([torch.autograd.grad(out, point, seeds[g], retain_graph=g < groups)[0]
                                for g in range(groups + 1)])
    sums = sums.detach()
    weighted, sums = sums[-1], sums[:-1].permute(1, 0, 2)  # (B, d): wᵀJ; (B, groups, d): Σ_{i ≡ g} J[i, :]
    i, j, inside = band_columns(d, lband, uband, y.device)
    band = torch.where(inside, sums[:, (i % width).expand_as(j), j], torch.zeros((), dtype=sums.dtype,
                                                                                  device=sums.device))
    from_band = torch.zeros_like(weighted).index_add_(1, j[inside], (weights[:, None] * band)[:, inside])
    return band, (weighted - from_band).abs()


def largest_stray(stray: torch.Tensor) -> tuple[float, int, int]:
    """``(|value|, sample, column)`` of the largest of :func:`exact_banded_jacobian`'s ``(B, d)`` differences."""
    flat = int(stray.argmax())
    return float(stray.flatten()[flat]), flat // stray.shape[1], flat % stray.shape[1]


def user_jacobian(jac: Callable, t, y: torch.Tensor, *, per_sample: bool) -> torch.Tensor:
    """A user's ``jac(t, y)``, checked and brought to ``(n, n)`` (dense) or ``(B, d, d)`` (per sample)."""
    value = jac(t, y)
    if not isinstance(value, torch.Tensor):
        raise InvalidInputError(f"jac(t, y) must return a tensor, got {type(value).__name__}")
    if per_sample:
        batch, d = y.shape[0], y[0].numel()
        expected, accepted = (batch, d, d), {(batch, d, d), (batch, *y.shape[1:], *y.shape[1:])}
    else:
        n = y.numel()
        expected, accepted = (n, n), {(n, n), (*y.shape, *y.shape)}
    if tuple(value.shape) not in accepted:
        layout = "(batch, d, d) blocks, one per sample," if per_sample else "(n, n) over the flattened state"
        raise InvalidInputError(f"jac(t, y) returned shape {tuple(value.shape)} for a state of shape "
                                f"{tuple(y.shape)}; expected {layout} i.e. {expected}")
    if value.dtype != y.dtype or value.device != y.device:
        value = value.to(dtype=y.dtype, device=y.device)
    return value.detach().reshape(expected)


def jacobian(f: StateFunction, y: torch.Tensor, f0: torch.Tensor | None = None, *, per_sample: bool = False,
             jac: Callable | None = None, t=None) -> torch.Tensor:
    """``∂f/∂y`` at ``y``: the user's ``jac`` when given, else autograd (or differences); dense or per sample."""
    if jac is not None:
        return user_jacobian(jac, t, y, per_sample=per_sample)
    return block_jacobian(f, y, f0) if per_sample else dense_jacobian(f, y, f0)


def difference_jvp(f: StateFunction, y: torch.Tensor, v: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """``J v ≈ (f(y + ε v) - f(y)) / ε`` with ``ε = √eps (1 + ‖y‖) / ‖v‖`` (Knoll & Keyes 2004, eq. 11):
    one evaluation of ``f``, for Jacobian-free Newton–Krylov."""
    real = y.real.dtype if y.is_complex() else y.dtype
    norm_v = torch.linalg.vector_norm(v)
    if float(norm_v) == 0.0:
        return torch.zeros_like(v)
    eps = math.sqrt(torch.finfo(real).eps) * (1.0 + torch.linalg.vector_norm(y)) / norm_v
    return (f(y + eps * v) - f0) / eps
