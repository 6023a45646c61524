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


def test_loss_plot_shows_an_objective_that_is_not_the_mse_beside_it(tmp_path):
    # a negative ELBO can be negative: it gets its own linear panel, the MSE keeps the log axis
    import struct

    from neurode.training.plots import plot_loss

    def width(path):
        return struct.unpack(">I", path.read_bytes()[16:20])[0]  # the PNG header's IHDR width

    elbo = [{"step": i, "loss": 5.0 / i - 2.0, "mse": 1.0 / i} for i in range(1, 20)] + [{"step": 10, "val_rmse": 0.3}]
    mse = [{"step": i, "loss": 1.0 / i, "mse": 1.0 / i} for i in range(1, 20)]
    plot_loss(tmp_path / "elbo.png", elbo)
    plot_loss(tmp_path / "mse.png", mse)
    assert width(tmp_path / "elbo.png") > 1.5 * width(tmp_path / "mse.png")
