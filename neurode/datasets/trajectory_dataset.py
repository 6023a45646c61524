"""The bridge to torch: a map-style ``Dataset`` over a canonical trajectory dataset.

``TrajectoryDataset(ds)`` keeps ``ds`` lazy. Items are read when drawn: the
DataLoader's batched fetch calls :meth:`TrajectoryDataset.__getitems__` with
a whole batch of indices, which becomes one dask computation reading only
the chunks those trajectories live in. A store larger than memory therefore
streams through training at the memory cost of a few chunks.

It is an ordinary map-style dataset (``__len__`` and integer indices), so
``DistributedSampler`` shards it across ranks like any other; use
``collate_fn=dataset.collate_fn`` to get :class:`~neurode.datasets.batch.TrajectoryBatch`.

Times are checked as they are read: every trajectory drawn must have
strictly increasing times, whatever the store claimed, at no extra read.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import dask
import numpy as np
import torch
import xarray as xr

from neurode.datasets.batch import MODES, UNION, Trajectory, check_increasing, collate
from neurode.datasets.errors import DataError, SchemaError
from neurode.datasets.features import FeatureLayout
from neurode.datasets.normalization import NormalizationStats
from neurode.datasets.schema import TIME, TRAJECTORY, time_violations, validate


class TrajectoryDataset(torch.utils.data.Dataset):
    """Trajectories of a canonical dataset as torch tensors.

    Args:
        ds: a canonical trajectory dataset (lazy or in memory).
        variables: state variables making up the features, in this order
            (default: all, in order of name).
        static: per-trajectory variables making up the static vector, in
            this order (default: all, in order of name, which is the same
            whether the store is zarr 3, zarr 2 or netCDF; zarr 3 keeps no
            order). ``static_names`` and ``repr(dataset)`` show the order.
        normalization: statistics (from the training split) to apply to
            values and static vectors; ``None`` leaves them as stored.
        mode: batching mode of :attr:`collate_fn`, ``"union"`` or ``"padded"``.
        dtype: floating dtype of values and static tensors.
        time_dtype: floating dtype of times; float64 by default, as the
            solvers keep time.
        check_times: check that times increase strictly within every
            trajectory now, when ``time`` is in memory (a lazy store is
            checked by ``neurode.load``, and each batch as it is read).
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
        time_dtype: torch.dtype = torch.float64,
        check_times: bool = True,
    ) -> None:
        validate(ds, check_values=False)
        for label, value in (("dtype", dtype), ("time_dtype", time_dtype)):
            if not isinstance(value, torch.dtype) or not value.is_floating_point:
                # an integer dtype would truncate values (and times: 5.25 and 5.5 both become 5)
                raise DataError(f"{label} must be a floating torch dtype (e.g. torch.float32), got {value!r}")
        if check_times and ds[TIME].chunks is None:
            problems = time_violations(ds)
            if problems:
                raise SchemaError(problems, hint="(TrajectoryDataset(..., check_times=False) skips this check)")
        if mode not in MODES:
            raise DataError(f"unknown batching mode {mode!r}, expected one of {', '.join(MODES)}")
        self.layout = FeatureLayout.from_dataset(ds, variables, static)
        if normalization is not None:
            normalization.check_layout(self.layout)
        self.ds = ds[[TIME, *self.layout.variables, *self.layout.static]]
        self.normalization = normalization
        self.mode = mode
        self.dtype = dtype
        self.time_dtype = time_dtype
        self.ids = np.asarray(ds[TRAJECTORY].values) if TRAJECTORY in ds.coords else None

    def __repr__(self) -> str:
        return (
            f"TrajectoryDataset({len(self)} trajectories, mode={self.mode!r}, "
            f"features={list(self.feature_names)}, static={list(self.static_names)})"
        )

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
        wrong = [i for i in indices if isinstance(i, bool) or not isinstance(i, (int, np.integer))
                 and not (isinstance(i, torch.Tensor) and i.numel() == 1 and not i.is_floating_point())]
        if wrong:  # int(1.5) would silently return trajectory 1
            raise TypeError(f"trajectory indices must be integers, got {wrong[:8]!r}")
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
            item = Trajectory(
                index=position,
                times=torch.as_tensor(times[row, :count], dtype=self.time_dtype),
                values=torch.as_tensor(values[row, :count], dtype=self.dtype),
                mask=torch.as_tensor(observed[row, :count]),
                static=torch.as_tensor(static[row], dtype=self.dtype),
                id=None if self.ids is None else _plain(self.ids[position]),
            )
            if np.isnan(times[row, count:]).all():
                check_increasing(item)
            else:
                raise DataError(
                    f"trajectory {item.id if item.id is not None else position!r}: observations after NaN padding; "
                    "expected NaN only after the last observation"
                )
            items.append(item)
        return items


def _plain(value: object) -> object:
    """A numpy scalar id as the Python value it is (``np.int64(3)`` -> ``3``)."""
    return value.item() if isinstance(value, np.generic) else value

