"""``neurode simulate``: a CF-attributed zarr store with provenance, or a clear error and nothing on disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import neurode
from neurode.cli.app import app
from neurode.datasets.schema import validate
from neurode.datasets.systems import SYSTEMS


def _files(path):
    return sorted(p.name for p in path.iterdir())


def test_list_shows_every_system_with_its_parameters(runner):
    result = runner.invoke(app, ["simulate", "--list"])
    assert result.exit_code == 0, result.output
    for name, system in SYSTEMS.items():
        assert name in result.stdout
        for parameter in system.parameters:
            assert parameter.name in result.stdout
    assert "damping=0:0.3 (kg s-1)" in result.stdout  # default range with units
    assert "gravity=9.81 (m s-2)" in result.stdout  # a fixed parameter


def test_simulate_writes_a_store_with_the_requested_options(runner, tmp_path):
    out = tmp_path / "osc.zarr"
    args = [
        "simulate", "oscillator", "--out", str(out), "--count", "12", "--obs", "20", "--t-span", "0:5",
        "--sampling", "irregular", "--missing", "0.2", "--noise", "0.01", "--param", "damping=0.1:0.5",
        "-p", "mass=2", "--seed", "3",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 12 trajectories of oscillator (position, velocity)" in result.stdout

    ds = validate(neurode.load(out), check_values=True)
    assert ds.sizes["trajectory"] == 12 and ds.sizes["obs"] <= 20
    assert np.nanmin(ds.time) >= 0.0 and np.nanmax(ds.time) <= 5.0
    assert np.all(ds.mass.values == 2.0) and np.all((ds.damping >= 0.1) & (ds.damping <= 0.5))
    attrs = ds.attrs
    assert attrs["neurode_system"] == "oscillator" and attrs["neurode_seed"] == 3
    assert attrs["neurode_version"] == neurode.__version__
    assert json.loads(attrs["neurode_parameters"])["damping"] == [0.1, 0.5]
    assert attrs["neurode_sampling"] == "irregular" and attrs["neurode_noise_std"] == 0.01
    assert ds.position.attrs["units"] == "m" and ds.time.attrs["units"] == "s"
    assert _files(tmp_path) == ["osc.zarr"], "no temporary directories left behind"


def test_same_seed_same_store(runner, tmp_path):
    for name in ("a.zarr", "b.zarr"):
        assert (
            runner.invoke(app, ["simulate", "pendulum", "-o", str(tmp_path / name), "-n", "4", "--obs", "8"]).exit_code
            == 0
        )
    a, b = neurode.load(tmp_path / "a.zarr").compute(), neurode.load(tmp_path / "b.zarr").compute()
    assert a.drop_attrs().equals(b.drop_attrs())


def test_zarr_format_2_is_available(runner, tmp_path):
    out = tmp_path / "v2.zarr"
    result = runner.invoke(app, ["simulate", "heat", "-o", str(out), "-n", "3", "--obs", "5", "--zarr-format", "2"])
    assert result.exit_code == 0, result.output
    assert (out / ".zgroup").exists()
    assert neurode.load(out).u.sizes["component"] == 32


def test_an_existing_store_is_kept_unless_overwrite(runner, tmp_path):
    out = tmp_path / "osc.zarr"
    runner.invoke(app, ["simulate", "oscillator", "-o", str(out), "-n", "2", "--obs", "4"])
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = runner.invoke(app, ["simulate", "oscillator", "-o", str(out), "-n", "5", "--obs", "4"])
    assert result.exit_code == 1
    assert f"error: {out}: already exists; pass --overwrite to replace it" in result.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    result = runner.invoke(app, ["simulate", "oscillator", "-o", str(out), "-n", "5", "--obs", "4", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert neurode.load(out).sizes["trajectory"] == 5
    assert _files(tmp_path) == ["osc.zarr"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["oscilator"], "error: unknown system 'oscilator'; did you mean 'oscillator'?"),
        (
            ["oscillator", "-p", "spring=1"],
            "error: system 'oscillator' has no parameter 'spring'; its parameters: mass, stiffness, damping",
        ),
        (["oscillator", "-p", "mass=0:1"], "error: parameter 'mass' must be positive, got range 0:1"),
    ],
)
def test_request_errors_are_one_line_exit_1_and_write_nothing(runner, tmp_path, args, message):
    out = tmp_path / "x.zarr"
    result = runner.invoke(app, ["simulate", *args, "--out", str(out)])
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["oscillator", "-p", "damping"], "expected NAME=LOW:HIGH or NAME=VALUE"),
        (["oscillator", "-p", "damping=a:1"], "damping: 'a' is not a number"),
        (["oscillator", "--t-span", "5:1"], "expected T0 < T1"),
        (["oscillator", "--missing", "1.5"], "--missing"),
        (["oscillator"], "--out"),
        ([], "SYSTEM"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(runner, tmp_path, args, message):
    extra = [] if args in (["oscillator"], []) else ["--out", str(tmp_path / "x.zarr")]
    result = runner.invoke(app, ["simulate", *args, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert _files(tmp_path) == []


def test_a_failure_while_solving_leaves_nothing_on_disk(runner, tmp_path, monkeypatch):
    from neurode.datasets import simulation
    from neurode.framework.errors import NonFiniteStateError

    def fail(*args, **kwargs):
        raise NonFiniteStateError("state became NaN at t=1.5")

    monkeypatch.setattr(simulation, "solve_on_times", fail)
    result = runner.invoke(app, ["simulate", "lorenz", "-o", str(tmp_path / "l.zarr"), "-n", "3"])
    assert result.exit_code == 1
    assert "error: solving lorenz for trajectories 0..2 failed: state became NaN at t=1.5" in result.stderr
    assert _files(tmp_path) == []


def test_an_interrupted_write_leaves_nothing_on_disk(runner, tmp_path, monkeypatch):
    import xarray as xr

    original = xr.Dataset.to_zarr

    def interrupted(self, store, **kwargs):
        original(self, store, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_zarr", interrupted)
    result = runner.invoke(app, ["simulate", "periodic", "-o", str(tmp_path / "p.zarr"), "-n", "3", "--obs", "5"])
    assert result.exit_code != 0
    assert _files(tmp_path) == []


def test_out_ending_in_nc_writes_netcdf(runner, tmp_path):
    from neurode.datasets.formats import is_netcdf_file

    out = tmp_path / "osc.nc"
    result = runner.invoke(app, ["simulate", "oscillator", "-o", str(out), "-n", "3", "--obs", "6"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and is_netcdf_file(out), "a netCDF file, not a zarr directory named .nc"
    ds = neurode.load(out)
    assert ds.sizes["trajectory"] == 3 and ds.attrs["neurode_system"] == "oscillator"
    assert _files(tmp_path) == ["osc.nc"]


def test_netcdf_without_an_engine_is_refused_before_any_work(runner, tmp_path, monkeypatch):
    from neurode.datasets import formats

    monkeypatch.setattr(formats, "available_netcdf_engines", lambda: [])
    result = runner.invoke(app, ["simulate", "oscillator", "-o", str(tmp_path / "osc.nc"), "-n", "3"])
    assert result.exit_code == 1
    assert "pip install 'neurode[netcdf]'" in result.stderr and "simulating" not in result.stderr
    assert _files(tmp_path) == []


def test_an_out_path_under_a_file_is_a_user_error_before_any_work(runner, tmp_path):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "osc.zarr"
    result = runner.invoke(app, ["simulate", "oscillator", "-o", str(out), "-n", "3"])
    assert result.exit_code == 1, result.output
    assert f"error: {out}: cannot write here: {tmp_path / 'afile'} is a file, not a directory" in result.stderr
    assert "simulating" not in result.stderr and "internal error" not in result.stderr


@pytest.mark.skipif(getattr(os, "geteuid", lambda: 1)() == 0, reason="root may write to read-only directories")
def test_a_read_only_directory_is_a_user_error(runner, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = runner.invoke(app, ["simulate", "oscillator", "-o", str(locked / "osc.zarr"), "-n", "3"])
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 1, result.output
    assert "no permission to write in" in result.stderr


def test_a_write_refused_by_the_system_is_a_user_error_naming_the_path(runner, tmp_path, monkeypatch):
    import xarray as xr

    def refuse(self, store, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(xr.Dataset, "to_zarr", refuse)
    out = tmp_path / "osc.zarr"
    result = runner.invoke(app, ["simulate", "oscillator", "-o", str(out), "-n", "3", "--obs", "4"])
    assert result.exit_code == 1, result.output
    assert f"error: {out}: cannot write: Permission denied" in result.stderr
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--rtol", "0"], "tolerances must be positive, got rtol=0.0", 1),
        (["--count", "0"], "--count", 2),
        (["-p", "mass=2:1"], "Invalid value for --param: mass: range 2:1 has low > high", 2),
    ],
)
def test_options_are_checked_before_the_progress_bar(runner, tmp_path, args, message, code):
    result = runner.invoke(app, ["simulate", "oscillator", "-o", str(tmp_path / "o.zarr"), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "simulating" not in result.output
    assert _files(tmp_path) == []


def test_negative_seed_is_a_user_error(runner, tmp_path):
    out = tmp_path / "s.zarr"
    result = runner.invoke(app, ["simulate", "pendulum", "-o", str(out), "-n", "2", "--obs", "4", "--seed", "-1"])
    assert result.exit_code == 1, result.output
    assert "seed must be a non-negative integer, got -1" in result.output
    assert not out.exists()


def test_a_stiff_system_is_simulated_with_its_stiff_solver_unless_another_is_named(runner, tmp_path):
    result = runner.invoke(app, ["simulate", "robertson", "-o", str(tmp_path / "r.zarr"), "-n", "3", "--obs", "6"])
    assert result.exit_code == 0, result.output
    assert neurode.load(tmp_path / "r.zarr").attrs["neurode_solver"] == "rodas5p"
    result = runner.invoke(app, ["simulate", "robertson", "-o", str(tmp_path / "s.zarr"), "-n", "3", "--obs", "6",
                                 "--solver", "kvaerno5"])
    assert result.exit_code == 0, result.output
    ds = neurode.load(tmp_path / "s.zarr")
    assert ds.attrs["neurode_solver"] == "kvaerno5"
    np.testing.assert_allclose(ds.c.values, neurode.load(tmp_path / "r.zarr").c.values, rtol=1e-6)


def test_an_unknown_solver_is_a_usage_error_before_any_work(runner, tmp_path):
    result = runner.invoke(app, ["simulate", "robertson", "-o", str(tmp_path / "r.zarr"), "--solver", "rodas9"])
    assert result.exit_code == 2 and "--solver" in result.output and "'rodas9'" in result.output
    assert "rodas5p" in result.output and _files(tmp_path) == []
