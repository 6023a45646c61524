"""``neurode train``: fit a registered model to a trajectory dataset.

The trainer does not exist yet. The command already has the options the
trainer will take, checked as they will be, so scripts and ``--help`` can be
written against it; run, it says plainly that training is not implemented and
exits with status 1, writing nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from neurode.framework.errors import NeurodeError

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def _check_device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"got {value!r}; expected auto, cpu, mps, cuda or cuda:N (e.g. cuda:0)")
    return value


def _check_positive(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter(f"got {value!r}; expected a positive number")
    return value


def train(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            exists=True,
            help="Dataset store (zarr, netCDF) to train on. Default: the built-in simulated dataset.",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model name (see `neurode plugins`).")] = None,
    solver: Annotated[str, typer.Option("--solver", help="Registered solver name.")] = "dopri5",
    adjoint: Annotated[str, typer.Option("--adjoint", help="Registered gradient method name.")] = "direct",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training data.")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Trajectories per batch.")] = 32,
    lr: Annotated[float, typer.Option("--lr", callback=_check_positive, help="Learning rate (> 0).")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for initialisation and batching.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory (config, weights, metrics). Default: runs/<timestamp>.")
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device", callback=_check_device, help="auto (CUDA, then MPS, then CPU), cpu, mps, cuda or cuda:N."
        ),
    ] = "auto",
) -> None:
    """Train a model on a trajectory dataset (NOT YET IMPLEMENTED).

    Bare `neurode train` will train a default model on a built-in simulated
    dataset; today it only reports that training is not implemented.
    """
    raise NeurodeError(
        "'neurode train' is not yet implemented: neurode has no trainer yet, so nothing was trained "
        "and nothing was written. `neurode plugins` lists the installed components."
    )
