"""The root command group of ``neurode``: plugin commands on demand, and errors as exit codes.

Two jobs that every command shares live here:

* **Plugin commands, loaded only when needed.** Finding third-party commands
  means building the registry, which imports every plugin (and torch with
  them). ``neurode --version`` and ``neurode train --help`` need none of that,
  so plugins are loaded the first time the group is asked for a command it
  does not know, or for the list of all commands (``neurode --help``). Each
  plugin's ``register_commands(app)`` receives a :class:`typer.Typer`; what it
  adds there (``app.command``, ``app.add_typer``) becomes a command of
  ``neurode``. A built-in command keeps its name: a plugin command of the same
  name is skipped with a warning.
* **Errors as messages.** A :class:`~neurode.framework.errors.NeurodeError`
  becomes ``error: <message>`` on stderr and exit status 1; any other
  exception is a bug and becomes ``internal error: ...`` and exit status 3.
  Neither shows a traceback unless ``--debug`` (or ``NEURODE_DEBUG=1``) is set.
  Usage errors stay typer's own (exit status 2).
"""

from __future__ import annotations

from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from neurode.cli.console import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    plugin_warnings_on_stderr,
    print_error,
    print_traceback,
    print_warning,
)
from neurode.framework.errors import NeurodeError

#: Exceptions that are typer/click's own signals (usage errors, --help, exit): never reported as failures.
_CLI_SIGNALS = (typer.TyperException, typer.Exit, typer.Abort)


class NeurodeGroup(TyperGroup):
    """The ``neurode`` command group (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugin_commands_loaded = False

    # ------------------------------------------------------------------ plugin commands

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._plugin_commands_loaded:
            self.load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: Any) -> list[str]:
        self.load_plugin_commands()
        return super().list_commands(ctx)

    def load_plugin_commands(self) -> None:
        """Add every command that installed plugins register (once)."""
        if self._plugin_commands_loaded:
            return
        self._plugin_commands_loaded = True
        from neurode.framework.registry import get_registry

        plugin_app = typer.Typer()
        with plugin_warnings_on_stderr():
            get_registry().register_commands(plugin_app)
        if not plugin_app.registered_commands and not plugin_app.registered_groups:
            return
        for name, command in typer.main.get_group(plugin_app).commands.items():
            if name in self.commands:
                print_warning(
                    f"a plugin registers a command named {name!r}, which is a built-in neurode command; "
                    f"the plugin's command is ignored"
                )
                continue
            self.commands[name] = command

    # ------------------------------------------------------------------ errors

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _CLI_SIGNALS:
            raise
        except BrokenPipeError:
            # the reader went away (``neurode plugins | head``): stop quietly, as Unix tools do
            import os
            import sys

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except NeurodeError as exc:
            if _debug(ctx):
                print_traceback(exc)
            # an error may word its advice for the command line (``--loader NAME``, not ``loader=<name>``)
            print_error(getattr(exc, "cli_message", None) or str(exc))
            raise typer.Exit(EXIT_ERROR) from exc
        except Exception as exc:
            if _debug(ctx):
                print_traceback(exc)
                print_error(f"internal error: {type(exc).__name__}: {exc}")
            else:
                print_error(
                    f"internal error: {type(exc).__name__}: {exc}\n"
                    f"This is a bug in neurode or in a plugin. Run the command again with --debug "
                    f"to see the traceback, and include it when you report the bug."
                )
            raise typer.Exit(EXIT_INTERNAL) from exc


def _debug(ctx: Any) -> bool:
    return bool(ctx.find_root().params.get("debug", False))
