"""A summary of a trajectory dataset: what ``neurode data info`` prints.

Sizes, every variable with its role, dims, units and long name, how many
observations each trajectory has, the time span, and how much is missing.
"Missing" counts values absent at a trajectory's observation times, never
the padding after its last time (padding is layout, not missing data).

All numbers come from one dask computation, so a store larger than memory is
summarised in one streaming pass.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import xarray as xr

from neurode.datasets.schema import OBS, TIME, TRAJECTORY, per_trajectory_variables, state_variables


def _plain(value: Any) -> Any:
    """Attribute values as JSON-ready Python objects."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def summarize(ds: xr.Dataset) -> dict[str, Any]:
    """A JSON-ready description of a canonical dataset (see the module docstring)."""
    time = ds[TIME]
    present = time.notnull()
    counts = present.sum(OBS).data
    # no trajectories (or no observations): an empty reduction has no min; report None as for all-NaN times
    empty = time.size == 0
    t_min, t_max = (np.nan, np.nan) if empty else (time.min().data, time.max().data)
    states = state_variables(ds)
    missing = {}
    totals = {}
    for name in states:
        var = ds[name]
        slots = present.broadcast_like(var) if var.ndim > 2 else present
        missing[name] = (var.isnull() & slots).sum().data
        totals[name] = slots.sum().data
    counts, t_min, t_max, missing, totals = dask.compute(counts, t_min, t_max, missing, totals)
    counts = np.asarray(counts, dtype=np.int64)

    variables = []
    for name, var in ds.data_vars.items():
        role = (
            "time" if name == TIME
            else "state" if name in states
            else "per_trajectory" if name in per_trajectory_variables(ds)
            else "other"
        )
        entry = {
            "name": str(name),
            "role": role,
            "dims": [str(d) for d in var.dims],
            "dtype": str(var.dtype),
            "units": var.attrs.get("units"),
            "long_name": var.attrs.get("long_name"),
        }
        if role == "state":
            total = int(totals[name])
            entry["observed"] = total - int(missing[name])
            entry["missing_fraction"] = float(missing[name]) / total if total else None
        variables.append(entry)

    all_missing = sum(int(m) for m in missing.values())
    all_total = sum(int(t) for t in totals.values())
    return {
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
        "trajectories": int(ds.sizes[TRAJECTORY]),
        "variables": variables,
        "observations_per_trajectory": {
            "min": int(counts.min()) if counts.size else 0,
            "median": float(np.median(counts)) if counts.size else 0.0,
            "mean": float(counts.mean()) if counts.size else 0.0,
            "max": int(counts.max()) if counts.size else 0,
            "total": int(counts.sum()),
            "counts": counts.tolist(),
        },
        "time": {
            "units": time.attrs.get("units"),
            "min": None if np.isnan(t_min) else float(t_min),
            "max": None if np.isnan(t_max) else float(t_max),
        },
        "missing_fraction": all_missing / all_total if all_total else None,
        "attrs": {str(k): _plain(v) for k, v in ds.attrs.items()},
    }
