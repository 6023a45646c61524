"""``neurode train``: fit a registered model to a trajectory dataset, into a run directory.

Thin: flags become dotted overrides of the config (``--config FILE.toml``
first, flags on top), and :func:`neurode.training.run.train` does the rest.
torch and the trainer are imported inside the command, so ``neurode --help``
stays quick.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _tensorboard_help() -> str:
    # find_spec looks the package up without importing it: --help stays quick
    from importlib.util import find_spec

    here = ("installed here" if find_spec("tensorboard") is not None
            else "NOT installed here, so none are written: pip install 'neurode[tensorboard]'")
    return ("TensorBoard event files in the run directory (tensorboard --logdir runs/). Default: when "
            f"tensorboard is installed (it is {here}); --tensorboard requires it, --no-tensorboard turns it off. "
            "run.json records what happened.")


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def _check_device(value: str | None) -> str | None:
    if value is not None and not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"got {value!r}; expected auto, cpu, mps, cuda or cuda:N (e.g. cuda:0)")
    return value


def _check_positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"got {value!r}; expected a positive number")
    return value


def parse_assignments(values: list[str] | None, option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is read as a TOML value (``3``, ``1e-3``, ``true``, ``"tanh"``), else a string."""
    import tomllib

    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"got {item!r}; expected KEY=VALUE", param_hint=option)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def _split(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; expected three fractions like 0.8,0.1,0.1") from None
    return parts


def train(
    config: Annotated[Path | None, typer.Option("--config", exists=True, dir_okay=False,
                                                help="TOML config; flags override it.")] = None,
    data: Annotated[Path | None, typer.Option("--data", exists=True,
                                              help="Dataset store (zarr, netCDF). Default: the built-in "
                                                   "simulated oscillator dataset.")] = None,
    variables: Annotated[str | None, typer.Option("--variables", help="Comma-separated state variables.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model (see `neurode plugins`).")] = None,
    model_option: Annotated[list[str] | None, typer.Option("--model-option", help="Model option KEY=VALUE.")] = None,
    dynamics: Annotated[str | None, typer.Option("--dynamics", help="Registered dynamics network.")] = None,
    dynamics_option: Annotated[list[str] | None, typer.Option("--dynamics-option",
                                                              help="Dynamics option KEY=VALUE.")] = None,
    solver: Annotated[str | None, typer.Option("--solver", help="Registered solver name.")] = None,
    adjoint: Annotated[str | None, typer.Option("--adjoint", help="Registered gradient method name.")] = None,
    rtol: Annotated[float | None, typer.Option("--rtol", callback=_check_positive)] = None,
    atol: Annotated[float | None, typer.Option("--atol", callback=_check_positive)] = None,
    controller: Annotated[str | None, typer.Option("--controller", help="i, pi or pid.")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="adam or adamw.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", callback=_check_positive, help="Learning rate (> 0).")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="none, cosine or plateau.")] = None,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip", help="Max gradient norm (0: off).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Passes over the training data.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N steps.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Trajectories per batch.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="train,val,test fractions, e.g. 0.8,0.1,0.1.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for initialisation and batching.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every", min=1)] = None,
    early_stopping: Annotated[int | None, typer.Option("--early-stopping", min=1,
                                                       help="Stop after N validations without improvement.")] = None,
    device: Annotated[str | None, typer.Option("--device", callback=_check_device,
                                               help="auto (CUDA, then MPS, then CPU), cpu, mps, cuda or "
                                                    "cuda:N.")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32 or float64.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads "
                                                "(default: free cores, at least 1).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory. Default: runs/<model>-<time>.")] = None,
    tensorboard: Annotated[bool | None, typer.Option("--tensorboard/--no-tensorboard",
                                                     help=_tensorboard_help())] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any setting as dotted KEY=VALUE "
                                                   "(e.g. training.log_every=5).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this directory "
                                                "exactly (only --epochs/--max-steps may change).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; only the summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train a model on a trajectory dataset; the run directory holds config, weights, metrics and plots.

    Bare `neurode train` trains a neural ODE on a built-in simulated dataset. Model and dynamics
    options are checked against the registered factory's signature before any data is read.
    """
    overrides: dict[str, Any] = {}
    flat = {
        "data.path": str(data) if data is not None else None,
        "data.variables": [v.strip() for v in variables.split(",")] if variables else None,
        "data.split": _split(split), "model.name": model, "dynamics.name": dynamics,
        "solver.name": solver, "solver.adjoint": adjoint, "solver.rtol": rtol, "solver.atol": atol,
        "solver.controller": controller, "optimizer.name": optimizer, "optimizer.lr": lr,
        "optimizer.weight_decay": weight_decay, "schedule.name": schedule, "training.grad_clip": grad_clip,
        "training.epochs": epochs, "training.max_steps": max_steps, "training.batch_size": batch_size,
        "training.seed": seed, "training.checkpoint_every": checkpoint_every,
        "training.early_stopping": early_stopping, "runtime.device": device, "runtime.dtype": dtype,
        "runtime.threads": threads, "output.dir": str(out) if out is not None else None,
        "output.tensorboard": tensorboard,
    }
    overrides.update({k: v for k, v in flat.items() if v is not None})
    for key, value in parse_assignments(model_option, "--model-option").items():
        overrides[f"model.options.{key}"] = value
    for key, value in parse_assignments(dynamics_option, "--dynamics-option").items():
        overrides[f"dynamics.options.{key}"] = value
    overrides.update(parse_assignments(set_, "--set"))

    from neurode.cli.progress import TrainProgress
    from neurode.training.run import train as run_training
    from neurode.training.trainer import INTERRUPTED

    if resume is not None and config is not None:
        raise typer.BadParameter("--resume continues a run with its stored config; drop --config",
                                 param_hint="--config")
    with TrainProgress(enabled=not quiet and not as_json) as progress:
        run = run_training(config, resume=resume, overrides=overrides, reporter=progress)
    summary = run.summary
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(summary_line(summary))
    if summary["status"] == INTERRUPTED:
        typer.echo(f"interrupted by {summary.get('signal')} at step {summary['step']}; checkpoint saved. "
                   f"Resume with: {summary['resume']}", err=True)
        raise typer.Exit(130)


def summary_line(summary: dict[str, Any]) -> str:
    best, base = summary.get("best_val_rmse"), summary.get("baseline_val_rmse")
    metric = "no validation" if best is None else f"best val RMSE {best:.4g} at step {summary['best_step']}"
    if best is not None and base:
        metric += f" ({100 * best / base:.1f}% of the first-observation baseline {base:.4g})"
    return (f"{summary['status']}: {summary['step']} steps in {summary['seconds']:.1f} s, {metric}; "
            f"run directory {summary['run_dir']}")
