"""neurode.testing.check_loader on the built-in loaders, and on loaders that break the contract."""

import pytest
import xarray as xr

from neurode.datasets import irregular_example, to_ragged_contiguous, write_zarr
from neurode.framework.errors import NeurodeError
from neurode.framework.loader import AbstractLoader
from neurode.testing import check_loader


@pytest.fixture
def zarr_store(tmp_path):
    return write_zarr(irregular_example(), tmp_path / "data.zarr")


@pytest.fixture
def ragged_netcdf(tmp_path):
    path = tmp_path / "ragged.nc"
    to_ragged_contiguous(irregular_example()).to_netcdf(path)
    return path


def test_zarr_loader_conforms(zarr_store):
    check_loader("zarr", zarr_store)


def test_netcdf_loader_conforms_on_a_ragged_file(ragged_netcdf):
    check_loader("netcdf", ragged_netcdf)


class _EagerZarr(AbstractLoader):
    name = "eager"
    suffixes = (".zarr",)

    def open(self, path, *, variables=None, **kwargs):
        from neurode.plugins.loaders.zarr_store import ZarrLoader

        return ZarrLoader().open(path, variables=variables).load()


class _RawErrors(AbstractLoader):
    name = "raw"
    suffixes = (".zarr",)

    def open(self, path, *, variables=None, **kwargs):
        from neurode.plugins.loaders.zarr_store import ZarrLoader

        if not str(path).endswith("data.zarr"):
            raise FileNotFoundError(path)
        return ZarrLoader().open(path, variables=variables)


class _IgnoresSelection(AbstractLoader):
    name = "ignores"
    suffixes = (".zarr",)

    def open(self, path, *, variables=None, **kwargs):
        from neurode.plugins.loaders.zarr_store import ZarrLoader

        return ZarrLoader().open(path)


@pytest.mark.parametrize("loader, match", [
    (_EagerZarr(), "loaded eagerly"),
    (_RawErrors(), "expected a NeurodeError"),
    (_IgnoresSelection(), "variables="),
])
def test_check_loader_rejects_broken_loaders(zarr_store, loader, match):
    with pytest.raises(AssertionError, match=match):
        check_loader(loader, zarr_store)


def test_check_loader_rejects_a_store_off_the_schema(tmp_path):
    path = tmp_path / "bad.zarr"
    xr.Dataset({"x": ("row", [1.0, 2.0])}).to_zarr(path, consolidated=False)

    class Plain(AbstractLoader):
        name = "plain"
        suffixes = (".zarr",)

        def open(self, p, *, variables=None, **kwargs):
            if not str(p).endswith("bad.zarr"):
                raise NeurodeError(f"{p}: no such store")
            return xr.open_zarr(p, consolidated=False)

    with pytest.raises(AssertionError, match="canonical schema"):
        check_loader(Plain(), path)
