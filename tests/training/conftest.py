"""A tiny stored dataset and a fast training config for trainer tests."""

from __future__ import annotations

import pytest

from neurode.datasets import irregular_example
from neurode.datasets.io import write_zarr


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "example.zarr"
    write_zarr(irregular_example(24, 6, seed=3), path)
    return path


@pytest.fixture
def fast_config(store, tmp_path):
    """Three epochs of three steps on 24 tiny trajectories; a few seconds."""
    return {
        "data": {"path": str(store)},
        "dynamics": {"options": {"width": 8, "depth": 1}},
        "training": {"epochs": 3, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
        "runtime": {"threads": 1, "device": "cpu"},
        "output": {"dir": str(tmp_path / "run")},
    }
