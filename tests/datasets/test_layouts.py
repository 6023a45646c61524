"""Every storage layout round-trips through zarr (formats 2 and 3) and netCDF into the schema."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import neurode
from neurode.datasets.errors import SchemaError
from neurode.datasets.io import write_zarr
from neurode.datasets.layouts import (
    CANONICAL,
    GRIDDED,
    RAGGED_CONTIGUOUS,
    RAGGED_INDEXED,
    detect_layout,
    from_gridded,
    to_canonical,
    to_gridded,
    to_ragged_contiguous,
    to_ragged_indexed,
)
from neurode.datasets.schema import canonical_order, is_lazy, validate


def _shared_grid(example):
    """The example on one complete time grid (what the gridded layout can hold)."""
    grid = np.arange(example.sizes["obs"], dtype=float) * 0.5
    return example.assign(
        time=(example.time.dims, np.broadcast_to(grid, example.time.shape).copy(), example.time.attrs),
        x=example.x.fillna(0.0),
        v=example.v.fillna(1.0),
    )


LAYOUT_WRITERS = {
    CANONICAL: (lambda ds: ds, False),
    RAGGED_CONTIGUOUS: (to_ragged_contiguous, False),
    RAGGED_INDEXED: (lambda ds: to_ragged_indexed(ds, shuffle_seed=7), False),
    GRIDDED: (to_gridded, True),
}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("layout", list(LAYOUT_WRITERS))
def test_every_layout_round_trips_through_zarr(example, tmp_path, layout, zarr_format):
    writer, needs_grid = LAYOUT_WRITERS[layout]
    original = _shared_grid(example) if needs_grid else example
    stored = writer(original)
    assert detect_layout(stored) == layout
    path = write_zarr(stored, tmp_path / f"{layout}.zarr", zarr_format=zarr_format)

    loaded = neurode.load(path, check_values=True)

    assert is_lazy(loaded), "loading must not read the data"
    xr.testing.assert_identical(loaded.compute(), canonical_order(original))


@pytest.mark.parametrize("layout", [RAGGED_CONTIGUOUS, RAGGED_INDEXED])
def test_ragged_layouts_round_trip_through_netcdf(example, tmp_path, layout):
    writer, _ = LAYOUT_WRITERS[layout]
    path = tmp_path / f"{layout}.nc"
    writer(example).to_netcdf(path)
    loaded = neurode.load(path)
    assert is_lazy(loaded)
    xr.testing.assert_identical(loaded.compute(), canonical_order(example))


def test_ragged_normalisation_is_lazy_and_chunked_by_trajectory_blocks(example, monkeypatch):
    import neurode.datasets.layouts as layouts

    monkeypatch.setattr(layouts, "_BLOCK_ELEMENTS", 4 * example.sizes["obs"] * 2)  # 4 trajectories of v per block
    ragged = to_ragged_contiguous(example).chunk({"obs": 10})
    canonical = to_canonical(ragged)
    assert canonical.v.chunks[0] == (4, 4, 4)
    assert is_lazy(canonical)
    xr.testing.assert_identical(canonical.compute()[list(example.data_vars)], example)


def test_indexed_ragged_samples_are_sorted_by_time_within_each_trajectory(example):
    shuffled = to_ragged_indexed(example, shuffle_seed=1)
    assert not np.all(np.diff(shuffled.trajectory_index.values) >= 0), "the test needs shuffled samples"
    validate(to_canonical(shuffled))


def test_contiguous_ragged_with_wrong_row_sizes_is_a_schema_error(example):
    ragged = to_ragged_contiguous(example)
    ragged["rowSize"] = ragged.rowSize + 1
    with pytest.raises(SchemaError, match=r"row sizes in 'rowSize' sum to \d+, but dimension 'obs' has \d+ samples"):
        to_canonical(ragged)


def test_indexed_ragged_with_out_of_range_index_is_a_schema_error(example):
    ragged = to_ragged_indexed(example)
    ragged["trajectory_index"] = ragged.trajectory_index + 100
    with pytest.raises(SchemaError, match=r"holds values in \[100, 111\], expected \[0, 11\]"):
        to_canonical(ragged)


def test_gridded_with_other_dimension_names_and_a_single_trajectory():
    t = np.linspace(0, 1, 5)
    single = xr.Dataset(
        {"u": (("t", "x"), np.arange(15.0).reshape(5, 3), {"units": "K", "long_name": "temperature"})},
        coords={"t": ("t", t, {"units": "s"}), "x": ("x", [0.0, 0.5, 1.0], {"units": "m", "long_name": "position"})},
    )
    canonical = from_gridded(single, time_dim="t")
    validate(canonical)
    assert canonical.u.dims == ("trajectory", "obs", "component")
    np.testing.assert_array_equal(canonical.time.values, t[None, :])
    np.testing.assert_array_equal(canonical.x.values, [0.0, 0.5, 1.0])  # component coordinate kept

    runs = single.expand_dims(run=2).assign_coords(run=("run", [10, 11], {"cf_role": "trajectory_id"}))
    canonical = from_gridded(runs, time_dim="t")
    assert canonical.sizes["trajectory"] == 2
    np.testing.assert_array_equal(canonical.trajectory.values, [10, 11])


def test_gridded_with_unexplained_dimensions_says_which():
    data = xr.Dataset(
        {"u": (("time", "a", "b"), np.zeros((3, 2, 2)), {"units": "1", "long_name": "u"})},
        coords={"time": ("time", [0.0, 1.0, 2.0], {"units": "s"})},
    )
    with pytest.raises(SchemaError, match=r"dimensions \['a', 'b'\] are neither time"):
        from_gridded(data)


def test_to_gridded_refuses_trajectories_on_different_grids(example):
    with pytest.raises(SchemaError, match="do not share one complete time grid"):
        to_gridded(example)


def test_unknown_layout_names_what_was_looked_for():
    with pytest.raises(SchemaError, match="not a trajectory layout neurode knows"):
        detect_layout(xr.Dataset({"a": ("n", [1.0])}))
