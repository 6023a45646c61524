"""What the command line says on stderr: errors, warnings, and plugin load warnings.

Everything a user did wrong, and every plugin that failed to load, is one
plain line on stderr (``error: ...`` / ``warning: ...``) so stdout stays
clean for tables and ``--json``. Tracebacks appear only when asked for with
``--debug``.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer
import typer.core

from neurode.framework.registry import NeurodePluginWarning

#: Exit status of a command that failed for a reason the user can act on (a ``NeurodeError``).
EXIT_ERROR = 1
#: Exit status of a command line that could not be parsed (typer/click's own convention).
EXIT_USAGE = 2
#: Exit status of an unexpected exception: a bug in neurode or in a plugin (as pytest's INTERNAL_ERROR).
EXIT_INTERNAL = 3


def print_error(message: str) -> None:
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}", err=True)


def print_warning(message: str) -> None:
    typer.echo(f"{typer.style('warning:', fg='yellow', bold=True)} {message}", err=True)


def print_traceback(exc: BaseException) -> None:
    typer.echo("".join(traceback.format_exception(exc)).rstrip("\n"), err=True)


@contextmanager
def plugin_warnings_on_stderr() -> Iterator[None]:
    """Show every :class:`NeurodePluginWarning` raised inside as a ``warning:`` line.

    Python's default display (``file:line: NeurodePluginWarning: ...``) points
    at neurode's source, which means nothing to a user; the message itself
    already names the plugin, its distribution and the error. Other warnings
    are passed on untouched.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NeurodePluginWarning)
        yield
    for record in caught:
        if issubclass(record.category, NeurodePluginWarning):
            print_warning(str(record.message))
        else:
            warnings.warn_explicit(
                record.message, record.category, record.filename, record.lineno, source=record.source
            )


def show_flags_without_a_type() -> None:
    """Help shows ``--json`` as a flag, not ``--json <bool>``.

    Typer 0.2x labels every option with its type, flags included, which reads
    as if ``--version`` took a boolean value. A flag takes no value, so it gets
    no label; options with values keep theirs. Applied to typer's option class,
    so commands that plugins add look the same as the built-ins.
    """
    option = typer.core.TyperOption
    if getattr(option.display_type_rich, "_neurode_flags", False):
        return
    typed = option.display_type_rich

    def display_type_rich(self, ctx):
        if self.is_flag and self.metavar is None:
            return None
        return typed(self, ctx)

    display_type_rich._neurode_flags = True
    option.display_type_rich = display_type_rich
