"""neurode.load and write_zarr: loader choice, clear errors naming the path, atomic writes, lazy reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xarray as xr

import neurode
from neurode.datasets.errors import (
    DataError,
    NoLoaderError,
    SchemaError,
    StoreExistsError,
    StoreNotFoundError,
    StoreWriteError,
    UnknownVariableError,
    UnreadableStoreError,
)
from neurode.datasets.io import find_loader, write_zarr
from neurode.datasets.schema import canonical_order
from neurode.framework.errors import UnknownComponentError


@pytest.fixture
def store(example, tmp_path):
    return write_zarr(example, tmp_path / "example.zarr", chunk_trajectories=3)


def test_load_picks_the_loader_by_suffix_and_by_contents(store, tmp_path):
    assert find_loader(store).name == "zarr"
    renamed = tmp_path / "no_suffix"
    os.rename(store, renamed)
    assert find_loader(renamed).name == "zarr"  # a zarr directory is recognised by its metadata
    assert find_loader(tmp_path / "data.nc").name == "netcdf"


def test_load_by_name_and_with_a_variable_selection(store, example):
    ds = neurode.load(store, loader="zarr", variables=["x", "damping"])
    assert list(ds.data_vars) == ["time", "x", "damping"]
    xr.testing.assert_identical(ds.x.compute(), example.x)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(StoreNotFoundError, match=f"{tmp_path}/absent.zarr: no such file or directory"):
        neurode.load(tmp_path / "absent.zarr")


def test_unknown_loader_name_lists_the_known_ones(store):
    with pytest.raises(UnknownComponentError, match="unknown loader 'zar'; did you mean 'zarr'?"):
        neurode.load(store, loader="zar")


def test_path_no_loader_recognises(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("t,x\n0,1\n")
    with pytest.raises(NoLoaderError, match=r"data.csv: no loader recognises this path.*zarr \(.zarr\)"):
        neurode.load(path)


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("empty.zarr", lambda p: p.mkdir(), "not a zarr store"),
        (
            "corrupt.zarr",
            lambda p: (p.mkdir(), (p / "zarr.json").write_text("{not json")),
            "cannot read as a zarr format 3",
        ),
        ("junk.nc", lambda p: p.write_bytes(b"definitely not netCDF"), "cannot read as netCDF"),
    ],
)
def test_unreadable_stores_name_the_path_and_the_problem(tmp_path, name, make, expected):
    path = tmp_path / name
    make(path)
    with pytest.raises(UnreadableStoreError) as info:
        neurode.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_a_store_off_schema_names_the_path_and_every_problem(example, tmp_path):
    broken = example.assign_attrs(featureType="point")
    broken["x"].attrs = {}
    path = write_zarr(broken, tmp_path / "broken.zarr")
    with pytest.raises(SchemaError) as info:
        neurode.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: dataset does not match the neurode trajectory schema (3 problems)")
    assert "featureType is 'point'" in message and "'x' has no 'units'" in message


def test_value_problems_are_found_on_request(example, tmp_path):
    t = example.time.values.copy()
    t[5, 1] = t[5, 0]
    path = write_zarr(example.assign(time=(example.time.dims, t, example.time.attrs)), tmp_path / "repeat.zarr")
    neurode.load(path, check_times=False)  # structure is fine; the opt-out for trusted stores
    with pytest.raises(SchemaError, match="not strictly increasing within trajectories 5"):
        neurode.load(path, check_values=True)
    # checked by default, cheaply: times repeat (not decrease), named with the values as numbers
    with pytest.raises(SchemaError, match=r"trajectory 5: time repeats, [\d.]+ then [\d.]+ at obs 0 and 1\)") as caught:
        neurode.load(path)
    assert "check_times=False" in str(caught.value) and "np.float64" not in str(caught.value)


def test_unknown_variables_are_named_with_the_available_ones(store):
    with pytest.raises(
        UnknownVariableError, match=r"example.zarr: no variable 'speed' to select; available: damping, v, x"
    ):
        neurode.load(store, variables=["speed"])


def test_write_refuses_to_overwrite_unless_asked(example, store):
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(StoreExistsError, match="already exists; pass overwrite=True"):
        write_zarr(example.isel(trajectory=[0]), store)
    assert sorted(p.name for p in store.rglob("*")) == before
    write_zarr(example.isel(trajectory=[0, 1]), store, overwrite=True)
    assert neurode.load(store).sizes["trajectory"] == 2
    assert [p.name for p in store.parent.iterdir()] == [store.name], "no temporary directories left behind"


def test_a_failed_write_leaves_nothing(example, tmp_path, monkeypatch):
    original = xr.Dataset.to_zarr

    def write_then_fail(self, store, **kwargs):
        original(self, store, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_zarr(example, tmp_path / "out.zarr")
    assert list(tmp_path.iterdir()) == []


def test_write_zarr_chunks_by_whole_trajectories(example, store):
    loaded = neurode.load(store)
    assert loaded.v.chunks == ((3, 3, 3, 3), (example.sizes["obs"],), (2,))
    assert loaded.damping.chunks == ((3, 3, 3, 3),)


def test_loading_reads_no_data_and_a_batch_reads_only_its_chunks(store, example, zarr_reads):
    ds = neurode.load(store)
    assert zarr_reads.chunks("x") == [] and zarr_reads.chunks("v") == [], "opening read data chunks"
    assert len(zarr_reads.chunks("time")) == 4, "the default time check reads time, chunk by chunk, and only it"
    assert all(var.chunks is not None for var in ds.data_vars.values())
    zarr_reads.clear()

    batch = ds.isel(trajectory=[4, 5]).compute()  # both in the second block of 3 trajectories
    for name in ("time", "x", "v", "damping"):
        chunk_keys = zarr_reads.chunks(name)
        assert len(chunk_keys) == 1 and chunk_keys[0].split("/")[2] == "1", (name, chunk_keys)
    xr.testing.assert_identical(batch.v, example.v.isel(trajectory=[4, 5]))


def test_loaded_dataset_is_in_canonical_order(store, example):
    assert list(neurode.load(store).data_vars) == list(canonical_order(example).data_vars)


def test_an_unreadable_netcdf_file_is_one_line_naming_the_path_and_what_was_expected(tmp_path):
    path = tmp_path / "broken.nc"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)  # an HDF5 signature and nothing valid after it
    with pytest.raises(UnreadableStoreError) as caught:
        neurode.load(path)
    message = str(caught.value)
    assert "\n" not in message and "pip install netcdf4" not in message
    assert message.startswith(f"{path}: cannot read as netCDF (")
    assert message.endswith("expected a netCDF-4 (HDF5) or netCDF-3 file")


def test_reading_netcdf_without_an_engine_names_the_extra(example, tmp_path, monkeypatch):
    from neurode.datasets import formats

    path = tmp_path / "e.nc"
    example.to_netcdf(path, engine="h5netcdf")
    monkeypatch.setattr(formats, "available_netcdf_engines", lambda: [])
    with pytest.raises(UnreadableStoreError, match=r"none is installed; pip install 'neurode\[netcdf\]'"):
        neurode.load(path)


def test_one_line_drops_addresses_continuation_lines_and_the_path():
    from neurode.datasets.formats import one_line

    exc = OSError("Unable to open /data/x.nc (addr = 0x7f3a2c001234, size = 8)\n\n  $ pip install netcdf4\n")
    assert one_line(exc, Path("/data/x.nc")) == "OSError: Unable to open the file"


def test_write_netcdf_is_atomic_and_reads_back(example, tmp_path, monkeypatch):
    from neurode.datasets.io import write_netcdf, write_store

    path = write_store(example, tmp_path / "e.nc")
    xr.testing.assert_identical(neurode.load(path).compute(), canonical_order(example))
    with pytest.raises(StoreExistsError):
        write_netcdf(example, path)

    def fail(self, target, **kwargs):
        Path(target).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", fail)
    with pytest.raises(StoreWriteError, match=r"other.nc: cannot write: No space left on device"):
        write_netcdf(example, tmp_path / "other.nc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.nc"]


def test_a_store_too_large_for_the_eager_time_check_is_checked_batch_by_batch(
    example, tmp_path, monkeypatch, zarr_reads
):
    from neurode.datasets import io
    from neurode.datasets.trajectory_dataset import TrajectoryDataset

    t = example.time.values.copy()
    t[2, 3] = t[2, 2]
    path = write_zarr(example.assign(time=(example.time.dims, t, example.time.attrs)), tmp_path / "big.zarr")
    monkeypatch.setattr(io, "EAGER_TIME_CHECK_BYTES", 0)
    ds = neurode.load(path)
    assert zarr_reads.chunks("time") == [], "a large store's times are not all read at load"
    with pytest.raises(DataError, match="trajectory 2: time repeats"):
        TrajectoryDataset(ds).__getitems__([2])


@pytest.mark.parametrize("loader", [5, 3.5, ("zarr",)])
def test_loader_that_is_not_a_name_is_a_clear_error(tmp_path, loader):
    from neurode.datasets.examples import irregular_example
    from neurode.framework.errors import InvalidTypeError

    path = write_zarr(irregular_example(), tmp_path / "e.zarr")
    with pytest.raises(InvalidTypeError, match="a loader name must be a string, got"):
        neurode.load(path, loader=loader)
