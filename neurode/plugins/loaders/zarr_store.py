"""The ``zarr`` loader: zarr stores, format 2 or 3, in any trajectory layout.

Registered through ``register_loaders`` like any third-party loader. Claims
paths ending in ``.zarr`` and directories holding zarr metadata
(``zarr.json`` or ``.zgroup``), whatever their name. The stored layout
(canonical, CF ragged, gridded) is detected and normalised; arrays stay
dask-backed with the stored chunks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import neurode
from neurode.framework.loader import AbstractLoader


class ZarrLoader(AbstractLoader):
    """Zarr stores (format 2 and 3), any trajectory layout, read lazily."""

    name = "zarr"
    suffixes = (".zarr",)

    def can_open(self, path: str | os.PathLike) -> bool:
        from neurode.datasets.formats import zarr_format_of

        return super().can_open(path) or zarr_format_of(Path(os.fspath(path))) is not None

    def open(self, path: str | os.PathLike, *, variables: list[str] | None = None, **kwargs: Any):
        """Open lazily. Options: ``chunks``, ``layout``, and for gridded data
        ``time_dim``, ``trajectory_dim``, ``component_dim``."""
        from neurode.datasets.formats import ZARR, open_store

        return open_store(path, format=ZARR, variables=variables, **kwargs)


@neurode.hookimpl
def register_loaders(register):
    register(ZarrLoader.name, ZarrLoader)
