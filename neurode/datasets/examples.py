"""A small random dataset that exercises every feature of the schema.

For tests, documentation and loader authors: :func:`irregular_example` builds
a canonical dataset with per-trajectory observation counts (NaN padding),
irregular times, a scalar and a vector state variable each observed at its
own subset of times, and a per-trajectory parameter. No solver involved, so
it is instant and depends on nothing but numpy and xarray.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from neurode.datasets.schema import (
    COMPONENT,
    DATASET_ATTRS,
    OBS,
    TIME,
    TRAJECTORY,
    TRAJECTORY_ID_ATTRS,
    cf_attrs,
)


def irregular_example(
    n_trajectories: int = 12,
    max_obs: int = 9,
    *,
    n_components: int = 2,
    missing: float = 0.25,
    seed: int = 0,
) -> xr.Dataset:
    """A canonical dataset of random irregular trajectories.

    Variables: ``x(trajectory, obs)`` (units m), ``v(trajectory, obs,
    component)`` (units m s-1) and ``damping(trajectory)`` (units s-1).
    Trajectory ``i`` has between 2 and ``max_obs`` observations at sorted
    random times in [0, 10) s; each variable misses each of them with
    probability ``missing``, but every observation time has at least one
    variable observed.
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, max_obs + 1, n_trajectories)
    counts[0] = max_obs  # the longest trajectory sets the padded width
    time = np.full((n_trajectories, max_obs), np.nan)
    for i, count in enumerate(counts):
        time[i, :count] = np.sort(rng.choice(np.arange(0.0, 10.0, 0.25), size=count, replace=False))
    valid = ~np.isnan(time)
    x_seen = valid & (rng.random(valid.shape) >= missing)
    v_seen = valid & (rng.random(valid.shape) >= missing)
    v_seen |= valid & ~x_seen  # never a time at which nothing was seen
    x = np.where(x_seen, rng.normal(size=valid.shape), np.nan)
    v = np.where(v_seen[..., None], rng.normal(size=(*valid.shape, n_components)), np.nan)
    return xr.Dataset(
        {
            TIME: ((TRAJECTORY, OBS), time, cf_attrs("s", "time", standard_name="time")),
            "x": ((TRAJECTORY, OBS), x, cf_attrs("m", "position")),
            "v": ((TRAJECTORY, OBS, COMPONENT), v, cf_attrs("m s-1", "velocity")),
            "damping": ((TRAJECTORY,), rng.uniform(0.1, 0.5, n_trajectories), cf_attrs("s-1", "damping rate")),
        },
        coords={TRAJECTORY: (TRAJECTORY, np.arange(n_trajectories), TRAJECTORY_ID_ATTRS)},
        attrs=dict(DATASET_ATTRS),
    )
