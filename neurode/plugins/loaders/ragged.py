"""The ``ragged`` loader: CF discrete-sampling-geometry ragged arrays, insisted upon.

CF conventions section 9.3 stores trajectories of different lengths as
ragged arrays: contiguous (a count variable with ``sample_dimension``,
conventionally ``rowSize``) or indexed (an index variable with
``instance_dimension``). The ``zarr`` and ``netcdf`` loaders already detect
these layouts; choosing ``loader="ragged"`` by name additionally rejects a
store that is *not* ragged, which is what a pipeline expecting ragged input
wants to hear about. The file format (zarr or netCDF) is detected. Chosen by
name only: it claims no suffix.
"""

from __future__ import annotations

import os
from typing import Any

import neurode
from neurode.framework.loader import AbstractLoader


class RaggedLoader(AbstractLoader):
    """CF contiguous and indexed ragged arrays in zarr or netCDF, read lazily."""

    name = "ragged"
    suffixes = ()

    def open(self, path: str | os.PathLike, *, variables: list[str] | None = None, **kwargs: Any):
        """Open lazily. Options: ``format`` (``zarr``/``netcdf``), ``engine``, ``chunks``."""
        from neurode.datasets.formats import open_store
        from neurode.datasets.layouts import RAGGED_CONTIGUOUS, RAGGED_INDEXED

        return open_store(path, variables=variables, accept_layouts=(RAGGED_CONTIGUOUS, RAGGED_INDEXED), **kwargs)


@neurode.hookimpl
def register_loaders(register):
    register(RaggedLoader.name, RaggedLoader)
