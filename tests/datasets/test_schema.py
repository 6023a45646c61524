"""validate(): the canonical schema, and one error that lists every violation."""

from __future__ import annotations

import dask.array
import numpy as np
import pytest
import xarray as xr

from neurode.datasets.errors import SchemaError, UnknownVariableError
from neurode.datasets.schema import canonical_order, select_variables, validate, violations


def test_a_conforming_dataset_is_returned_unchanged(example):
    assert validate(example) is example
    assert violations(example) == []


def _hole(ds):
    t = ds.time.values.copy()
    t[1, 0] = np.nan  # an observation after padding in trajectory 1
    return ds.assign(time=(ds.time.dims, t, ds.time.attrs))


def _decreasing(ds):
    t = ds.time.values.copy()
    t[2, 1] = t[2, 0] - 1.0
    return ds.assign(time=(ds.time.dims, t, ds.time.attrs))


def _repeated(ds):
    t = ds.time.values.copy()
    t[3, 1] = t[3, 0]
    return ds.assign(time=(ds.time.dims, t, ds.time.attrs))


def _empty_trajectory(ds):
    ds = ds.copy(deep=True)
    for name in ("time", "x", "v"):
        ds[name][{"trajectory": 4}] = np.nan
    return ds


def _value_in_padding(ds):
    ds = ds.copy(deep=True)
    row = int(np.flatnonzero(np.isnan(ds.time.values).any(axis=1))[0])
    col = int(np.flatnonzero(np.isnan(ds.time.values[row]))[0])
    ds["x"][row, col] = 1.0
    return ds


def _infinite_time(ds):
    t = ds.time.values.copy()
    t[0, -1] = np.inf
    return ds.assign(time=(ds.time.dims, t, ds.time.attrs))


def _no_units(ds):
    ds = ds.copy()
    ds["x"].attrs = {"long_name": "position"}
    return ds


VIOLATIONS = {
    "missing dims": (lambda ds: ds.rename({"obs": "sample"}), "missing dimension 'obs'"),
    "missing time": (lambda ds: ds.drop_vars("time"), "missing variable 'time'"),
    "time dims": (lambda ds: ds.assign(time=ds.time.T), "variable 'time' has dims (obs, trajectory)"),
    "time dtype": (
        lambda ds: ds.assign(time=ds.time.fillna(-1).astype("int64")),
        "variable 'time' has dtype int64, expected a floating dtype",
    ),
    "time units": (lambda ds: ds.assign(time=ds.time.assign_attrs(units="")), "variable 'time' has no 'units'"),
    "feature type": (lambda ds: ds.assign_attrs(featureType="timeSeries"), "featureType is 'timeSeries'"),
    "non-increasing": (_decreasing, "not strictly increasing within trajectories 2"),
    "repeated time": (_repeated, "not strictly increasing within trajectories 3"),
    "after padding": (_hole, "observations after NaN padding in trajectories 1"),
    "state dtype": (
        lambda ds: ds.assign(x=ds.x.fillna(0).astype("int32").assign_attrs(ds.x.attrs)),
        "state variable 'x' has dtype int32, expected a floating dtype",
    ),
    "no observations": (lambda ds: ds.assign(x=ds.x * np.nan), "state variable 'x' has no observations"),
    "observed in padding": (_value_in_padding, "state variable 'x' has 1 values where 'time' is NaN"),
    "bad dims": (
        lambda ds: ds.assign(w=(("obs",), np.zeros(ds.sizes["obs"]), {"units": "1", "long_name": "w"})),
        "variable 'w' has dims (obs)",
    ),
    "static dtype": (
        lambda ds: ds.assign(
            label=(("trajectory",), np.array(["a"] * ds.sizes["trajectory"]), {"units": "1", "long_name": "l"})
        ),
        "per-trajectory variable 'label' has dtype <U1, expected a numeric dtype",
    ),
    "no units": (_no_units, "variable 'x' has no 'units' attribute"),
    "no long_name": (
        lambda ds: ds.assign(damping=ds.damping.assign_attrs(long_name=None)),
        "'damping' has no 'long_name'",
    ),
    "empty trajectory": (_empty_trajectory, "trajectories 4 have no observation times"),
    "infinite time": (_infinite_time, "variable 'time' has infinite values in trajectories 0"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_validate_reports_each_violation(example, case):
    breaker, expected = VIOLATIONS[case]
    with pytest.raises(SchemaError) as info:
        validate(breaker(example), source="store.zarr")
    assert any(expected in v for v in info.value.violations), info.value.violations
    assert str(info.value).startswith("store.zarr: dataset does not match")


def test_every_violation_is_listed_in_one_error(example):
    broken = _no_units(_hole(_decreasing(example))).assign_attrs(featureType=None)
    with pytest.raises(SchemaError) as info:
        validate(broken)
    found = info.value.violations
    for expected in ("featureType", "not strictly increasing", "after NaN padding", "'x' has no 'units'"):
        assert any(expected in v for v in found), (expected, found)
    # The hole also leaves x and v observed at a NaN time: reported too.
    assert len(found) == 6
    assert "(6 problems)" in str(info.value)
    assert all(f"  - {v}" in str(info.value) for v in found)


def _exploding(shape):
    def explode(block):
        raise AssertionError("metadata-only validation read data")

    return dask.array.map_blocks(explode, dask.array.zeros(shape, chunks=shape), dtype=float)


def test_structure_only_validation_reads_no_data(example):
    lazy = example.copy()
    for name in ("time", "x"):
        lazy[name] = (example[name].dims, _exploding(example[name].shape), example[name].attrs)
    assert validate(lazy, check_values=False) is lazy
    with pytest.raises(AssertionError, match="read data"):
        validate(lazy)


def test_value_checks_run_on_dask_arrays(example):
    with pytest.raises(SchemaError, match="not strictly increasing"):
        validate(_decreasing(example).chunk({"trajectory": 5}))


def test_select_variables_keeps_time_and_names_unknown_ones(example):
    assert list(select_variables(example, ["v"]).data_vars) == ["time", "v"]
    with pytest.raises(UnknownVariableError, match=r"no variables 'y', 'z' to select; available: damping, v, x"):
        select_variables(example, ["y", "x", "z"])


def test_canonical_order_is_time_then_states_then_static_by_name(example):
    shuffled = example[["damping", "x", "time", "v"]]
    assert list(canonical_order(shuffled).data_vars) == ["time", "v", "x", "damping"]
    xr.testing.assert_identical(canonical_order(shuffled)["x"], example["x"])
