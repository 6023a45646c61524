"""Typed batches of irregularly sampled trajectories, and the collates that build them.

Two batching modes, because solvers come in two kinds:

``union``
    One time grid for the whole batch: the sorted union of every
    trajectory's observation times. ``values[b, k]`` is trajectory ``b`` at
    ``times[k]`` where ``mask`` says it was observed. This is what a
    torchdiffeq-style solver needs (one ``t`` for the batch); it is also what
    Chen et al. and Rubanova et al. do with irregular data. Its size grows
    with the union: a batch of B trajectories with n distinct random times
    each is ``[B, B*n, features]``, so keep such batches small.
``padded``
    Each trajectory keeps its own times, padded to the longest:
    ``times[b, j]``, with ``time_mask[b, j]`` False in the padding. For
    solvers that step each sample on its own.

Masks are exact: ``mask[b, k, f]`` is True iff feature ``f`` of trajectory
``b`` was observed at that time. Unobserved values are 0, never NaN, so a
loss written as ``((pred - values) * mask)`` cannot be poisoned by NaN.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields, replace

import torch

from neurode.datasets.errors import DataError

UNION = "union"
PADDED = "padded"
MODES: tuple[str, ...] = (UNION, PADDED)


@dataclass(frozen=True)
class Trajectory:
    """One trajectory as ``TrajectoryDataset`` yields it.

    Attributes:
        index: position of the trajectory in its dataset.
        times: ``[n]`` observation times, strictly increasing (float64 by default).
        values: ``[n, n_features]``; 0 where not observed.
        mask: ``[n, n_features]`` bool; True where observed.
        static: ``[n_static]`` per-trajectory variables.
        id: the trajectory's id in the store (its ``trajectory`` coordinate,
            e.g. a subject number); ``None`` when the store has none.
    """

    index: int
    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    static: torch.Tensor
    id: Hashable | None = None


@dataclass(frozen=True)
class TrajectoryBatch:
    """A batch of trajectories.

    Attributes:
        mode: ``"union"`` or ``"padded"``.
        times: ``[T]`` (union) or ``[batch, N]`` (padded; padding repeats the
            last time so the grid stays finite and non-decreasing).
        values: ``[batch, T or N, n_features]``; 0 where unobserved.
        mask: ``[batch, T or N, n_features]`` bool, True where observed.
        time_mask: ``[batch, T or N]`` bool: True where the trajectory has any
            observation at that time (union) or the slot is not padding (padded).
        static: ``[batch, n_static]`` per-trajectory variables, in the order
            of ``static_names`` (by name unless the dataset was given
            ``static=[...]``); :meth:`static_by_name` picks by name.
        index: ``[batch]`` positions of the trajectories in their dataset
            (positions, which change with every split or selection).
        feature_names, static_names: what the last axes of ``values`` and
            ``static`` hold.
        ids: the store's trajectory ids (its ``trajectory`` coordinate, e.g.
            subject numbers), one per row; positions when it has none.
    """

    mode: str
    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    time_mask: torch.Tensor
    static: torch.Tensor
    index: torch.Tensor
    feature_names: tuple[str, ...] = ()
    static_names: tuple[str, ...] = ()
    ids: tuple[Hashable, ...] = ()

    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    def static_by_name(self) -> dict[str, torch.Tensor]:
        """The static vector as ``{name: [batch] tensor}``, so no code depends on the column order."""
        return {name: self.static[:, k] for k, name in enumerate(self.static_names)}

    def solve_times(self) -> torch.Tensor:
        """Output times for ``neurode.solve``: ``[T]`` (union) or ``[batch, N]`` NaN-padded (padded).

        In padded mode this is the per-sample time grid the batch-parallel
        loop takes directly (each trajectory solved on its own times, no union
        grid); the solution's ``ys[j, b]`` then lines up with ``values[b, j]``.
        """
        if self.mode == UNION:
            return self.times
        return torch.where(self.time_mask, self.times, torch.full_like(self.times, float("nan")))

    def to(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        time_dtype: torch.dtype | None = None,
        non_blocking: bool = False,
    ) -> TrajectoryBatch:
        """A copy on ``device``; values and static cast to ``dtype``, times to ``time_dtype``.

        Times keep their dtype (float64) unless ``time_dtype`` says otherwise:
        the solvers integrate in float64 time whatever the state's dtype, and
        float32 cannot tell apart times that differ in the 8th digit.
        """
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                cast = time_dtype if f.name == "times" else dtype
                cast = cast if cast is not None and value.is_floating_point() else None
                moved[f.name] = value.to(device=device, dtype=cast, non_blocking=non_blocking)
        return replace(self, **moved)

    def pin_memory(self) -> TrajectoryBatch:
        """Pinned copy, so ``DataLoader(pin_memory=True)`` works with this type."""
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).pin_memory()
                for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )


def _common(items: Sequence[Trajectory]) -> tuple[torch.Tensor, torch.Tensor, int, torch.dtype]:
    if not items:
        raise DataError("cannot collate an empty batch")
    static = torch.stack([item.static for item in items])
    index = torch.tensor([item.index for item in items], dtype=torch.long)
    return static, index, items[0].values.shape[-1], items[0].values.dtype


def _ids(items: Sequence[Trajectory]) -> tuple[Hashable, ...]:
    return tuple(item.index if item.id is None else item.id for item in items)


def check_increasing(item: Trajectory) -> None:
    """Raise unless ``item.times`` increase strictly: a repeated time would merge two observations."""
    times = item.times
    if times.shape[0] > 1:
        steps = times[1:] - times[:-1]
        bad = torch.nonzero(~(steps > 0))
        if bad.shape[0]:
            j = int(bad[0, 0])
            what = "repeats" if bool(times[j + 1] == times[j]) else "decreases"
            name = item.index if item.id is None else item.id
            raise DataError(
                f"trajectory {name!r}: time {what} at observations {j} and {j + 1} "
                f"({float(times[j]):g} then {float(times[j + 1]):g}); expected strictly increasing times "
                "(a repeated time would merge two observations into one)"
            )


def collate_union(items: Sequence[Trajectory], *, feature_names=(), static_names=()) -> TrajectoryBatch:
    """Batch on the sorted union of all observation times, with exact masks.

    Raises:
        DataError: an item's times repeat or decrease. Two observations at one
            time cannot both sit in one slot of the union grid, and dropping
            one silently is never acceptable.
    """
    static, index, n_features, dtype = _common(items)
    for item in items:
        check_increasing(item)
    times = torch.unique(torch.cat([item.times for item in items]), sorted=True)
    batch, length = len(items), times.shape[0]
    values = torch.zeros(batch, length, n_features, dtype=dtype)
    mask = torch.zeros(batch, length, n_features, dtype=torch.bool)
    for b, item in enumerate(items):
        # Exact equality: an item's times are elements of the union.
        where = torch.searchsorted(times, item.times)
        values[b, where] = item.values
        mask[b, where] = item.mask
    return TrajectoryBatch(
        UNION, times, values, mask, mask.any(-1), static, index, tuple(feature_names), tuple(static_names), _ids(items)
    )


def collate_padded(items: Sequence[Trajectory], *, feature_names=(), static_names=()) -> TrajectoryBatch:
    """Batch keeping each trajectory's own times, padded to the longest."""
    static, index, n_features, dtype = _common(items)
    batch = len(items)
    length = max(item.times.shape[0] for item in items)
    times = torch.zeros(batch, length, dtype=items[0].times.dtype)
    values = torch.zeros(batch, length, n_features, dtype=dtype)
    mask = torch.zeros(batch, length, n_features, dtype=torch.bool)
    time_mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, item in enumerate(items):
        n = item.times.shape[0]
        times[b, :n] = item.times
        if 0 < n < length:
            times[b, n:] = item.times[-1]
        values[b, :n] = item.values
        mask[b, :n] = item.mask
        time_mask[b, :n] = True
    return TrajectoryBatch(
        PADDED, times, values, mask, time_mask, static, index, tuple(feature_names), tuple(static_names), _ids(items)
    )


def collate(items: Sequence[Trajectory], *, mode: str = UNION, feature_names=(), static_names=()) -> TrajectoryBatch:
    """Collate in ``mode`` (``"union"`` or ``"padded"``)."""
    if mode == UNION:
        return collate_union(items, feature_names=feature_names, static_names=static_names)
    if mode == PADDED:
        return collate_padded(items, feature_names=feature_names, static_names=static_names)
    raise DataError(f"unknown batching mode {mode!r}, expected one of {', '.join(MODES)}")
