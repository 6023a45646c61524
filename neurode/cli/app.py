"""The ``neurode`` command line: the typer application and its entry point.

Built-in commands are named as data in :data:`COMMAND_MODULES`; each module
exposes ``register(app)``. Commands of installed plugins (the
``register_commands`` hook) are added after them, on demand, by
:class:`~neurode.cli.group.NeurodeGroup`.

Importing this module must stay cheap (no torch): ``neurode --help`` and
``neurode --version`` should answer at once. Commands import heavy modules
inside their function bodies.

Adding a verb (``evaluate``, ``predict``, ``runs``...):

1. a module ``neurode/cli/<verb>.py`` whose docstring says what the verb does,
   exposing ``register(app)``, named in :data:`COMMAND_MODULES`;
2. at its top level only the standard library, ``typer`` and ``neurode.cli.*``
   (options, enums, ``Annotated`` types); torch, xarray, ``neurode.training``,
   ``neurode.datasets`` and the registry are imported inside the command
   function, where the work starts;
3. nothing runs at import but ``register``.

Every module here is imported for every command, so one heavy import at a
module's top slows ``neurode --help`` for all of them.
``tests/framework/test_plugin_index.py`` fails if ``--help``, ``--version``,
``plugins`` or ``data info`` import torch.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from neurode import __version__
from neurode.cli.console import show_flags_without_a_type
from neurode.cli.group import NeurodeGroup

show_flags_without_a_type()

#: The built-in command modules, registered in this order. Each has ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "neurode.cli.plugins",
    "neurode.cli.train",
    "neurode.cli.evaluate",
    "neurode.cli.predict",
    "neurode.cli.runs",
    "neurode.cli.simulate",
    "neurode.cli.data",
)

app = typer.Typer(
    name="neurode",
    cls=NeurodeGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # NeurodeGroup reports errors itself
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"neurode {__version__}")
        raise typer.Exit()


@app.callback()
def neurode(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show neurode's version and exit."),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="NEURODE_DEBUG", help="Show full tracebacks when a command fails."),
    ] = False,
) -> None:
    """neurode: neural differential equations for physics and scientific machine learning.

    Solvers, gradient methods, dynamics, models and dataset loaders come from
    plugins; `neurode plugins` lists them.
    """


def register_builtin_commands(target: typer.Typer) -> None:
    """Import every module of :data:`COMMAND_MODULES` and let it add its commands to ``target``."""
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(target)


register_builtin_commands(app)


def main() -> None:
    """Console-script entry point (``neurode = "neurode.cli.app:main"``)."""
    app(prog_name="neurode")


if __name__ == "__main__":
    main()
