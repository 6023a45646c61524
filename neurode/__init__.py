"""neurode: neural differential equations for physics and scientific machine learning.

The public API. Heavy submodules (torch, xarray) load on first use, so that
``import neurode`` and ``neurode --help`` stay quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from neurode.framework.hookspecs import hookimpl

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "get_registry": "neurode.framework.registry",
    "Registry": "neurode.framework.registry",
    "solve": "neurode.framework.solve",
    "Solution": "neurode.framework.solution",
    "SolveStats": "neurode.framework.solution",
    "odeint": "neurode.framework.functional",
    "odeint_adjoint": "neurode.framework.functional",
    "odeint_event": "neurode.framework.functional",
    "odeint_dense": "neurode.framework.functional",
    "ButcherTableau": "neurode.framework.tableau",
    "ExplicitRungeKutta": "neurode.framework.explicit_rk",
    "NeurodeError": "neurode.framework.errors",
    "SolverError": "neurode.framework.errors",
    "MaxStepsError": "neurode.framework.errors",
    "StepSizeUnderflowError": "neurode.framework.errors",
    "NonFiniteStateError": "neurode.framework.errors",
    "EventNotFoundError": "neurode.framework.errors",
    "StiffProblemError": "neurode.framework.errors",
    "InvalidInputError": "neurode.framework.errors",
    "InvalidTypeError": "neurode.framework.errors",
    "load": "neurode.datasets.io",
    "train": "neurode.training.run",
    "load_run": "neurode.training.run",
    "Run": "neurode.training.run",
}

__all__ = ["__version__", "hookimpl", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from neurode.framework.errors import (  # noqa: F401
        EventNotFoundError,
        InvalidInputError,
        InvalidTypeError,
        MaxStepsError,
        NeurodeError,
        NonFiniteStateError,
        SolverError,
        StepSizeUnderflowError,
        StiffProblemError,
    )
    from neurode.framework.explicit_rk import ExplicitRungeKutta  # noqa: F401
    from neurode.framework.functional import odeint, odeint_adjoint, odeint_dense, odeint_event  # noqa: F401
    from neurode.framework.registry import Registry, get_registry  # noqa: F401
    from neurode.framework.solution import Solution, SolveStats  # noqa: F401
    from neurode.framework.solve import solve  # noqa: F401
    from neurode.framework.tableau import ButcherTableau  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'neurode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
