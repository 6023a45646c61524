"""The plugin module neurode loads through the entry point ``example``.

Each function is named after a hook of ``neurode/framework/hookspecs.py`` and
marked with ``@neurode.hookimpl``; a plugin implements only the hooks it needs.
"""

from __future__ import annotations

import neurode
from neurode_example_plugin.commands import example_hello
from neurode_example_plugin.dynamics import DampedLinear


@neurode.hookimpl
def register_dynamics(register):
    register("damped_linear", DampedLinear)


@neurode.hookimpl
def register_commands(app):
    app.command("example-hello")(example_hello)
