"""Fixtures for the data layer: a small irregular dataset and a zarr read counter."""

from __future__ import annotations

import pytest
import zarr.storage

from neurode.datasets.examples import irregular_example


@pytest.fixture
def example():
    """12 irregular trajectories, a scalar and a vector variable with missingness, a parameter."""
    return irregular_example()


class ReadLog:
    """Keys read from local zarr stores while installed."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def chunks(self, variable: str) -> list[str]:
        """Chunk keys (not metadata) read for ``variable``."""
        return [
            k for k in self.keys if k.startswith(f"{variable}/") and not k.endswith(("zarr.json", ".zarray", ".zattrs"))
        ]

    def clear(self) -> None:
        self.keys.clear()


@pytest.fixture
def zarr_reads(monkeypatch):
    """Record every key read through ``zarr.storage.LocalStore`` (what xarray uses for a path)."""
    log = ReadLog()
    original = zarr.storage.LocalStore.get

    async def get(self, key, prototype=None, byte_range=None):
        log.keys.append(key)
        return await original(self, key, prototype, byte_range)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)
    return log
