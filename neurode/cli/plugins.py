"""``neurode plugins``: every registered component and where it came from.

Lists kind, name, source (distribution and version) and description of every
component, then what did not make it: plugins that failed to load (with the
error), plugins switched off by ``NEURODE_DISABLE_PLUGINS``, and names
registered twice. ``--json`` prints the same report as one JSON object:

.. code-block:: json

    {"neurode_version": "0.1.0", "kind": null,
     "components": [{"kind", "name", "distribution", "version", "plugin", "description"}],
     "failures": [{"distribution", "version", "plugin", "error"}],
     "disabled": [{"distribution", "version", "plugin"}],
     "conflicts": [{"kind", "name", "sources": [{"distribution", "version", "plugin"}]}]}
"""

from __future__ import annotations

import enum
import json
import os
from typing import Annotated, Any

import typer

from neurode.cli.console import plugin_warnings_on_stderr
from neurode.framework.registry import DISABLE_ENV, KINDS

#: What ``--json`` says of each component.
_COMPONENT_KEYS = ("kind", "name", "distribution", "version", "plugin", "description")

#: The component kinds, as a str Enum so typer shows and checks the choices.
Kind = enum.Enum("Kind", {kind: kind for kind in KINDS}, type=str)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins(
    kind: Annotated[
        Kind | None,
        typer.Option("--kind", "-k", case_sensitive=False, help="Only list components of this kind."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Import every plugin again and rebuild the cached plugin index.")
    ] = False,
) -> None:
    """List every registered component: kind, name, source distribution and version.

    Also lists plugins that failed to load (with the error), plugins disabled
    by NEURODE_DISABLE_PLUGINS, and component names registered by two plugins.
    Read from the plugin index (no plugin imported) while it matches what is
    installed; --refresh rebuilds it.
    """
    from neurode.framework import plugin_index

    with plugin_warnings_on_stderr():
        index = plugin_index.get(refresh=refresh)
    kind_name = kind.value if kind is not None else None
    report = {
        "neurode_version": index["neurode_version"],
        "kind": kind_name,
        "components": [
            {key: c[key] for key in _COMPONENT_KEYS}
            for c in index["components"]
            if kind_name is None or c["kind"] == kind_name
        ],
        "failures": index["failures"],
        "disabled": index["disabled"],
        "conflicts": [c for c in index["conflicts"] if kind_name is None or c["kind"] == kind_name],
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_tables(report)


def _print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    components = report["components"]
    what = f"{report['kind']} components" if report["kind"] else "components"
    if components:
        _print_table(
            console,
            f"neurode {report['neurode_version']}: registered {what}",
            ("kind", "name", "source", "description"),
            [(c["kind"], c["name"], f"{c['distribution']} {c['version']}", c["description"]) for c in components],
        )
    else:
        console.print(f"No {what} registered.", markup=False)
    distributions = {c["distribution"] for c in components}
    console.print(f"{len(components)} {what} from {len(distributions)} distribution(s).", markup=False)

    if report["failures"]:
        _print_table(
            console,
            "Plugins that failed to load (their components are unavailable)",
            ("source", "plugin", "error"),
            [(f"{f['distribution']} {f['version']}", f["plugin"], f["error"]) for f in report["failures"]],
        )
    if report["disabled"]:
        _print_table(
            console,
            f"Plugins disabled by {DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')}",
            ("source", "plugin"),
            [(f"{d['distribution']} {d['version']}", d["plugin"]) for d in report["disabled"]],
        )
    if report["conflicts"]:
        _print_table(
            console,
            "Names registered twice (unusable until one plugin is uninstalled or disabled)",
            ("kind", "name", "sources"),
            [(c["kind"], c["name"], "; ".join(map(_describe_source, c["sources"]))) for c in report["conflicts"]],
        )


def _describe_source(source: dict[str, str]) -> str:
    return f"{source['distribution']} {source['version']} (plugin {source['plugin']})"


#: The narrowest the free-text column may get before name columns may fold instead.
_MIN_TEXT_WIDTH = 16


def _print_table(console: Any, title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A title line, then a rich table of plain-text cells (no markup). Name columns
    keep the width of their longest name; the last (free-text) column wraps at
    word boundaries. Only a terminal too narrow for the names themselves folds
    them, and nothing is ever cut."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(title, style="bold"), soft_wrap=True)
    table = Table()
    # Names are identifiers: kept whole ("torchdiffeq.adaptive_heun", never
    # "torchdiffeq.adaptiv|e_heun") whenever the terminal leaves the free-text
    # last column a readable width; only that column wraps, at word boundaries.
    widths = [max([len(header), *(len(row[k]) for row in rows)]) for k, header in enumerate(headers[:-1])]
    chrome = 3 * len(headers) + 1  # a border and one space of padding each side, per column
    keep_whole = sum(widths) + chrome + _MIN_TEXT_WIDTH <= console.width
    for header in headers[:-1]:
        table.add_column(header, no_wrap=keep_whole, overflow="fold")
    table.add_column(headers[-1], overflow="fold", ratio=1)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
