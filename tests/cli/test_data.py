"""``neurode data info``: dims, variables with units, observation counts, time span, missing fraction."""

from __future__ import annotations

import json

import numpy as np

from neurode.cli.app import app
from neurode.datasets.examples import irregular_example
from neurode.datasets.info import summarize
from neurode.datasets.io import write_zarr
from neurode.datasets.layouts import to_ragged_contiguous
from neurode.datasets.schema import canonical_order


def test_info_prints_the_summary(runner, tmp_path):
    ds = irregular_example()
    path = write_zarr(ds, tmp_path / "e.zarr")
    result = runner.invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    counts = np.isfinite(ds.time.values).sum(axis=1)
    assert "dims: trajectory=12, obs=9, component=2" in out
    assert "(loader zarr)" in out
    for name, units in (("x", "m"), ("v", "m s-1"), ("damping", "s-1"), ("time", "s")):
        assert any(line.split("│")[1].strip() == name and units in line for line in out.splitlines() if "│" in line)
    assert f"observations per trajectory: min {counts.min()}, median {np.median(counts):g}" in out
    assert f"max {counts.max()} ({counts.sum()} in all)" in out
    assert f"time span: {np.nanmin(ds.time.values):g} to {np.nanmax(ds.time.values):g} (s)" in out
    assert "missing fraction (state variables, at observation times):" in out


def test_info_json_is_the_summary(runner, tmp_path):
    ds = irregular_example()
    path = write_zarr(ds, tmp_path / "e.zarr")
    result = runner.invoke(app, ["data", "info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {"path": str(path), "loader": "zarr", **summarize(canonical_order(ds)), "violations": []}


def test_info_reads_any_layout_a_loader_reads(runner, tmp_path):
    path = tmp_path / "ragged.nc"
    to_ragged_contiguous(irregular_example()).to_netcdf(path)
    result = runner.invoke(app, ["data", "info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["loader"] == "netcdf" and report["dims"]["trajectory"] == 12


def test_info_errors_name_the_path(runner, tmp_path):
    result = runner.invoke(app, ["data", "info", str(tmp_path / "absent.zarr")])
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'absent.zarr'}: no such file or directory" in result.stderr
    assert "Traceback" not in result.output

    broken = irregular_example().assign_attrs(featureType="point")
    path = write_zarr(broken, tmp_path / "broken.zarr")
    result = runner.invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 1
    assert f"error: {path}: dataset does not match the neurode trajectory schema (1 problem)" in result.stderr
    assert "featureType is 'point'" in result.stderr


def test_info_reads_cf_time_units_and_takes_time_unit(runner, tmp_path):
    import xarray as xr

    weekly = xr.Dataset(
        {"co2": ("time", [315.7, 317.5, np.nan, 317.3], {"units": "ppm", "long_name": "CO2"})},
        coords={"time": ("time", [0.0, 7.0, 21.0, 28.0], {"units": "days since 1958-03-29"})},
        attrs={"Conventions": "CF-1.6"},
    )
    path = tmp_path / "weekly.zarr"
    weekly.to_zarr(path, zarr_format=3, consolidated=False)
    result = runner.invoke(app, ["data", "info", str(path), "--time-unit", "weeks"])
    assert result.exit_code == 0, result.output
    assert "time span: 0 to 4 (weeks)" in result.stdout
    report = json.loads(runner.invoke(app, ["data", "info", str(path), "--json"]).stdout)
    assert report["time"]["units"] == "days" and report["attrs"]["Conventions"] == "CF-1.6"


def _with_repeated_time(tmp_path):
    ds = irregular_example()
    t = ds.time.values.copy()
    t[4, 2] = t[4, 1]  # a repeated time
    t[7, 1] = t[7, 0] - 0.5  # a decreasing one
    return write_zarr(ds.assign(time=(ds.time.dims, t, ds.time.attrs)), tmp_path / "bad.zarr")


def test_info_prints_the_violations_and_exits_1(runner, tmp_path):
    path = _with_repeated_time(tmp_path)
    result = runner.invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 1, result.output
    assert "time span:" in result.stdout, "the summary is still printed"
    assert f"{path}: 1 violation of the neurode trajectory schema:" in result.stdout
    assert "not strictly increasing within trajectories 4, 7" in result.stdout
    report = json.loads(runner.invoke(app, ["data", "info", str(path), "--json"]).stdout)
    assert len(report["violations"]) == 1


def test_validate_lists_every_violation_and_exits_1(runner, tmp_path):
    path = _with_repeated_time(tmp_path)
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1, result.output
    assert "(trajectory 4: time repeats" in result.stdout
    good = write_zarr(irregular_example(), tmp_path / "good.zarr")
    result = runner.invoke(app, ["data", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "conforms to the neurode trajectory schema (12 trajectories)" in result.stdout


def test_validate_reports_structure_problems_as_violations(runner, tmp_path):
    ds = irregular_example()
    del ds.x.attrs["units"]
    path = write_zarr(ds, tmp_path / "nounits.zarr")
    result = runner.invoke(app, ["data", "validate", str(path), "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["violations"] == ["variable 'x' has no 'units' attribute"]


def test_no_loader_advice_is_worded_for_the_command_line(runner, tmp_path):
    path = tmp_path / "measurements.csv"
    path.write_text("t,x\n0,1\n")
    result = runner.invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 1
    assert "no loader recognises this path; pass --loader NAME." in result.stderr
    assert "loader=<name>" not in result.stderr


def test_info_on_a_store_with_zero_trajectories(runner, tmp_path):
    path = write_zarr(irregular_example().isel(trajectory=slice(0, 0)), tmp_path / "empty.zarr")
    result = runner.invoke(app, ["data", "info", str(path), "--json"])
    assert result.exit_code in (0, 1), result.output  # a report, or a user-facing error; never a crash (exit 3)
    if result.exit_code == 0:
        report = json.loads(result.stdout)
        assert report["trajectories"] == 0 and report["time"]["min"] is None
