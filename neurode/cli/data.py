"""``neurode data``: look at stored trajectory datasets.

``neurode data info PATH`` opens PATH through the registered loaders (any
format and layout they read), lazily, and prints its dimensions, variables
with units, observations per trajectory, time span and missing fraction,
then every way the data breaks the schema (times that repeat or decrease,
values in padding...); it exits with status 1 when there is any.
``--json`` prints the same as one JSON object on stdout:

.. code-block:: json

    {"path", "loader", "dims": {}, "trajectories", "variables": [{"name", "role", "dims",
     "dtype", "units", "long_name", "observed", "missing_fraction"}],
     "observations_per_trajectory": {"min", "median", "mean", "max", "total", "counts"},
     "time": {"units", "min", "max"}, "missing_fraction", "attrs": {}, "violations": []}

``neurode data validate PATH`` checks structure and values and prints every
violation (``--json``: ``{"path", "loader", "violations": []}``); exit status
1 if there is any, 0 if the store conforms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

data_app = typer.Typer(name="data", help="Inspect stored trajectory datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


PathArgument = Annotated[
    Path,
    typer.Argument(
        metavar="PATH", help="A dataset store: zarr, netCDF, or anything a loader plugin reads.", show_default=False
    ),
]
LoaderOption = Annotated[
    str | None,
    typer.Option(
        "--loader",
        metavar="NAME",
        help="Loader name (default: chosen by path; see `neurode plugins --kind loader`).",
        show_default=False,
    ),
]
TimeUnitOption = Annotated[
    str | None,
    typer.Option(
        "--time-unit",
        metavar="UNIT",
        help="Express time in this unit (seconds, minutes, hours, days, weeks, years). Default: the store's.",
        show_default=False,
    ),
]


def _open(path: Path, loader: str | None, time_unit: str | None) -> tuple[str | None, Any]:
    """The loader's name and the lazily opened dataset, times not yet checked (the caller reports them)."""
    from neurode.cli.console import plugin_warnings_on_stderr
    from neurode.datasets.io import find_loader, load

    with plugin_warnings_on_stderr():
        chosen = find_loader(path, loader=loader) if path.exists() else None
        options = {"time_unit": time_unit} if time_unit else {}
        ds = load(path, loader=loader, check_times=False, **options)
    return (chosen.name if chosen else loader), ds


@data_app.command("info")
def info(
    path: PathArgument,
    loader: LoaderOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    time_unit: TimeUnitOption = None,
) -> None:
    """Describe a stored dataset: dims, variables and units, observations, time span, missing data.

    Also lists every violation of the schema; the exit status is 1 if there is any.
    """
    from neurode.datasets.info import summarize
    from neurode.datasets.schema import violations

    loader_name, ds = _open(path, loader, time_unit)
    report = {"path": str(path), "loader": loader_name, **summarize(ds), "violations": violations(ds)}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
        _print_violations(report["path"], report["violations"])
    if report["violations"]:
        raise typer.Exit(1)


@data_app.command("validate")
def validate(
    path: PathArgument,
    loader: LoaderOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the violations as JSON on stdout.")] = False,
    time_unit: TimeUnitOption = None,
) -> None:
    """Check a stored dataset against the trajectory schema and print every violation.

    Structure (dims, dtypes, units) and values (times strictly increasing within
    each trajectory, padding only at the end, no values at padded times). The
    exit status is 1 if anything is wrong, 0 if the store conforms.
    """
    from neurode.datasets.errors import SchemaError
    from neurode.datasets.schema import violations

    try:
        loader_name, ds = _open(path, loader, time_unit)
    except SchemaError as exc:  # the structure is wrong: that is the answer, not a failure to answer
        loader_name, problems = loader, exc.violations
    else:
        problems = violations(ds)
    if as_json:
        typer.echo(json.dumps({"path": str(path), "loader": loader_name, "violations": problems}, indent=2))
    elif problems:
        _print_violations(str(path), problems)
    else:
        typer.echo(f"{path}: conforms to the neurode trajectory schema ({ds.sizes['trajectory']} trajectories)")
    if problems:
        raise typer.Exit(1)


def _print_violations(path: str, problems: list[str]) -> None:
    if problems:
        count = len(problems)
        typer.echo(f"{path}: {count} violation{'s' * (count != 1)} of the neurode trajectory schema:")
        for problem in problems:
            typer.echo(f"  - {problem}")


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
