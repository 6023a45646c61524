"""What a solve returns: values at the requested times, statistics, dense output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class SolveStats:
    """Counters of one solve. The backward fields fill in when gradients are computed.

    Attributes:
        nfe: evaluations of ``f`` in the forward solve (including the initial
            step heuristic and event root finding); in the batch-parallel
            mode one call on the active samples counts once (``nfe_rows``
            counts the rows).
        n_steps: attempted steps; ``n_accepted + n_rejected``.
        n_accepted, n_rejected: accepted and rejected steps; in the
            batch-parallel mode summed over the samples (each sample's own in
            ``Solution.sample_stats``).
        h_last: size of the last accepted step (signed, in the direction of ``t``).
        h_next: the step size the controller proposed next (where a solve
            would continue).
        nfe_backward: evaluations in the backward pass (vector-Jacobian
            products count as one each), ``0`` until ``backward()`` runs.
        n_steps_backward: steps taken by a backward solve (backsolve) or
            recomputed (checkpoint).
        nfe_rows: batch rows evaluated, summed over evaluations, in the
            batch-parallel mode (finished samples cost none); 0 otherwise.
        n_jac: Jacobians ``∂f/∂y`` formed by an implicit or linearly implicit
            method in the forward solve (a per-sample batch of blocks counts once).
        n_lu: matrix factorisations (LU) made by such a method in the forward
            solve (a batched factorisation counts once).
        n_jac_backward, n_lu_backward: the same in the backward pass: the
            backward solve of ``backsolve``, the recomputed steps and the
            implicit-function-theorem solves of ``checkpoint``.
    """

    nfe: int = 0
    n_steps: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    h_last: float = float("nan")
    h_next: float = float("nan")
    nfe_backward: int = 0
    n_steps_backward: int = 0
    nfe_rows: int = 0
    n_jac: int = 0
    n_lu: int = 0
    n_jac_backward: int = 0
    n_lu_backward: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Solution:
    """The result of :func:`neurode.solve`.

    Attributes:
        ts: the requested output times (the input ``t``).
        ys: the state at each time, shape ``(len(ts), *y0.shape)``; a tuple of
            such tensors for a tuple state.
        stats: :class:`SolveStats`.
        solver, adjoint: the names used.
        event_t: the event time when solving with ``event_fn``, else ``None``.
        dense: a callable ``dense(t) -> y`` when ``dense=True`` was asked for.
        status: per-sample status codes of a batch-parallel solve (0 success,
            1 step limit, 2 step-size underflow, 3 non-finite state), else ``None``.
        sample_stats: per-sample ``n_accepted``, ``n_rejected``, ``h_last``
            and ``fail_t`` of a batch-parallel solve, else ``None``.
    """

    ts: torch.Tensor
    ys: torch.Tensor | tuple[torch.Tensor, ...]
    stats: SolveStats = field(default_factory=SolveStats)
    solver: str = ""
    adjoint: str = ""
    event_t: torch.Tensor | None = None
    dense: Any = None
    status: torch.Tensor | None = None
    sample_stats: dict[str, torch.Tensor] | None = None

    def __iter__(self):  # allows ``ts, ys = solution``
        return iter((self.ts, self.ys))

    def __repr__(self) -> str:
        shape = tuple(self.ys.shape) if isinstance(self.ys, torch.Tensor) else [tuple(y.shape) for y in self.ys]
        return (
            f"Solution(solver={self.solver!r}, adjoint={self.adjoint!r}, ys={shape}, "
            f"nfe={self.stats.nfe}, accepted={self.stats.n_accepted}, rejected={self.stats.n_rejected})"
        )
