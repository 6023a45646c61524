"""The fit loop: bitwise resume, clean stops on NaN and solver failure, refusals, kill -9 safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import neurode
from neurode.plugins.models.neural_ode import NeuralODE
from neurode.training import rundir as rd
from neurode.training.trainer import CHECKPOINT, Reporter, ResumeError, TrainingStopped


class InterruptAt(Reporter):
    """Sends this process SIGINT after optimiser step ``step``, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.at = step

    def step(self, row):
        if row["step"] == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def _weights(path):
    return rd.load_tensors(path)


def test_train_writes_a_complete_run_directory(fast_config, tmp_path):
    run = neurode.train(fast_config)
    root = tmp_path / "run"
    for name in ("config.toml", "run.json", "model.safetensors", "best.safetensors", "normalization.json",
                 "metrics.jsonl", "loss.png", "predictions.png", "state/checkpoint.safetensors"):
        assert (root / name).is_file(), name
    info = json.loads((root / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["dataset"]["fingerprint"].startswith("sha256:")
    assert info["versions"]["plugins"]["model"] == {"name": "neural_ode", "distribution": "neurode",
                                                    "version": neurode.__version__}
    assert run.summary["step"] == 9 and run.summary["best_val_rmse"] is not None
    assert [row["step"] for row in run.metrics if "val_rmse" in row] == [3, 6, 9]
    assert (root / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_and_resumed_run_ends_bitwise_equal(fast_config, tmp_path):
    straight = neurode.train(fast_config)
    config = {**fast_config, "output": {"dir": str(tmp_path / "resumed")}}
    interrupted = neurode.train(config, reporter=InterruptAt(5))
    assert interrupted.summary["status"] == "interrupted"
    assert interrupted.summary["resume"] == f"neurode train --resume {tmp_path / 'resumed'}"
    resumed = neurode.train(resume=tmp_path / "resumed")
    assert resumed.summary["status"] == "completed" and resumed.summary["step"] == 9
    for name in ("model.safetensors", "best.safetensors"):
        a, b = _weights(straight.path / name), _weights(resumed.path / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert ([r["step"] for r in straight.metrics] == [r["step"] for r in resumed.metrics])


def test_resume_refuses_a_changed_config_but_accepts_a_new_budget(fast_config, tmp_path):
    neurode.train(fast_config, overrides={"training.epochs": 1})
    with pytest.raises(ResumeError, match=r"changed configuration \(optimizer.lr\)"):
        neurode.train(resume=tmp_path / "run", overrides={"optimizer.lr": 0.5})
    run = neurode.train(resume=tmp_path / "run", overrides={"training.epochs": 2})
    assert run.summary["step"] == 6


def test_an_existing_run_directory_is_not_overwritten(fast_config):
    neurode.train(fast_config, overrides={"training.max_steps": 1})
    with pytest.raises(rd.RunDirectoryError, match="already exists and is not empty; resume it"):
        neurode.train(fast_config)


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(fast_config, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = NeuralODE.loss

    def poisoned(self, batch):
        calls["n"] += 1
        loss, metrics = original(self, batch)
        return (loss * float("nan"), metrics) if calls["n"] == 5 else (loss, metrics)

    monkeypatch.setattr(NeuralODE, "loss", poisoned)
    with pytest.raises(TrainingStopped) as info:
        neurode.train(fast_config)
    message = str(info.value)
    assert "training stopped at step 5: the loss is nan" in message
    assert "the last good checkpoint (step 4)" in message
    root = tmp_path / "run"
    checkpoint = rd.load_tensors(root / "state" / CHECKPOINT)  # loadable
    assert checkpoint
    info_json = json.loads((root / "run.json").read_text())
    assert info_json["status"] == "failed" and info_json["checkpoint_step"] == 4
    monkeypatch.setattr(NeuralODE, "loss", original)
    assert neurode.load_run(root).model is not None


def test_solver_failure_stops_with_the_solvers_diagnosis(fast_config):
    with pytest.raises(TrainingStopped) as info:
        neurode.train(fast_config, overrides={"solver.max_num_steps": 2})
    message = str(info.value)
    assert "the solver failed on the batch of training trajectories" in message
    assert "max_num_steps reached at t=" in message
    assert "no checkpoint had been written yet" in message


def test_an_error_raised_mid_run_is_recorded_in_run_json(fast_config, tmp_path, monkeypatch):
    # e.g. an option a model refuses only when it first solves: the error reaches the caller unchanged, and the
    # run directory no longer says "running"
    from neurode.framework.errors import InvalidInputError

    calls = {"n": 0}
    original = NeuralODE.loss

    def refusing(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise InvalidInputError("this model refuses the third batch")
        return original(self, batch)

    monkeypatch.setattr(NeuralODE, "loss", refusing)
    with pytest.raises(InvalidInputError, match="third batch"):
        neurode.train(fast_config)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and info["finished"]
    assert info["error"] == "training stopped at step 3: InvalidInputError: this model refuses the third batch"


KILL_SCRIPT = """
import sys, torch, neurode
torch.set_num_threads(1)
neurode.train({config!r})
"""


@pytest.mark.slow
def test_kill_9_at_random_instants_always_leaves_a_loadable_run(fast_config, tmp_path):
    config = {**fast_config, "training": {**fast_config["training"], "epochs": 40, "checkpoint_every": 1}}
    root = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    first = True
    for attempt in range(3):
        script = KILL_SCRIPT.format(config=config) if first else (
            f"import torch, neurode\ntorch.set_num_threads(1)\nneurode.train(resume={str(root)!r})\n")
        process = subprocess.Popen([sys.executable, "-c", script], env=env)
        deadline = time.monotonic() + 60
        while not (root / "state" / CHECKPOINT).is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        first = False
        assert (root / "state" / CHECKPOINT).is_file(), f"attempt {attempt}: no checkpoint"
        rd.load_tensors(root / "state" / CHECKPOINT)
        rd.load_tensors(root / "model.safetensors")
        rd.read_json(root / "run.json")
        assert neurode.load_run(root, weights="latest").model is not None
        leftovers = [p.name for p in root.rglob("*.partial")]
        # a kill may leave a temporary file behind, never a damaged real one
        assert all(name.startswith(".") for name in leftovers)
    run = neurode.train(resume=root, overrides={"training.epochs": 2})
    assert run.summary["status"] == "completed"


def test_early_stopping_after_validations_without_improvement(fast_config, monkeypatch):
    from neurode.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "validate", lambda self: {"val_rmse": 1.0, "val_nfe_per_sample": 0.0})
    run = neurode.train(fast_config, overrides={"training.early_stopping": 1, "training.epochs": 5})
    assert run.summary["status"] == "completed"
    assert run.summary["step"] == 6  # epoch 1 improved (first), epoch 2 did not: stop
    assert run.summary["best_step"] == 3


def test_float64_runs_in_float64(fast_config):
    run = neurode.train(fast_config, overrides={"runtime.dtype": "float64", "training.max_steps": 1})
    assert all(p.dtype == torch.float64 for p in run.model.parameters())
    assert run.info["dtype"] == "float64"


def test_solver_tangent_control_reaches_the_training_solves(fast_config, tmp_path):
    """Unset, the training solves control a tangent too (one more evaluation per stage); false turns it off."""
    def first_step(tangent, name):
        config = {**fast_config, "training": {**fast_config["training"], "max_steps": 1},
                  "output": {"dir": str(tmp_path / name), "tensorboard": False}}
        if tangent is not None:
            config["solver"] = {"tangent_control": tangent}
        run = neurode.train(config)
        assert run.model.settings.tangent_control is tangent
        return next(row for row in run.metrics if "loss" in row)

    automatic, off = first_step(None, "auto"), first_step(False, "off")
    # the solution's rows (nfe_per_sample) exclude the tangent's forward differences; evaluations (nfe) do not
    assert automatic["nfe"] > 1.5 * off["nfe"]
    assert "tangent_control = false" in (tmp_path / "off" / "config.toml").read_text()
