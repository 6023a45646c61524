"""The exception hierarchy of neurode.

Every error a user can meet derives from :class:`NeurodeError`, so a caller
(the CLI above all) can tell "the user asked for something wrong" from a bug.
Messages follow one rule: name the thing that is wrong, the value seen, and
what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NeurodeError(Exception):
    """Base class of every error neurode raises on purpose."""


# --------------------------------------------------------------------------- registry


class RegistryError(NeurodeError):
    """A problem with registered components or plugins."""


class UnknownComponentError(RegistryError, KeyError):
    """A component name that no registered plugin supplies."""

    def __init__(self, kind: str, name: str, known: Iterable[str], note: str = "") -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        close = difflib.get_close_matches(name, self.known, n=3)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        msg += f"{'' if close else '.'} Known {kind} names: {', '.join(self.known) if self.known else '(none)'}."
        if note:
            msg += f" {note}"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class DuplicateComponentError(RegistryError):
    """Two plugins registered a component of the same kind under one name."""


class PluginUnavailableError(RegistryError):
    """A component was asked for whose plugin failed to load or is disabled."""


class ComponentTypeError(RegistryError, TypeError):
    """A registered object does not satisfy the contract of its kind."""


# --------------------------------------------------------------------------- solving


class SolverError(NeurodeError):
    """A solve that could not be completed.

    Carries where it stopped: ``t`` (the time reached), ``dt`` (the step size
    being tried) and ``stats`` (the :class:`~neurode.framework.solution.SolveStats`
    gathered until then).
    """

    def __init__(self, message: str, *, t: float | None = None, dt: float | None = None, stats=None) -> None:
        super().__init__(message)
        self.t = t
        self.dt = dt
        self.stats = stats


class MaxStepsError(SolverError):
    """The step limit (``max_num_steps``) was reached before the end time."""


class StepSizeUnderflowError(SolverError):
    """The step size fell below what the time variable can resolve, or below ``min_step``."""


class NonFiniteStateError(SolverError):
    """The state or its derivative became NaN or infinite."""


class NewtonConvergenceError(SolverError):
    """An implicit method's Newton iteration kept failing while the step size shrank to nothing.

    Besides ``t`` and ``dt``: ``sample`` (the failing sample of a per-sample solve, ``None`` in the shared loop)
    and ``residual`` (the last scaled Newton increment norm, RMS of ``Δz / (atol + rtol |y0|)``).
    """

    def __init__(self, message: str, *, t: float | None = None, dt: float | None = None, stats=None,
                 sample: int | None = None, residual: float | None = None) -> None:
        super().__init__(message, t=t, dt=dt, stats=stats)
        self.sample = sample
        self.residual = residual


class EventNotFoundError(SolverError):
    """An event function never changed sign within the integration limits."""


class InvalidInputError(NeurodeError, ValueError):
    """Arguments to a solve (times, tolerances, options) are malformed."""


class InvalidTypeError(InvalidInputError, TypeError):
    """An argument (or what a user's function returned) is of the wrong type: a Tensor expected, say."""


class StiffProblemError(SolverError):
    """An explicit method's steps were pinned by its stability, not its accuracy: the problem looks stiff."""
