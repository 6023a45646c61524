"""The ``netcdf`` loader: netCDF-3/4 files in any trajectory layout.

Claims ``.nc``, ``.nc4``, ``.netcdf``, ``.cdf``, ``.h5`` and ``.hdf5`` files.
Reading needs an engine xarray knows (``h5netcdf``, ``netCDF4`` or, for
netCDF-3, ``scipy``); without one, opening says which to install rather than
failing obscurely. CF ragged arrays are the usual layout of trajectory data in
netCDF and are normalised to the canonical padded form.
"""

from __future__ import annotations

import os
from typing import Any

import neurode
from neurode.framework.loader import AbstractLoader


class NetCDFLoader(AbstractLoader):
    """netCDF files (via h5netcdf, netCDF4 or scipy), any trajectory layout, read lazily."""

    name = "netcdf"
    suffixes = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")

    def open(self, path: str | os.PathLike, *, variables: list[str] | None = None, **kwargs: Any):
        """Open lazily. Options: ``engine``, ``chunks``, ``layout``, and for
        gridded data ``time_dim``, ``trajectory_dim``, ``component_dim``."""
        from neurode.datasets.formats import NETCDF, open_store

        return open_store(path, format=NETCDF, variables=variables, **kwargs)


@neurode.hookimpl
def register_loaders(register):
    register(NetCDFLoader.name, NetCDFLoader)
