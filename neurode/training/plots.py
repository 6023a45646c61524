"""The run's figures: ``loss.png`` (training and validation curves) and ``predictions.png``.

Drawn with matplotlib's Agg backend (no display needed) into memory and
written atomically, like every file of a run directory. Predictions are shown
in physical units (normalisation undone), with the variables' units on the axes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from neurode.training.rundir import atomic_write


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    atomic_write(path, buffer.getvalue())


def plot_loss(path: Path, metrics: list[dict]) -> None:
    """Train and validation MSE (log scale); beside it, the model's own objective when that is not the MSE
    (a negative ELBO, which may be negative and has no place on a log axis)."""
    Figure = _figure()
    rows = [row for row in metrics if "loss" in row]
    objective_differs = any("mse" in row and row["mse"] != row["loss"] for row in rows)
    figure = Figure(figsize=(10 if objective_differs else 6, 3.5), layout="constrained")
    axes = figure.add_subplot(1, 2 if objective_differs else 1, 1)
    train = [(row["step"], row.get("mse", row["loss"])) for row in rows]
    val = [(row["step"], row["val_rmse"] ** 2) for row in metrics if "val_rmse" in row]
    if train:
        axes.plot(*zip(*train, strict=True), label="train MSE (observed values)")
    if val:
        axes.plot(*zip(*val, strict=True), "o-", label="validation MSE")
    axes.set_yscale("log")
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("mean squared error (normalised units)")
    axes.legend(loc="upper right")
    if objective_differs:
        objective = figure.add_subplot(1, 2, 2)
        objective.plot([row["step"] for row in rows], [row["loss"] for row in rows], color="C2")
        objective.set_xlabel("optimiser step")
        objective.set_ylabel("training objective (the model's loss)")
    _save(figure, path)


def _draws_samples(model) -> bool:
    import inspect

    try:
        return "samples" in inspect.signature(model.predict).parameters
    except (TypeError, ValueError):
        return False


def plot_predictions(path: Path, model, batch, data, points: int = 100) -> None:
    """Observed values and the model's trajectories for the trajectories of ``batch``."""
    Figure = _figure()
    times = batch.times
    span = torch.where(batch.time_mask, times, times[:, :1]).max(dim=1).values - times[:, 0]
    # A trajectory observed once has no span of its own (and a grid of equal times is no grid):
    # draw it over the batch's longest span, or one time unit if every trajectory was observed once.
    longest = span.max()
    span = torch.where(span > 0, span, longest if bool(longest > 0) else torch.ones_like(longest))
    grid = times[:, :1] + span[:, None] * torch.linspace(0, 1, points, dtype=times.dtype, device=times.device)
    was_training = model.training
    model.eval()
    band = None
    with torch.no_grad():
        pred = model.predict(batch, times=grid)
        if _draws_samples(model):
            # a posterior (latent_ode): the mean and a 5-95 % band of 32 posterior predictive draws
            draws = model.predict(batch, times=grid, samples=32).double().cpu().numpy()
            band = data.normalization.denormalize(np.nanquantile(draws, [0.05, 0.95], axis=0))
    model.train(was_training)
    stats = data.normalization
    pred = stats.denormalize(pred.double().cpu().numpy())
    observed = stats.denormalize(batch.values.double().cpu().numpy())
    mask = (batch.mask & batch.time_mask.unsqueeze(-1)).cpu().numpy()
    names = data.layout.feature_names
    figure = Figure(figsize=(3.2 * len(names), 2.4 * batch.batch_size), layout="constrained")
    axes = figure.subplots(batch.batch_size, len(names), squeeze=False)
    t_obs, t_grid = times.double().cpu().numpy(), grid.double().cpu().numpy()
    for b in range(batch.batch_size):
        for f, name in enumerate(names):
            ax = axes[b, f]
            ax.plot(t_grid[b], pred[b, :, f], color="C0", label="predicted" if band is None else "posterior mean")
            if band is not None:
                ax.fill_between(t_grid[b], band[0, b, :, f], band[1, b, :, f], color="C0", alpha=0.25, lw=0,
                                label="5-95 % of posterior draws")
            seen = mask[b, :, f]
            ax.plot(t_obs[b][seen], observed[b][seen, f], ".", color="C1", label="observed")
            variable = name.split("[")[0]
            ax.set_ylabel(f"{name} [{data.units.get(variable, '') or '1'}]")
            if b == batch.batch_size - 1:
                ax.set_xlabel(f"time [{data.units.get('time', '') or '1'}]")
            if np.isfinite(pred[b, :, f]).any() and b == 0 and f == 0:
                ax.legend(fontsize="small")
    _save(figure, path)
