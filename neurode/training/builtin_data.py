"""The built-in dataset bare ``neurode train`` trains on, simulated once and cached per user.

A damped harmonic oscillator (``neurode.datasets.systems``: mass, stiffness
and damping drawn per trajectory, stored as static variables) observed at
irregular, per-trajectory times with 10 % of values missing and a little noise:
a small problem with everything the trainer handles. It is generated with the
same machinery as ``neurode simulate`` into the user cache directory
(platformdirs; ``NEURODE_CACHE`` overrides it) and written atomically, so two
processes that race to create it both end with a whole store.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NEURODE_CACHE"

#: the simulation behind the built-in dataset (its name carries a version: change one, change the other)
BUILTIN_NAME = "oscillator-irregular-v1"
BUILTIN_SIMULATION = {
    "system": "oscillator",
    "n_trajectories": 256,
    "n_obs": 40,
    "sampling": "irregular",
    "missing": 0.1,
    "noise": 0.01,
    "seed": 0,
}


def cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("neurode"))


def builtin_dataset_path() -> Path:
    """The built-in dataset's store, simulated on first use."""
    path = cache_dir() / f"{BUILTIN_NAME}.zarr"
    if not path.exists():
        from neurode.datasets.errors import StoreExistsError
        from neurode.datasets.io import write_zarr
        from neurode.datasets.simulation import simulate

        options = dict(BUILTIN_SIMULATION)
        ds = simulate(options.pop("system"), **options)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_zarr(ds, path)
        except StoreExistsError:
            pass  # another process finished it first: its store is whole (write_zarr is atomic)
    return path
