"""The ``gridded`` loader: trajectories sharing one time axis.

Plain gridded output of a simulation or a measurement campaign: a 1-d time
coordinate and variables ``(trajectory, time[, component])``, or
``(time, ...)`` for a single trajectory. The dimension names need not be
neurode's: ``time_dim``, ``trajectory_dim`` and ``component_dim`` say which is
which. Chosen by name only (it claims no suffix); the file format (zarr or
netCDF) is detected.
"""

from __future__ import annotations

import os
from typing import Any

import neurode
from neurode.framework.loader import AbstractLoader


class GriddedLoader(AbstractLoader):
    """Data on one shared time axis in zarr or netCDF, read lazily."""

    name = "gridded"
    suffixes = ()

    def open(self, path: str | os.PathLike, *, variables: list[str] | None = None, **kwargs: Any):
        """Open lazily. Options: ``time_dim`` (default ``time``), ``trajectory_dim``,
        ``component_dim``, ``format``, ``engine``, ``chunks``."""
        from neurode.datasets.formats import open_store
        from neurode.datasets.layouts import GRIDDED

        return open_store(path, variables=variables, layout=GRIDDED, **kwargs)


@neurode.hookimpl
def register_loaders(register):
    register(GriddedLoader.name, GriddedLoader)
