"""The bridge to torch: a map-style ``Dataset`` over a canonical trajectory dataset.

``TrajectoryDataset(ds)`` keeps ``ds`` lazy. Items are read when drawn: the
DataLoader's batched fetch calls :meth:`TrajectoryDataset.__getitems__` with
a whole batch of indices, which becomes one dask computation reading only
the chunks those trajectories live in. A store larger than memory therefore
streams through training at the memory cost of a few chunks.

It is an ordinary map-style dataset (``__len__`` and integer indices), so
``DistributedSampler`` shards it across ranks like any other; use
``collate_fn=dataset.collate_fn`` to get :class:`~neurode.datasets.batch.TrajectoryBatch`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import dask
import numpy as np
import torch
import xarray as xr

from neurode.datasets.batch import MODES, UNION, Trajectory, collate
from neurode.datasets.errors import DataError
from neurode.datasets.features import FeatureLayout
from neurode.datasets.normalization import NormalizationStats
from neurode.datasets.schema import TIME, TRAJECTORY, validate


class TrajectoryDataset(torch.utils.data.Dataset):
    """Trajectories of a canonical dataset as torch tensors.

    Args:
        ds: a canonical trajectory dataset (lazy or in memory).
        variables: state variables making up the features, in this order
            (default: all, by name).
        static: per-trajectory variables making up the static vector
            (default: all, by name).
        normalization: statistics (from the training split) to apply to
            values and static vectors; ``None`` leaves them as stored.
        mode: batching mode of :attr:`collate_fn`, ``"union"`` or ``"padded"``.
        dtype: floating dtype of times, values and static tensors.
    """

    def __init__(
        self,
        ds: xr.Dataset,
        *,
        variables: Sequence[str] | None = None,
        static: Sequence[str] | None = None,
        normalization: NormalizationStats | None = None,
        mode: str = UNION,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        validate(ds, check_values=False)
        if mode not in MODES:
            raise DataError(f"unknown batching mode {mode!r}, expected one of {', '.join(MODES)}")
        self.layout = FeatureLayout.from_dataset(ds, variables, static)
        if normalization is not None:
            normalization.check_layout(self.layout)
        self.ds = ds[[TIME, *self.layout.variables, *self.layout.static]]
        self.normalization = normalization
        self.mode = mode
        self.dtype = dtype

    def __len__(self) -> int:
        return self.ds.sizes[TRAJECTORY]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.layout.feature_names

    @property
    def static_names(self) -> tuple[str, ...]:
        return self.layout.static

    @property
    def collate_fn(self):
        """The collate for :attr:`mode`, carrying the feature names (picklable for workers)."""
        return functools.partial(
            collate, mode=self.mode, feature_names=self.feature_names, static_names=self.static_names
        )

    def __getitem__(self, index: int) -> Trajectory:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Trajectory]:
        """Read a batch of trajectories with one computation (torch's batched fetch)."""
        n = len(self)
        positions = [int(i) + n if int(i) < 0 else int(i) for i in indices]
        bad = [i for i, p in zip(indices, positions, strict=True) if not 0 <= p < n]
        if bad:
            raise IndexError(f"trajectory indices {bad} out of range for {n} trajectories")
        subset = self.ds.isel({TRAJECTORY: positions})
        # Inside a DataLoader worker, dask's thread pool would multiply the
        # workers' threads; there one thread per worker reads its batch.
        scheduler = "synchronous" if torch.utils.data.get_worker_info() is not None else None
        with dask.config.set(scheduler=scheduler) if scheduler else contextlib.nullcontext():
            subset = subset.compute()
        times = np.asarray(subset[TIME].values, dtype=np.float64)
        values = self.layout.stack(subset)
        static = self.layout.stack_static(subset)
        if self.normalization is not None:
            values = self.normalization.normalize(values)
            static = self.normalization.normalize_static(static)
        observed = ~np.isnan(values)
        values = np.where(observed, values, 0.0)
        items = []
        for row, position in enumerate(positions):
            count = int(np.isfinite(times[row]).sum())
            items.append(
                Trajectory(
                    index=position,
                    times=torch.as_tensor(times[row, :count], dtype=self.dtype),
                    values=torch.as_tensor(values[row, :count], dtype=self.dtype),
                    mask=torch.as_tensor(observed[row, :count]),
                    static=torch.as_tensor(static[row], dtype=self.dtype),
                )
            )
        return items

