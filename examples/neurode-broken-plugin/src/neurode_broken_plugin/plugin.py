"""The plugin module of neurode-broken-plugin. Importing it raises ImportError.

It fails the way real plugins fail: it needs a compiled extension that was
never built (here, one that does not exist). neurode catches the error when it
loads the entry point, warns naming this distribution and the error, and
carries on without it.
"""

from __future__ import annotations

import neurode
from neurode_broken_plugin import _native_solver_kernels  # noqa: F401  never built: ImportError


@neurode.hookimpl
def register_solvers(register):  # never reached
    register("broken_euler", _native_solver_kernels.Euler)
