"""The training progress bar, driven by a real (tiny) training run into a rich Console writing to a buffer."""

from __future__ import annotations

import io
import re

from rich.console import Console

from neurode.cli.progress import TrainProgress
from neurode.datasets import irregular_example
from neurode.datasets.io import write_zarr
from neurode.training.run import train


def test_progress_bar_shows_step_loss_validation_nfe_and_throughput(tmp_path):
    store = tmp_path / "example.zarr"
    write_zarr(irregular_example(24, 6, seed=3), store)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    config = {"data": {"path": str(store)}, "dynamics": {"options": {"width": 8, "depth": 1}},
              "training": {"epochs": 2, "batch_size": 8}, "runtime": {"threads": 1, "device": "cpu"},
              "output": {"dir": str(tmp_path / "run"), "tensorboard": False}}
    with TrainProgress(enabled=True, console=console) as progress:
        run = train(config, reporter=progress)
    # the last frame of the live display, as a terminal would show it
    text = buffer.getvalue().replace("\r", "\n")
    last = [line for line in text.splitlines() if "train" in line and "6/6" in line]
    assert last, text
    line = last[-1]
    first_val = next(row["val_rmse"] for row in run.metrics if "val_rmse" in row and row["epoch"] == 0)
    assert "epoch 1" in line
    assert re.search(r"loss \d", line), line
    # the validation RMSE shown is the latest one (epoch 1's), not a placeholder
    last_val = [row["val_rmse"] for row in run.metrics if "val_rmse" in row][-1]
    assert f"val {last_val:.4g}" in line and first_val != last_val, line
    assert re.search(r"NFE fwd \d+ bwd \d+", line), line
    assert re.search(r"\d+ samples/s", line), line


def test_a_disabled_progress_bar_writes_nothing(tmp_path):
    buffer = io.StringIO()
    with TrainProgress(enabled=False, console=Console(file=buffer, force_terminal=True)) as progress:
        progress.start(total_steps=3, step=0, run_dir=tmp_path)
        progress.step({"step": 1, "epoch": 0, "loss": 0.5, "samples_per_s": 10.0, "nfe": 20.0})
    assert buffer.getvalue() == ""
