"""A run's data: the store read lazily, split by trajectory, normalised with training statistics.

Nothing here knows a model. :class:`RunData` holds the three splits as
:class:`~neurode.datasets.TrajectoryDataset` objects sharing one feature
layout and one :class:`~neurode.datasets.NormalizationStats` computed on the
training split alone, and hands out collated batches in a fixed order for a
given (seed, epoch), which is what makes a resumed run bitwise exact.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neurode.datasets.batch import PADDED, TrajectoryBatch
from neurode.datasets.errors import DataError
from neurode.datasets.features import FeatureLayout
from neurode.datasets.normalization import NormalizationStats
from neurode.datasets.splits import split_by_trajectory
from neurode.datasets.trajectory_dataset import TrajectoryDataset

#: splits smaller than this are read into memory once rather than per batch
IN_MEMORY_BYTES = 256 * 2**20
SPLITS = ("train", "val", "test")


def fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over a store's content (every file of a zarr directory, by relative path)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: a permutation fixed by (seed, epoch) alone.

    Independent of any RNG state, so a run resumed mid-epoch draws the same
    batches as one that never stopped.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


@dataclass
class RunData:
    """The splits of one dataset, ready for a model."""

    path: Path
    splits: dict[str, TrajectoryDataset]
    normalization: NormalizationStats
    layout: FeatureLayout
    units: dict[str, str]
    #: earliest and latest observation time of the training split: the time range a model is fitted on
    train_time_range: tuple[float, float] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        variables: Sequence[str] | None = None,
        static: Sequence[str] | None = None,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        normalization: NormalizationStats | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> RunData:
        from neurode.datasets.io import load

        ds = load(path)
        layout = FeatureLayout.from_dataset(ds, variables, static)
        parts = split_by_trajectory(ds, tuple(split), seed=split_seed)
        if parts["train"].sizes["trajectory"] == 0:
            raise DataError(f"{path}: the training split is empty ({ds.sizes['trajectory']} trajectories, "
                            f"fractions {list(split)})")
        if normalization is None:
            normalization = NormalizationStats.compute(parts["train"], layout)
        splits = {}
        for name, part in parts.items():
            if part.nbytes < IN_MEMORY_BYTES:
                part = part.load()
            splits[name] = TrajectoryDataset(part, variables=layout.variables, static=layout.static,
                                             normalization=normalization, mode=PADDED, dtype=dtype)
        units = {name: str(ds[name].attrs.get("units", "")) for name in (*layout.variables, *layout.static)}
        units["time"] = str(ds["time"].attrs.get("units", ""))
        train_time = parts["train"]["time"]
        time_range = (float(train_time.min(skipna=True)), float(train_time.max(skipna=True)))
        return cls(Path(path), splits, normalization, layout, units, time_range)

    @property
    def n_features(self) -> int:
        return self.layout.n_features

    @property
    def n_static(self) -> int:
        return len(self.layout.static)

    def batch(self, split: str, indices: Sequence[int], device=None, dtype=None) -> TrajectoryBatch:
        dataset = self.splits[split]
        batch = dataset.collate_fn(dataset.__getitems__([int(i) for i in indices]))
        return batch.to(device=device, dtype=dtype)

    def batches(self, split: str, batch_size: int, device=None, dtype=None) -> Iterator[TrajectoryBatch]:
        """The split in order, in batches (validation, evaluation, prediction)."""
        n = len(self.splits[split])
        for start in range(0, n, batch_size):
            yield self.batch(split, range(start, min(start + batch_size, n)), device, dtype)

