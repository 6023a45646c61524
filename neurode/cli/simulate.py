"""``neurode simulate``: generate a stored dataset from a physical system.

``neurode simulate SYSTEM --out PATH.zarr`` solves SYSTEM (see
``neurode simulate --list``) for ``--count`` trajectories with parameters
drawn from their ranges (``--param damping=0.1:0.5``, repeatable, or
``--param damping=0.2`` to fix one), observes them regularly or irregularly
with optional per-variable missingness and Gaussian noise, and writes a
CF-attributed zarr store (or a netCDF file, for ``--out PATH.nc``) with
provenance attributes. The store appears only when complete: an error or
Ctrl-C leaves nothing at PATH.

Every option, the output path included, is checked before the progress bar
starts: a mistake costs no simulation time.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Annotated

import typer


class Sampling(str, enum.Enum):
    regular = "regular"
    irregular = "irregular"


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def _parse_float(text: str, what: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{what}: {text!r} is not a number", param_hint=option) from None
    if not math.isfinite(value):
        raise typer.BadParameter(f"{what}: {text!r} is not a finite number", param_hint=option)
    return value


def parse_param(text: str) -> tuple[str, float | tuple[float, float]]:
    """``name=low:high`` or ``name=value``; a malformed one is a usage error naming ``--param``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise typer.BadParameter(
            f"got {text!r}; expected NAME=LOW:HIGH or NAME=VALUE (e.g. damping=0.1:0.5)", param_hint="--param"
        )
    name = name.strip()
    if ":" in value:
        low_text, _, high_text = value.partition(":")
        low, high = _parse_float(low_text, name, "--param"), _parse_float(high_text, name, "--param")
        if low > high:
            raise typer.BadParameter(
                f"{name}: range {low:g}:{high:g} has low > high; expected LOW <= HIGH", param_hint="--param"
            )
        return name, (low, high)
    return name, _parse_float(value, name, "--param")


def parse_span(text: str) -> tuple[float, float]:
    """``t0:t1`` with t0 < t1."""
    start, sep, stop = text.partition(":")
    if not sep:
        raise typer.BadParameter(f"got {text!r}; expected T0:T1 (e.g. 0:10)", param_hint="--t-span")
    t0, t1 = _parse_float(start, "--t-span", "--t-span"), _parse_float(stop, "--t-span", "--t-span")
    if not t0 < t1:
        raise typer.BadParameter(f"got {text!r}; expected T0 < T1", param_hint="--t-span")
    return t0, t1


