"""``neurode evaluate RUN_DIR``: errors per variable in physical units, against the first-observation baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `neurode train`.")],
    data: Annotated[Path | None, typer.Option("--data", exists=True,
                                              help="Dataset to evaluate on (default: the run's).")] = None,
    split: Annotated[str, typer.Option("--split", help="test, val, train or all.")] = "test",
    t_split: Annotated[float | None, typer.Option("--t-split", help="Report interpolation (before) and "
                                                  "extrapolation (from this time on) separately, at this "
                                                  "time instead of the automatic one.")] = None,
    weights: Annotated[str, typer.Option("--weights", help="best or latest.")] = "best",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """RMSE/MAE per variable (normalisation undone), the baseline, NFE per sample.

    Interpolation vs extrapolation is reported automatically when the data has a held-out tail:
    observations after the last time of the run's training split (recorded in run.json), which the
    model never saw. Those are extrapolation; the rest, up to and at that time, interpolation.
    --t-split T sets the boundary instead (extrapolation from T on) and always reports both.
    """
    from neurode.cli.choices import check_choice

    check_choice("--split", split, ("test", "val", "train", "all"))
    check_choice("--weights", weights, ("best", "latest"))
    from neurode.training.run import load_run

    result = load_run(run_dir, weights=weights).evaluate(data, split=split, t_split=t_split)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _table(result)


def _nfe(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _rmse(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    caption = None
    if "t_split" in result:
        caption = (f"extrapolation: observations after t = {result['t_split']:g}, the last training time"
                   if result["t_split_source"] == "training times"
                   else f"extrapolation: observations from t = {result['t_split']:g} on (--t-split)")
    table = Table(title=f"{result['run_dir']}: {result['split']} split of {result['data']} "
                        f"({result['n_trajectories']} trajectories, {_nfe(result['nfe_per_sample'])} NFE/sample)",
                  caption=caption)
    columns = ["variable", "units", "RMSE", "MAE", "baseline RMSE", "observations"]
    if "t_split" in result:
        columns += ["interp. RMSE", "extrap. RMSE"]
    for column in columns:
        table.add_column(column)
    for name, row in result["variables"].items():
        cells = [name, row["units"], f"{row['rmse']:.4g}", f"{row['mae']:.4g}", f"{row['baseline_rmse']:.4g}",
                 str(row["n_observations"])]
        if "t_split" in result:
            cells += [_rmse(row["interpolation"]["rmse"]), _rmse(row["extrapolation"]["rmse"])]
        table.add_row(*cells)
    Console().print(table)
