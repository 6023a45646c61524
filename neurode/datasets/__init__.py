"""neurode.datasets: the trajectory schema, stored data, simulators and the bridge to torch.

- ``schema``: the canonical ``xarray`` form of irregular trajectories, ``validate``.
- ``layouts``: CF ragged and gridded layouts, normalised to the schema.
- ``cf_time``: CF time axes (``"days since ..."``, datetimes) as float time with units.
- ``io``: ``load`` (through the registered loaders) and ``write_zarr`` (atomic).
- ``systems``, ``sampling``, ``simulation``: physical systems solved with
  neurode, observed irregularly with missingness and noise.
- ``trajectory_dataset``, ``batch``, ``features``: torch ``Dataset``, typed
  batches in two modes.
- ``splits``, ``normalization``: train/val/test and observed/forecast splits,
  statistics from the training split.
- ``info``: the summary ``neurode data info`` prints.

Names are re-exported lazily (torch and xarray load on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "validate": "neurode.datasets.schema",
    "violations": "neurode.datasets.schema",
    "select_variables": "neurode.datasets.schema",
    "load": "neurode.datasets.io",
    "write_zarr": "neurode.datasets.io",
    "to_canonical": "neurode.datasets.layouts",
    "decode_cf_times": "neurode.datasets.cf_time",
    "convert_time_unit": "neurode.datasets.cf_time",
    "to_ragged_contiguous": "neurode.datasets.layouts",
    "to_ragged_indexed": "neurode.datasets.layouts",
    "to_gridded": "neurode.datasets.layouts",
    "SYSTEMS": "neurode.datasets.systems",
    "System": "neurode.datasets.systems",
    "get_system": "neurode.datasets.systems",
    "simulate": "neurode.datasets.simulation",
    "TrajectoryDataset": "neurode.datasets.trajectory_dataset",
    "TrajectoryBatch": "neurode.datasets.batch",
    "Trajectory": "neurode.datasets.batch",
    "collate": "neurode.datasets.batch",
    "collate_union": "neurode.datasets.batch",
    "collate_padded": "neurode.datasets.batch",
    "FeatureLayout": "neurode.datasets.features",
    "NormalizationStats": "neurode.datasets.normalization",
    "split_by_trajectory": "neurode.datasets.splits",
    "split_by_time": "neurode.datasets.splits",
    "summarize": "neurode.datasets.info",
    "irregular_example": "neurode.datasets.examples",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'neurode.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