def simulate(
    system: Annotated[
        str | None, typer.Argument(metavar="SYSTEM", help="System to simulate (see --list).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="PATH",
            help="Store to write: a zarr store (data/oscillator.zarr), or netCDF for a path ending in .nc.",
            show_default=False,
        ),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of trajectories.")] = 100,
    obs: Annotated[
        int, typer.Option("--obs", min=1, help="Observations per trajectory (the maximum when irregular).")
    ] = 100,
    t_span: Annotated[
        str | None, typer.Option("--t-span", help="Time span T0:T1 (default: the system's).", show_default=False)
    ] = None,
    sampling: Annotated[
        Sampling,
        typer.Option("--sampling", help="regular: one shared grid; irregular: random times and counts per trajectory."),
    ] = Sampling.regular,
    missing: Annotated[
        float,
        typer.Option("--missing", min=0.0, max=0.999, help="Probability that a variable is unobserved at a time."),
    ] = 0.0,
    noise: Annotated[
        float, typer.Option("--noise", min=0.0, help="Std of Gaussian observation noise (variable units).")
    ] = 0.0,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="Parameter range NAME=LOW:HIGH or value NAME=V; repeatable.", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same options and seed, same data.")] = 0,
    solver: Annotated[
        str | None,
        typer.Option("--solver", help="Registered solver (default: the system's own: dopri5, or rodas5p for a stiff "
                                      "system such as robertson).", show_default=False),
    ] = None,
    rtol: Annotated[float, typer.Option("--rtol", min=0.0, help="Solver relative tolerance.")] = 1e-8,
    atol: Annotated[float, typer.Option("--atol", min=0.0, help="Solver absolute tolerance.")] = 1e-10,
    zarr_format: Annotated[int, typer.Option("--zarr-format", min=2, max=3, help="Zarr format version, 2 or 3.")] = 3,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store at --out.")] = False,
    list_systems: Annotated[
        bool, typer.Option("--list", help="List the systems and their parameters, then exit.")
    ] = False,
) -> None:
    """Simulate trajectories of a physical system and write them to a zarr store or a netCDF file."""
    if list_systems:
        _print_systems()
        return
    if system is None:
        raise typer.BadParameter("name a system to simulate (see `neurode simulate --list`)", param_hint="SYSTEM")
    if out is None:
        raise typer.BadParameter(f"give the store to write, e.g. --out data/{system}.zarr", param_hint="--out")

    from neurode.datasets.errors import StoreExistsError
    from neurode.datasets.io import check_writable, is_netcdf_path, netcdf_write_engine
    from neurode.datasets.simulation import check_options, resolve_parameter_ranges
    from neurode.datasets.systems import get_system

    # Everything that can be wrong with the request fails here, before any work.
    ranges = dict(parse_param(text) for text in (param or []))
    span = parse_span(t_span) if t_span is not None else None
    spec = get_system(system)
    resolve_parameter_ranges(spec, ranges)
    check_options(count, obs, span or spec.t_span, sampling.value, missing, noise, rtol, atol)
    if solver is not None:
        from neurode.cli.choices import check_choice
        from neurode.framework.registry import get_registry

        check_choice("--solver", solver, get_registry().names("solver"))
    if out.exists() and not overwrite:
        raise StoreExistsError(f"{out}: already exists; pass --overwrite to replace it")
    check_writable(out, overwrite=overwrite)
    if is_netcdf_path(out):
        netcdf_write_engine(out)
    _run(spec, out, count, obs, span, sampling.value, missing, noise, ranges, seed, solver, rtol, atol, zarr_format,
         overwrite)


def _run(
    spec, out, count, obs, span, sampling, missing, noise, ranges, seed, solver, rtol, atol, zarr_format, overwrite
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from neurode.datasets.io import write_store
    from neurode.datasets.simulation import simulate as run_simulation

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        solving = progress.add_task(f"simulating {spec.name}", total=count)
        ds = run_simulation(
            spec,
            n_trajectories=count,
            n_obs=obs,
            t_span=span,
            sampling=sampling,
            missing=missing,
            noise=noise,
            parameters=ranges,
            seed=seed,
            method=solver,
            rtol=rtol,
            atol=atol,
            progress=lambda done, total: progress.update(solving, completed=done),
        )
        writing = progress.add_task(f"writing {out}", total=1)
        write_store(ds, out, zarr_format=zarr_format, overwrite=overwrite)
        progress.update(writing, completed=1)
    names = ", ".join(v.name for v in spec.variables)
    typer.echo(f"wrote {out}: {count} trajectories of {spec.name} ({names}), up to {ds.sizes['obs']} observations each")


def _print_systems() -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from neurode.datasets.systems import SYSTEMS

    console = Console(highlight=False)
    table = Table(title="Systems for `neurode simulate`", title_justify="left")
    for header in ("system", "variables", "parameters (default range)", "time span"):
        table.add_column(header, overflow="fold")
    table.add_column("description", overflow="fold", ratio=1)
    for spec in SYSTEMS.values():
        variables = "\n".join(
            f"{v.name}[{len(v.indices)}] ({v.units})" if v.is_vector else f"{v.name} ({v.units})"
            for v in spec.variables
        )
        parameters = "\n".join(
            f"{p.name}={p.low:g}" + ("" if p.fixed else f":{p.high:g}") + f" ({p.units})" for p in spec.parameters
        ) or "-"
        span = f"{spec.t_span[0]:g}:{spec.t_span[1]:g} ({spec.time_units})"
        table.add_row(Text(spec.name), Text(variables), Text(parameters), Text(span), Text(spec.summary))
    console.print(table)

