"""``neurode data``: look at stored trajectory datasets.

``neurode data info PATH`` opens PATH through the registered loaders (any
format and layout they read), lazily, and prints its dimensions, variables
with units, observations per trajectory, time span and missing fraction;
``--json`` prints the same as one JSON object on stdout:

.. code-block:: json

    {"path", "loader", "dims": {}, "trajectories", "variables": [{"name", "role", "dims",
     "dtype", "units", "long_name", "observed", "missing_fraction"}],
     "observations_per_trajectory": {"min", "median", "mean", "max", "total", "counts"},
     "time": {"units", "min", "max"}, "missing_fraction", "attrs": {}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

data_app = typer.Typer(name="data", help="Inspect stored trajectory datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("info")
def info(
    path: Annotated[Path, typer.Argument(help="A dataset store: zarr, netCDF, or anything a loader plugin reads.")],
    loader: Annotated[
        str | None,
        typer.Option("--loader", help="Loader name (default: chosen by path; see `neurode plugins --kind loader`)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    time_unit: Annotated[
        str | None,
        typer.Option(
            "--time-unit",
            metavar="UNIT",
            help="Express time in this unit (seconds, minutes, hours, days, weeks, years). Default: the store's.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Describe a stored dataset: dims, variables and units, observations, time span, missing data."""
    from neurode.cli.console import plugin_warnings_on_stderr
    from neurode.datasets.info import summarize
    from neurode.datasets.io import find_loader, load

    with plugin_warnings_on_stderr():
        chosen = find_loader(path, loader=loader) if path.exists() else None
        ds = load(path, loader=loader, **({"time_unit": time_unit} if time_unit else {}))
    report = {"path": str(path), "loader": chosen.name if chosen else loader, **summarize(ds)}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    console.print(Text(f"{report['path']} (loader {report['loader']})", style="bold"))
    console.print("dims: " + ", ".join(f"{k}={v}" for k, v in report["dims"].items()), markup=False)

    table = Table(title="variables", title_justify="left")
    for header in ("name", "role", "dims", "units", "missing"):
        table.add_column(header, overflow="fold")
    table.add_column("long name", overflow="fold", ratio=1)
    for var in report["variables"]:
        table.add_row(
            *(
                Text(str(cell))
                for cell in (
                    var["name"],
                    var["role"],
                    "(" + ", ".join(var["dims"]) + ")",
                    var["units"] or "-",
                    _percent(var["missing_fraction"]) if "missing_fraction" in var else "",
                    var["long_name"] or "-",
                )
            )
        )
    console.print(table)

    counts = report["observations_per_trajectory"]
    console.print(
        f"observations per trajectory: min {counts['min']}, median {counts['median']:g}, "
        f"mean {counts['mean']:.1f}, max {counts['max']} ({counts['total']} in all)",
        markup=False,
    )
    time = report["time"]
    span = "-" if time["min"] is None else f"{time['min']:g} to {time['max']:g}"
    console.print(f"time span: {span} ({time['units'] or 'no units'})", markup=False)
    console.print(
        f"missing fraction (state variables, at observation times): {_percent(report['missing_fraction'])}",
        markup=False,
    )
    provenance = {k: v for k, v in report["attrs"].items() if k.startswith("neurode_")}
    if provenance:
        console.print(
            "provenance: " + ", ".join(f"{k.removeprefix('neurode_')}={v}" for k, v in provenance.items()),
            markup=False,
        )
