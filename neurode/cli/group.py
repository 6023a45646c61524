"""The root command group of ``neurode``: plugin commands on demand, and errors as exit codes.

Two jobs that every command shares live here:

* **Plugin commands, loaded only when needed.** Finding third-party commands
  means building the registry, which imports every plugin (and torch with
  them). ``neurode --version`` and ``neurode train --help`` need none of that,
  and ``neurode --help`` needs only their names and help, which the plugin
  index (``neurode.framework.plugin_index``) keeps from the last time they
  were loaded. Plugins are loaded when a command the group does not know is
  run, or to list commands when the index does not know them yet. Each
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
from typer.core import TyperCommand, TyperGroup

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
        self._resolving = False

    # ------------------------------------------------------------------ plugin commands

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # Running a command (``neurode acme-hello``, even with --help) needs the real one, never a listing entry.
        self._resolving = True
        try:
            return super().resolve_command(ctx, args)
        finally:
            self._resolving = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None or self._plugin_commands_loaded:
            return command
        if not self._resolving:
            listed = next((c for c in self._indexed_commands() or () if c["name"] == cmd_name), None)
            if listed is not None:
                return _listing_entry(listed)
        self.load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: Any) -> list[str]:
        indexed = None if self._plugin_commands_loaded else self._indexed_commands()
        if indexed is None:
            self.load_plugin_commands()
            return super().list_commands(ctx)
        names = super().list_commands(ctx)
        return names + [c["name"] for c in indexed if c["name"] not in names]

    def _indexed_commands(self) -> list[dict[str, str]] | None:
        """Plugin commands as the plugin index last saw them (``None``: unknown, load the plugins)."""
        from neurode.framework import plugin_index

        if not plugin_index.enabled() or plugin_index.is_registry_built():
            return None
        with plugin_warnings_on_stderr():
            index = plugin_index.read(warn=True)
        return None if index is None else index.get("commands")

    def load_plugin_commands(self) -> None:
        """Add every command that installed plugins register (once), and record them in the plugin index."""
        if self._plugin_commands_loaded:
            return
        self._plugin_commands_loaded = True
        from neurode.framework import plugin_index
        from neurode.framework.registry import get_registry

        plugin_app = typer.Typer()
        with plugin_warnings_on_stderr():
            registry = get_registry()
            registry.register_commands(plugin_app)
        added = []
        if plugin_app.registered_commands or plugin_app.registered_groups:
            for name, command in typer.main.get_group(plugin_app).commands.items():
                if name in self.commands:
                    print_warning(
                        f"a plugin registers a command named {name!r}, which is a built-in neurode command; "
                        f"the plugin's command is ignored"
                    )
                    continue
                self.commands[name] = command
                added.append({"name": name, "help": command.help or "", "short_help": command.short_help or ""})
        plugin_index.write(plugin_index.snapshot(registry, commands=added))

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


def _listing_entry(listed: dict[str, str]) -> Any:
    """A stand-in for a plugin command in ``neurode --help``: its name and help, no plugin imported."""
    return TyperCommand(name=listed["name"], help=listed["help"] or None, short_help=listed["short_help"] or None)


def _debug(ctx: Any) -> bool:
    return bool(ctx.find_root().params.get("debug", False))
