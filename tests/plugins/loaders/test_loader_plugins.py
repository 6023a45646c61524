"""The built-in loaders are plain plugins, and a third-party loader is found the same way."""

from __future__ import annotations

import importlib.metadata
import textwrap

import numpy as np
import pytest
import xarray as xr

import neurode
from neurode.datasets.errors import SchemaError
from neurode.datasets.examples import irregular_example
from neurode.datasets.io import write_zarr
from neurode.datasets.layouts import to_gridded, to_ragged_contiguous, to_ragged_indexed
from neurode.datasets.schema import canonical_order, is_lazy, validate
from neurode.framework import registry as registry_module
from neurode.framework.loader import AbstractLoader

BUILTIN_LOADERS = {
    "zarr": "neurode.plugins.loaders.zarr_store",
    "netcdf": "neurode.plugins.loaders.netcdf",
    "ragged": "neurode.plugins.loaders.ragged",
    "gridded": "neurode.plugins.loaders.gridded",
}


@pytest.fixture
def example():
    return irregular_example(n_trajectories=6, max_obs=5, seed=3)


def test_builtin_loaders_are_registered_by_neurode_through_the_hook():
    registry = neurode.get_registry()
    for name, module in BUILTIN_LOADERS.items():
        component = registry.get("loader", name)
        assert component.source.builtin and component.source.plugin == module
        assert isinstance(component.obj(), AbstractLoader)
        assert component.description


@pytest.mark.parametrize(
    ("path", "claimed_by"),
    [
        ("a.zarr", {"zarr"}),
        ("A.ZARR", {"zarr"}),
        ("b.nc", {"netcdf"}),
        ("b.nc4", {"netcdf"}),
        ("c.h5", {"netcdf"}),
        ("d.csv", set()),
    ],
)
def test_loaders_claim_paths_by_suffix(path, claimed_by):
    registry = neurode.get_registry()
    claims = {name for name in BUILTIN_LOADERS if registry.get("loader", name).obj().can_open(path)}
    assert claims == claimed_by


def test_zarr_loader_reads_format_2_and_3_with_variable_selection(example, tmp_path):
    loader = neurode.get_registry().get("loader", "zarr").obj()
    for zarr_format in (2, 3):
        path = write_zarr(example, tmp_path / f"v{zarr_format}.zarr", zarr_format=zarr_format)
        ds = loader.open(path, variables=["v"])
        assert is_lazy(ds) and list(ds.data_vars) == ["time", "v"]
        xr.testing.assert_identical(ds.v.compute(), example.v)


def test_netcdf_loader_reads_canonical_and_ragged_files(example, tmp_path):
    loader = neurode.get_registry().get("loader", "netcdf").obj()
    example.to_netcdf(tmp_path / "canonical.nc")
    to_ragged_contiguous(example).to_netcdf(tmp_path / "ragged.nc")
    for name in ("canonical.nc", "ragged.nc"):
        ds = loader.open(tmp_path / name)
        assert is_lazy(ds)
        xr.testing.assert_identical(canonical_order(ds.compute()), canonical_order(example))


def test_ragged_loader_reads_both_ragged_layouts_and_refuses_others(example, tmp_path):
    write_zarr(to_ragged_contiguous(example), tmp_path / "contiguous.zarr")
    to_ragged_indexed(example, shuffle_seed=0).to_netcdf(tmp_path / "indexed.nc")
    write_zarr(example, tmp_path / "padded.zarr")
    for name in ("contiguous.zarr", "indexed.nc"):
        ds = neurode.load(tmp_path / name, loader="ragged", variables=["x"])
        xr.testing.assert_identical(ds.x.compute(), example.x)
    with pytest.raises(
        SchemaError,
        match="(?s)padded.zarr: .*stored in the canonical layout, expected ragged_contiguous or ragged_indexed",
    ):
        neurode.load(tmp_path / "padded.zarr", loader="ragged")


def test_gridded_loader_takes_dimension_names(tmp_path):
    rng = np.random.default_rng(0)
    grid = xr.Dataset(
        {"temp": (("run", "t"), rng.normal(size=(3, 4)), {"units": "K", "long_name": "temperature"})},
        coords={"t": ("t", np.arange(4.0), {"units": "s"})},
    )
    grid.to_netcdf(tmp_path / "grid.nc")
    ds = neurode.load(tmp_path / "grid.nc", loader="gridded", time_dim="t", trajectory_dim="run")
    validate(ds)
    np.testing.assert_array_equal(ds.temp.values, grid.temp.values)
    np.testing.assert_array_equal(ds.time.values, np.broadcast_to(np.arange(4.0), (3, 4)))


def test_gridded_store_is_also_detected_by_the_format_loaders(example, tmp_path):
    shared = example.assign(
        time=(example.time.dims, np.broadcast_to(np.arange(5.0), (6, 5)).copy(), example.time.attrs)
    )
    shared = shared.fillna(0.0)
    write_zarr(to_gridded(shared), tmp_path / "grid.zarr", zarr_format=2)
    xr.testing.assert_identical(neurode.load(tmp_path / "grid.zarr").compute(), canonical_order(shared))


THIRD_PARTY = '''
"""A third-party loader: CSV rows (trajectory, time, x), via neurode's ragged normalisation."""
import pandas as pd
import xarray as xr

import neurode
from neurode.datasets.layouts import to_canonical
from neurode.framework.loader import AbstractLoader


class CsvTrajectories(AbstractLoader):
    """CSV files of (trajectory, time, x) rows."""

    name = "csv_trajectories"
    suffixes = (".traj.csv",)

    def open(self, path, *, variables=None, **kwargs):
        table = pd.read_csv(path)
        ragged = xr.Dataset(
            {
                "time": ("obs", table["time"].to_numpy(float), {"units": "s", "long_name": "time"}),
                "x": ("obs", table["x"].to_numpy(float), {"units": "m", "long_name": "x"}),
                "row": ("obs", table["trajectory"].to_numpy(), {"instance_dimension": "trajectory"}),
            }
        ).chunk()
        ragged = ragged.assign_coords(trajectory=("trajectory", sorted(set(table["trajectory"]))))
        return to_canonical(ragged)


@neurode.hookimpl
def register_loaders(register):
    register(CsvTrajectories.name, CsvTrajectories)
'''


def test_a_third_party_loader_is_chosen_by_its_suffix(tmp_path, monkeypatch):
    (tmp_path / "acme_traj_loader.py").write_text(textwrap.dedent(THIRD_PARTY))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_point = importlib.metadata.EntryPoint("acme", "acme_traj_loader", registry_module.ENTRY_POINT_GROUP)
    registry = registry_module.Registry(builtins=tuple(BUILTIN_LOADERS.values()), entry_points=[entry_point])
    monkeypatch.setattr(registry_module, "_registry", registry)

    csv = tmp_path / "runs.traj.csv"
    csv.write_text("trajectory,time,x\n1,0.5,2.0\n0,0.0,1.0\n0,1.0,3.0\n")
    ds = neurode.load(csv)

    assert not registry.get("loader", "csv_trajectories").source.builtin
    np.testing.assert_array_equal(ds.time.values, [[0.0, 1.0], [0.5, np.nan]])
    np.testing.assert_array_equal(ds.x.values, [[1.0, 3.0], [2.0, np.nan]])
