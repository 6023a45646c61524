"""``neurode train``, ``evaluate``, ``predict`` and ``runs`` on a tiny stored dataset, in-process and as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

import neurode
from neurode.cli.app import app
from neurode.datasets import irregular_example, validate
from neurode.datasets.io import write_zarr

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "neurode-example-plugin" / "src"
FAST = ["--dynamics-option", "width=8", "--dynamics-option", "depth=1", "--batch-size", "8", "--threads", "1",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "example.zarr"
    write_zarr(irregular_example(24, 6, seed=3), path)
    return path


def _train(runner, store, out, *extra):
    return runner.invoke(app, ["train", "--data", str(store), "--epochs", "2", *FAST, "--out", str(out), *extra])


def test_train_evaluate_predict_runs_cycle(runner, store, tmp_path):
    out = tmp_path / "runs" / "first"
    result = _train(runner, store, out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("completed: 6 steps in ")
    assert f"run directory {out}" in result.stdout and "% of the first-observation baseline" in result.stdout

    result = runner.invoke(app, ["evaluate", str(out), "--split", "all", "--t-split", "5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_trajectories"] == 24
    assert set(report["variables"]) == {"v[0]", "v[1]", "x"}
    assert report["variables"]["x"]["units"] == "m"
    assert report["variables"]["x"]["interpolation"]["n_observations"] > 0
    assert report["nfe_per_sample"] > 0

    table = runner.invoke(app, ["evaluate", str(out)])
    assert table.exit_code == 0 and "baseline RMSE" in table.stdout

    predictions = tmp_path / "pred.zarr"
    result = runner.invoke(app, ["predict", str(out), "--data", str(store), "--out", str(predictions)])
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(predictions, decode_timedelta=False, consolidated=False)
    validate(ds)
    observed = xr.open_zarr(store, decode_timedelta=False, consolidated=False)
    assert list(ds.trajectory.values) == list(observed.trajectory.values)
    assert ds["v"].attrs["units"] == observed["v"].attrs["units"]
    assert ds["time"].shape == observed["time"].shape

    at_times = tmp_path / "at.zarr"
    result = runner.invoke(app, ["predict", str(out), "--data", str(store), "--out", str(at_times),
                                 "--times", "9.75:12:4"])
    assert result.exit_code == 0, result.output
    assert xr.open_zarr(at_times, decode_timedelta=False, consolidated=False).sizes["obs"] == 4

    listing = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--json"])
    rows = json.loads(listing.stdout)
    assert [(r["run_dir"], r["status"], r["model"], r["step"]) for r in rows] == [
        (str(out), "completed", "neural_ode", 6)]


def test_json_summary_and_config_file_with_flag_overrides(runner, store, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\npath = "{store}"\n[training]\nepochs = 5\nmax_steps = 2\n'
                      '[dynamics.options]\nwidth = 4\n')
    result = runner.invoke(app, ["train", "--config", str(config), "--max-steps", "1", "--threads", "1",
                                 "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["step"] == 1 and summary["status"] == "completed"
    assert summary["best_val_rmse"] > 0 and summary["baseline_val_rmse"] > 0
    stored = (tmp_path / "r" / "config.toml").read_text()
    assert "max_steps = 1" in stored and "width = 4" in stored and "rtol = 0.01" in stored


def test_config_problems_are_listed_together_exit_1(runner, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[training]\nepoch = 3\n[model]\nname = "neural_od"\n[solver]\nrtol = -1\n')
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "3 problems" in result.stderr
    assert "did you mean 'training.epochs'" in result.stderr
    assert "did you mean 'neural_ode'" in result.stderr
    assert "solver.rtol: got -1; expected greater than 0" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists(), "nothing is written before the config is valid"


def test_unknown_model_option_is_a_config_problem_reported_before_data_is_read(runner, tmp_path):
    missing = tmp_path / "never-read.zarr"  # reading it would fail with a data error instead
    result = runner.invoke(app, ["train", "--set", f'data.path="{missing}"', "--model-option", "widht=3",
                                 "--dynamics-option", "depht=1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    assert "2 problems" in result.stderr
    assert "model.options.widht: unknown option of model 'neural_ode' (value 3); did you mean " \
           "'dynamics.options.width'?" in result.stderr
    assert "dynamics.options.depht: unknown option of dynamics 'mlp' (value 1); did you mean " \
           "'dynamics.options.depth'?" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "tpu"], "got 'tpu'; expected auto, cpu, mps, cuda or cuda:N"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--lr", "0"], "got 0.0; expected a positive number"),
        (["--epochs", "ten"], "Invalid value for '--epochs'"),
        (["--data", "/nonexistent/store.zarr"], "/nonexistent/store.zarr"),
        (["--model-option", "latent_dim"], "expected KEY=VALUE"),
    ],
)
def test_bad_option_values_are_usage_errors(runner, args, expected):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output


def test_resume_with_a_changed_setting_is_refused(runner, store, tmp_path):
    out = tmp_path / "r"
    assert _train(runner, store, out, "--quiet", "--max-steps", "1").exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(out), "--lr", "0.5"])
    assert result.exit_code == 1
    assert "changed configuration (optimizer.lr)" in result.stderr


def test_bare_train_simulates_the_builtin_dataset_into_the_cache(runner, tmp_path, monkeypatch):
    from neurode.training import builtin_data

    monkeypatch.setenv("NEURODE_CACHE", str(tmp_path / "cache"))
    # the real default is 256 trajectories; the test needs the mechanism, not the size
    monkeypatch.setitem(builtin_data.BUILTIN_SIMULATION, "n_trajectories", 12)
    monkeypatch.setitem(builtin_data.BUILTIN_SIMULATION, "n_obs", 8)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--max-steps", "1", "--threads", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    store = tmp_path / "cache" / f"{builtin_data.BUILTIN_NAME}.zarr"
    ds = xr.open_zarr(store, decode_timedelta=False, consolidated=False)
    validate(ds)
    assert ds.attrs["neurode_system"] == "oscillator" and ds.attrs["neurode_sampling"] == "irregular"
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.startswith("neural_ode-")
    info = json.loads((run_dirs[0] / "run.json").read_text())
    assert info["dataset"]["path"] == str(store.resolve())
    assert info["dataset"]["n_trajectories"]["train"] == 10


def test_a_third_party_dynamics_trains_from_the_cli_by_name(runner, store, tmp_path, plugin_site):
    """The example plugin's ``damped_linear`` (no condition input) drives neural_ode like a built-in."""
    from neurode.framework.registry import BUILTIN_PLUGINS

    plugin_site.builtins.extend(BUILTIN_PLUGINS)
    plugin_site.monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    plugin_site.distribution("neurode-example-plugin", "0.1.0", {"example": "neurode_example_plugin.plugin"})
    plugin_site.install()
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", "--data", str(store), "--dynamics", "damped_linear", "--dynamics-option",
                                 "state_dim=3", "--max-steps", "2", "--threads", "1", "--out", str(out), "--quiet"])
    # state_dim comes from the data: a duplicate is refused, naming the problem
    assert result.exit_code == 1
    assert "state_dim" in result.stderr
    result = runner.invoke(app, ["train", "--data", str(store), "--dynamics", "damped_linear", "--max-steps", "2",
                                 "--threads", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["versions"]["plugins"]["dynamics"] == {"name": "damped_linear",
                                                       "distribution": "neurode-example-plugin", "version": "0.1.0"}


def test_evaluate_reports_extrapolation_past_the_training_times_automatically(runner, tmp_path):
    full = irregular_example(30, 6, seed=3)
    cut = 6.0
    full = full.isel(trajectory=full["time"].values[:, 0] <= cut)
    # the training store holds each trajectory up to `cut`; the evaluation store has the tails too
    head = full.where(full["time"] <= cut)
    head["damping"] = full["damping"]
    head.attrs = full.attrs
    for name in ("time", "x", "v"):
        head[name].attrs = full[name].attrs
    head_store, full_store = tmp_path / "head.zarr", tmp_path / "full.zarr"
    write_zarr(head, head_store)
    write_zarr(full, full_store)
    out = tmp_path / "r"
    assert _train(runner, head_store, out, "--quiet").exit_code == 0

    own = json.loads(runner.invoke(app, ["evaluate", str(out), "--split", "all", "--json"]).stdout)
    assert "t_split" not in own, "no held-out tail in the training data itself"
    assert "interpolation" not in own["variables"]["x"]

    fitted_until = json.loads((out / "run.json").read_text())["dataset"]["train_time_range"][1]
    assert fitted_until <= cut
    result = runner.invoke(app, ["evaluate", str(out), "--data", str(full_store), "--split", "all", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["t_split"] == fitted_until and report["t_split_source"] == "training times"
    x = report["variables"]["x"]
    times = full["time"].values
    observed = ~full["x"].isnull().values
    assert x["extrapolation"]["n_observations"] == int((observed & (times > fitted_until)).sum()) > 0
    assert x["interpolation"]["n_observations"] + x["extrapolation"]["n_observations"] == x["n_observations"]

    table = runner.invoke(app, ["evaluate", str(out), "--data", str(full_store), "--split", "all"])
    assert "extrap. RMSE" in table.stdout and f"observations after t = {fitted_until:g}" in table.stdout

    given = json.loads(runner.invoke(app, ["evaluate", str(out), "--data", str(full_store), "--split", "all",
                                           "--t-split", "3", "--json"]).stdout)
    assert given["t_split"] == 3 and given["t_split_source"] == "given"
    assert given["variables"]["x"]["extrapolation"]["n_observations"] == int((observed & (times >= 3)).sum())

    # a run written before train_time_range was recorded: recomputed from the run's dataset
    info = json.loads((out / "run.json").read_text())
    del info["dataset"]["train_time_range"]
    (out / "run.json").write_text(json.dumps(info))
    again = json.loads(runner.invoke(app, ["evaluate", str(out), "--data", str(full_store), "--split", "all",
                                           "--json"]).stdout)
    assert again["t_split"] == fitted_until


def test_tensorboard_flags_and_help(runner, store, tmp_path, monkeypatch):
    import importlib.util

    from neurode.cli import train as train_cli

    out = tmp_path / "off"
    assert _train(runner, store, out, "--quiet", "--max-steps", "1", "--no-tensorboard").exit_code == 0
    assert not list(out.glob("events.out.tfevents.*"))
    assert json.loads((out / "run.json").read_text())["tensorboard"]["events"] is False

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert "NOT installed here, so none are written: pip install 'neurode[tensorboard]'" in \
        train_cli._tensorboard_help()
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)
    result = _train(runner, store, tmp_path / "required", "--tensorboard")
    assert result.exit_code == 1
    assert "output.tensorboard: got True; expected tensorboard to be importable" in result.stderr
    assert not (tmp_path / "required").exists()


def _cli(*args):
    return [sys.executable, "-c", "from neurode.cli.app import main; main()", *args]


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_says_how_to_resume(store, tmp_path):
    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_cli("train", "--data", str(store), "--epochs", "500", *FAST, "--out", str(out),
                                    "--quiet"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "state" / "checkpoint.safetensors").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"Resume with: neurode train --resume {out}" in stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    resumed = subprocess.run(_cli("train", "--resume", str(out), "--epochs", "1", "--json"), env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"


THIRD_PARTY_MODEL = '''
import torch
import neurode
from neurode.framework.model import AbstractModel


class Offset(AbstractModel):
    """Predicts each value as a learned per-feature offset: no ODE, no solver settings."""

    batch_mode = "padded"

    def __init__(self, n_features, n_static=0, scale=1.0):
        super().__init__()
        self.n_features, self.n_static, self.scale = n_features, n_static, scale
        self.offset = torch.nn.Parameter(torch.zeros(n_features))

    def predict(self, batch, times=None):
        shape = (batch.batch_size, batch.values.shape[1] if times is None else times.shape[-1], self.n_features)
        return (self.scale * self.offset).expand(shape)

    def loss(self, batch):
        observed = batch.mask & batch.time_mask.unsqueeze(-1)
        error = torch.where(observed, (self.predict(batch) - batch.values) ** 2, 0.0)
        mse = error.sum() / observed.sum()
        return mse, {"mse": float(mse.detach())}

    def config(self):
        return {"n_features": self.n_features, "n_static": self.n_static, "scale": self.scale}


@neurode.hookimpl
def register_models(register):
    register("offset", Offset)
'''


def test_a_third_party_model_trains_evaluates_and_reloads_like_a_builtin(runner, store, tmp_path, plugin_site):
    from neurode.framework.registry import BUILTIN_PLUGINS

    plugin_site.builtins.extend(BUILTIN_PLUGINS)
    plugin_site.module("neurode_offset_model", THIRD_PARTY_MODEL)
    plugin_site.distribution("neurode-offset", "2.0.0", {"offset": "neurode_offset_model"})
    plugin_site.install()
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", "--data", str(store), "--model", "offset", "--model-option", "scale=2.0",
                                 "--epochs", "2", "--batch-size", "8", "--threads", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["best_val_rmse"] > 0
    info = json.loads((out / "run.json").read_text())
    assert info["model"] == {"name": "offset", "config": {"n_features": 3, "n_static": 1, "scale": 2.0}}
    assert info["versions"]["plugins"]["model"]["distribution"] == "neurode-offset"
    result = runner.invoke(app, ["evaluate", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["variables"]["x"]["rmse"] > 0 and report["nfe_per_sample"] is None


def test_predict_writes_posterior_samples_for_a_latent_model_and_refuses_them_for_others(runner, store, tmp_path):
    out = tmp_path / "latent"
    result = _train(runner, store, out, "--quiet", "--model", "latent_ode", "--model-option", "encoder_hidden=8",
                    "--max-steps", "2")
    assert result.exit_code == 0, result.output
    predictions = tmp_path / "samples.zarr"
    result = runner.invoke(app, ["predict", str(out), "--data", str(store), "--out", str(predictions),
                                 "--samples", "3", "--times", "9.75:12:4"])
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(predictions, decode_timedelta=False, consolidated=False)
    validate(ds)  # the samples are a recognised ensemble of the state variables
    assert ds["x_samples"].dims == ("sample", "trajectory", "obs") and ds.sizes["sample"] == 3
    assert ds["v_samples"].dims == ("sample", "trajectory", "obs", "component")
    assert ds["x_samples"].attrs["units"] == ds["x"].attrs["units"] == "m"
    assert float(ds["x_samples"].std("sample").mean()) > 0  # draws from the posterior differ

    plain = tmp_path / "plain"
    assert _train(runner, store, plain, "--quiet", "--max-steps", "1").exit_code == 0
    result = runner.invoke(app, ["predict", str(plain), "--data", str(store), "--out", str(tmp_path / "no.zarr"),
                                 "--samples", "2"])
    assert result.exit_code == 1 and "draws no posterior samples" in result.output
    assert not (tmp_path / "no.zarr").exists()


def test_latent_ode_takes_the_tanh_recognition_cell_from_the_command_line(runner, store, tmp_path):
    out = tmp_path / "tanh"
    result = _train(runner, store, out, "--quiet", "--model", "latent_ode", "--model-option", "encoder_cell=tanh",
                    "--model-option", "encoder_hidden=8", "--max-steps", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["model"]["config"]["encoder_cell"] == "tanh"
    assert type(neurode.load_run(out).model.encoder).__name__ == "GapElmanCell"
    result = _train(runner, store, tmp_path / "bad", "--quiet", "--model", "latent_ode", "--model-option",
                    "encoder_cell=lstm", "--max-steps", "1")
    assert result.exit_code == 1, result.output
    assert "encoder_cell must be one of gru, tanh, got 'lstm'" in result.output
    assert "Traceback" not in result.output
