"""CF time axes ("<unit> since <epoch>", decoded datetimes) are read as float time with units and epoch."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import neurode
from neurode.datasets.cf_time import convert_time_unit, decode_cf_times, parse_since, scale
from neurode.datasets.errors import DataError
from neurode.datasets.layouts import to_canonical
from neurode.datasets.schema import validate

EPOCH = "1958-03-29"
DAYS = np.array([0.0, 7.0, 14.0, 28.0, 35.0])  # weekly, one week missing


def _weekly_series() -> xr.Dataset:
    """A gridded station series as climate archives store it: CF time units, CF-1.6, gaps."""
    co2 = np.array([315.7, 317.5, np.nan, 317.3, 315.9])
    return xr.Dataset(
        {"co2": ("time", co2, {"units": "ppm", "long_name": "CO2 mole fraction"})},
        coords={
            "time": (
                "time",
                DAYS,
                {"units": f"days since {EPOCH}", "calendar": "standard", "standard_name": "time", "axis": "T"},
            )
        },
        attrs={"Conventions": "CF-1.6", "title": "weekly series"},
    )


@pytest.fixture(params=["zarr", "netcdf"])
def weekly_store(request, tmp_path):
    ds = _weekly_series()
    if request.param == "zarr":
        path = tmp_path / "weekly.zarr"
        ds.to_zarr(path, zarr_format=3, consolidated=False)
    else:
        path = tmp_path / "weekly.nc"
        ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_a_store_with_cf_time_units_loads_as_float_days_with_the_epoch(weekly_store):
    ds = neurode.load(weekly_store)
    time = ds.time
    assert time.dtype == np.float64
    np.testing.assert_array_equal(time.values, DAYS[None, :])
    assert time.attrs["units"] == "days"
    assert time.attrs["epoch"] == EPOCH
    assert time.attrs["calendar"] == "standard"
    assert ds.attrs["Conventions"] == "CF-1.6", "the store's Conventions must survive"
    validate(ds.compute())


def test_decode_times_true_is_accepted_and_gives_the_same_float_time(weekly_store):
    plain = neurode.load(weekly_store)
    decoded = neurode.load(weekly_store, decode_times=True)
    xr.testing.assert_identical(decoded.compute(), plain.compute())


def test_time_unit_expresses_time_in_years(weekly_store):
    ds = neurode.load(weekly_store, time_unit="years")
    assert ds.time.attrs["units"] == "years"
    assert ds.time.attrs["epoch"] == EPOCH
    np.testing.assert_allclose(ds.time.values[0], DAYS / 365.242198781)


def test_decoded_datetimes_in_memory_become_float_time_not_nanoseconds():
    decoded = xr.decode_cf(_weekly_series())
    assert np.issubdtype(decoded.time.dtype, np.datetime64), "the test needs xarray-decoded datetimes"
    canonical = to_canonical(decoded)
    np.testing.assert_array_equal(canonical.time.values, DAYS[None, :])
    assert canonical.time.attrs["units"] == "days" and canonical.time.attrs["epoch"] == EPOCH
    validate(canonical)


def test_datetimes_without_a_stored_unit_count_seconds_from_the_first_time():
    times = np.array(["2020-01-01T00:00", "2020-01-01T00:01", "2020-01-01T00:03"], dtype="datetime64[ns]")
    ds = xr.Dataset({"u": ("time", [1.0, 2.0, 3.0], {"units": "K", "long_name": "u"})}, coords={"time": times})
    canonical = to_canonical(ds, time_unit="minutes")
    np.testing.assert_allclose(canonical.time.values[0], [0.0, 1.0, 3.0])
    assert canonical.time.attrs["epoch"] == "2020-01-01T00:00:00"


def test_non_standard_calendars_are_only_rescaled():
    """360-day calendars: offsets are numbers of days, never passed through a calendar."""
    ds = _weekly_series()
    ds.time.attrs["calendar"] = "360_day"
    out = decode_cf_times(ds)
    np.testing.assert_array_equal(out.time.values, DAYS)
    assert out.time.attrs["calendar"] == "360_day"


def test_a_plain_float_time_is_rescaled_and_an_unknown_unit_is_named():
    ds = neurode.datasets.irregular_example()  # time in "s"
    minutes = convert_time_unit(ds, "min")
    np.testing.assert_allclose(minutes.time.values, ds.time.values / 60)
    assert minutes.time.attrs["units"] == "minutes"
    with pytest.raises(DataError, match=r"unknown time unit 'fortnights'; expected one of .*days"):
        to_canonical(ds, time_unit="fortnights")
    odd = ds.assign(time=ds.time.assign_attrs(units="furlongs"))
    with pytest.raises(DataError, match=r"its units are 'furlongs'"):
        convert_time_unit(odd, "days")


def test_cf_unit_parsing_and_udunits_lengths():
    assert parse_since("hours since 1990-01-01 00:00:00") == ("hours", "1990-01-01 00:00:00")
    assert parse_since("m s-1") is None
    assert parse_since("days") is None
    assert scale("weeks", "days") == 7.0
    assert scale("years", "days") == pytest.approx(365.242198781)



def test_a_cf_ragged_store_with_cf_time_units_loads(tmp_path):
    """Per-subject sampling times in "hours since <dose time>", the CF contiguous ragged layout."""
    hours = np.array([0.5, 1.0, 4.0, 0.25, 2.0])
    ragged = xr.Dataset(
        {
            "conc": ("obs", [3.1, 2.7, 1.2, 5.0, 2.2], {"units": "mg L-1", "long_name": "plasma concentration"}),
            "time": ("obs", hours, {"units": "hours since 2001-05-01 08:00:00", "standard_name": "time"}),
            "rowSize": ("subject", np.array([3, 2], dtype=np.int32), {"sample_dimension": "obs", "long_name": "n"}),
            "weight": ("subject", [70.0, 82.0], {"units": "kg", "long_name": "body weight"}),
        },
        coords={"subject": ("subject", [101, 102], {"cf_role": "trajectory_id"})},
        attrs={"featureType": "trajectory", "Conventions": "CF-1.8"},
    )
    path = tmp_path / "pk.nc"
    ragged.to_netcdf(path, engine="h5netcdf")
    ds = neurode.load(path, time_unit="minutes")
    np.testing.assert_allclose(ds.time.values, [[30.0, 60.0, 240.0], [15.0, 120.0, np.nan]])
    assert ds.time.attrs["epoch"] == "2001-05-01 08:00:00" and ds.time.attrs["units"] == "minutes"
    assert ds.trajectory.values.tolist() == [101, 102] and ds.attrs["Conventions"] == "CF-1.8"
