"""Run plots: predictions.png is drawn for any validation batch, including trajectories observed once."""

from __future__ import annotations

import torch

from neurode.datasets import irregular_example
from neurode.datasets.io import write_zarr
from neurode.framework.model import build_model
from neurode.training.data import RunData
from neurode.training.plots import plot_predictions


def test_a_trajectory_observed_once_is_drawn_over_the_batchs_span(tmp_path):
    ds = irregular_example(6, 5, seed=3)
    once = ds["time"].copy()
    once[0, 1:] = float("nan")  # trajectory 0: one observation time only
    ds["time"] = once
    for name in ("x", "v"):
        ds[name] = ds[name].where(~once.isnull())
    write_zarr(ds, tmp_path / "once.zarr")
    data = RunData.open(tmp_path / "once.zarr", split=(1.0, 0.0, 0.0))
    batch = data.batch("train", range(len(data.splits["train"])))
    single = [i for i in range(batch.batch_size) if int(batch.time_mask[i].sum()) == 1]
    assert single, "the batch holds a trajectory observed once"
    torch.manual_seed(0)
    model = build_model("neural_ode", n_features=data.n_features, n_static=data.n_static, dynamics="mlp",
                        dynamics_options={"width": 4, "depth": 1})
    path = tmp_path / "predictions.png"
    plot_predictions(path, model, batch, data, points=8)
    assert path.read_bytes().startswith(b"\x89PNG")
