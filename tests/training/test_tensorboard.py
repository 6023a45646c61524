"""TensorBoard event files: written into the run directory when tensorboard is installed, skipped (and said so)
when it is not, refused before any data is read when required and missing."""

from __future__ import annotations

import json
import sys

import pytest

from neurode.training.config import ConfigError, validate_config
from neurode.training.run import train


def _event_files(run_dir):
    return sorted(run_dir.glob("events.out.tfevents.*"))


def _hide_tensorboard(monkeypatch):
    # None in sys.modules makes `import` raise ImportError, as when the package is absent
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)


def test_event_files_mirror_the_metrics_when_tensorboard_is_installed(fast_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(fast_config)
    files = _event_files(run.path)
    assert files, f"no event files in {sorted(p.name for p in run.path.iterdir())}"
    info = json.loads((run.path / "run.json").read_text())
    assert info["tensorboard"] == {"events": True, "log_dir": str(run.path)}

    events = EventAccumulator(str(run.path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/nfe_per_sample", "train/samples_per_s",
            "val/rmse", "val/nfe_per_sample"} <= tags
    train_rows = [row for row in run.metrics if "loss" in row]
    val_rows = [row for row in run.metrics if "val_rmse" in row]
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [row["step"] for row in train_rows]
    assert [e.value for e in logged] == pytest.approx([row["loss"] for row in train_rows], rel=1e-6)
    assert [e.value for e in events.Scalars("val/rmse")] == pytest.approx([r["val_rmse"] for r in val_rows],
                                                                         rel=1e-6)


def test_without_tensorboard_the_run_trains_and_run_json_says_why(fast_config, monkeypatch):
    _hide_tensorboard(monkeypatch)
    run = train(fast_config)
    assert run.status == "completed"
    assert not _event_files(run.path)
    status = json.loads((run.path / "run.json").read_text())["tensorboard"]
    assert status["events"] is False
    assert "tensorboard is not installed" in status["reason"]
    assert "pip install 'neurode[tensorboard]'" in status["reason"]


def test_tensorboard_off_writes_no_events(fast_config):
    run = train({**fast_config, "output": {**fast_config["output"], "tensorboard": False}})
    assert not _event_files(run.path)
    assert json.loads((run.path / "run.json").read_text())["tensorboard"] == {
        "events": False, "reason": "turned off (output.tensorboard = false)"}


def test_tensorboard_required_but_missing_is_a_config_problem(monkeypatch):
    _hide_tensorboard(monkeypatch)
    with pytest.raises(ConfigError) as info:
        validate_config({"output": {"tensorboard": True}, "training": {"epochs": 0}})
    text = str(info.value)
    assert "2 problems" in text  # reported with the others, at once
    assert "output.tensorboard: got True; expected tensorboard to be importable" in text
    assert "pip install 'neurode[tensorboard]'" in text


def test_a_resumed_run_hides_the_steps_it_replays(fast_config):
    """Rows logged after the checkpoint by an interrupted run are logged again on resume: shown once, not twice."""
    pytest.importorskip("tensorboard")
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from neurode.training.trainer import Reporter

    run_dir = fast_config["output"]["dir"]

    class KeepStep2Checkpoint(Reporter):
        def step(self, row):
            if row["step"] == 3:  # the checkpoint of step 2 is on disk; keep it as an interruption would
                shutil.copy(f"{run_dir}/state/checkpoint.safetensors", f"{run_dir}/step2.safetensors")

    config = {**fast_config, "training": {**fast_config["training"], "max_steps": 5}}
    train(config, reporter=KeepStep2Checkpoint())
    # the run "died" after logging steps 3..5: back to the step-2 checkpoint, then resume
    shutil.move(f"{run_dir}/step2.safetensors", f"{run_dir}/state/checkpoint.safetensors")
    run = train(resume=run_dir)
    assert len(_event_files(run.path)) == 2
    events = EventAccumulator(str(run.path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]
