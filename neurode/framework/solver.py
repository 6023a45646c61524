"""The solver contract: one step of a method, its error estimate, its dense output.

A solver knows how to advance ``y`` from ``t0`` by a signed step ``h`` and how
to interpolate inside the step it took. It does not choose step sizes (that is
the controller, ``controller.py``), does not decide acceptance, produce
outputs, detect events or count steps (that is the loop, ``loop.py``), and
does not know how gradients flow (that is the adjoint, ``adjoint.py``). This is
diffrax's separation, and why one loop serves Runge–Kutta, multistep and
(later) implicit methods alike.

The carried state is explicit: ``init`` returns a tuple of tensors (the FSAL
derivative of an RK pair, the derivative history of a multistep method) and
``step`` returns the next one. The checkpointed adjoint relies on this: a step
is a pure function ``(y0, state0) -> (y1, state1)`` of tensors, so it can be
recomputed and differentiated on its own.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

#: Time perturbation flags for the vector field: evaluate just after / before t.
PERTURB_NONE, PERTURB_NEXT, PERTURB_PREV = 0, 1, 2

#: ``f(t, y, perturb=PERTURB_NONE) -> dy/dt`` as solvers call it. ``t`` is a float
#: (the loop keeps time in float64); the loop's wrapper makes it a tensor.
VectorFieldFn = Callable[..., torch.Tensor]


#: why a row's stage solve failed (:class:`StepFailure` codes)
NEWTON_DIVERGED, NEWTON_SLOW, NEWTON_NON_FINITE, NEWTON_SINGULAR = 1, 2, 3, 4
NEWTON_REASONS = {
    NEWTON_DIVERGED: "the increments grew (convergence rate >= the limit)",
    NEWTON_SLOW: "the increments shrank too slowly to converge within max_iters",
    NEWTON_NON_FINITE: "f or the increment became non-finite",
    NEWTON_SINGULAR: "the iteration matrix I - h gamma J is singular",
}


@dataclass
class StepFailure:
    """Rows (samples; one row in the shared loop) whose step an implicit method could not compute.

    A Newton failure is not an exception inside a step: the step comes back with an infinite error for those
    rows, so the loop rejects it and shrinks the step; only when the step size can shrink no further does the
    loop raise :class:`~neurode.framework.errors.NewtonConvergenceError` from this record.

    Attributes:
        failed: ``(B,)`` bool, the rows whose stage solve failed.
        code: ``(B,)`` int64, why (``NEWTON_*``, 0 where it did not fail).
        residual: ``(B,)`` float64, the last scaled Newton increment norm of each row.
    """

    failed: torch.Tensor
    code: torch.Tensor
    residual: torch.Tensor

    def describe(self, row: int) -> tuple[str, float]:
        """Why row ``row`` failed, and its last residual."""
        return NEWTON_REASONS.get(int(self.code[row]), "unknown"), float(self.residual[row])


@dataclass
class Step:
    """What one attempted step produced.

    Attributes:
        t0, h: start and signed size of the step (floats).
        y0, y1: state at the start and the end.
        state0, state1: the solver's carried tensors before and after.
        error: the local error estimate (same shape as ``y``), or ``None``
            for methods without one.
        dense: whatever the solver's ``interpolate`` needs (e.g. RK stages).
    """

    t0: float
    h: float
    y0: torch.Tensor
    y1: torch.Tensor
    state0: tuple[torch.Tensor, ...]
    state1: tuple[torch.Tensor, ...]
    error: torch.Tensor | None
    dense: Any = None
    func: Any = None  # the vector field, for interpolants that evaluate f (cubic Hermite)
    cache: dict | None = None
    #: the carried state for the retry after a rejection (an implicit method keeps the Jacobian it formed at
    #: ``y0``, or asks for a fresh one after a Newton failure); ``None``: retry from ``state0``
    state_retry: tuple[torch.Tensor, ...] | None = None
    #: rows whose stage solve failed (their error is infinite), or ``None``
    failure: StepFailure | None = None
    #: rows of ``f`` evaluated by a per-sample step whose evaluations vary per sample (an implicit method's
    #: Newton iterations); ``None``: the batch loop counts its stages times the active rows
    rows: int | None = None


class AbstractSolver(abc.ABC):
    """A method for ``dy/dt = f(t, y)``; see the module docstring.

    Class attributes a solver declares:
        order: order of convergence (checked by ``neurode.testing``).
        adaptive: whether ``step`` returns an error estimate, so that an
            adaptive step-size controller can be used.
        error_order: exponent for the step-size controller
            (``dt * ratio^(-1/error_order)``).
    """

    order: int = 1
    adaptive: bool = False
    error_order: int = 1
    #: whether ``step`` accepts ``t0``/``h`` as per-sample float64 tensors and the
    #: solver has ``interpolate_per_sample`` (the batch-parallel loop needs both), and
    #: ``stage_weights`` / ``stage_points_per_sample`` (per-sample backsolve's quadrature)
    supports_per_sample: bool = False
    #: whether tangent error control (``tangent.py``) may replay ``step``/``init``/``after_jump`` on a tangent:
    #: the calls must be linear in ``(y0, state)`` given the evaluations of ``f``, and evaluate ``f`` equally often
    #: whatever the values (explicit methods do; an implicit method whose Newton iteration count depends on the
    #: values must set this to ``False`` or linearise itself)
    supports_tangent: bool = True
    #: whether adaptive steps end on every output time instead of stepping past it and interpolating back (the
    #: stiff methods: inside a step too long for a fast mode, any interpolant from ``y0`` to ``y1`` carries a
    #: perturbation of that mode almost undamped, while the step's end is damped by the method's stability
    #: function; outputs, and gradients through them, are then the method's own values)
    steps_onto_outputs: bool = False
    #: whether the method is meant for stiff problems (implicit or linearly implicit): the stiffness test's
    #: error (``StiffProblemError``) names the registered solvers that declare it
    stiff: bool = False

    @abc.abstractmethod
    def init(self, func: VectorFieldFn, t0: float, y0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The carried state at the start of the solve (may evaluate ``func``)."""

    @abc.abstractmethod
    def step(
        self, func: VectorFieldFn, t0: float, h: float, y0: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> Step:
        """Attempt one step from ``t0`` to ``t0 + h``. Must not mutate ``y0`` or ``state``."""

    @abc.abstractmethod
    def interpolate(self, step: Step, theta: float | torch.Tensor) -> torch.Tensor:
        """The state at ``t0 + theta * h`` for ``0 <= theta <= 1`` inside an accepted step."""

    def after_jump(self, func: VectorFieldFn, t: float, y: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """The carried state after crossing a discontinuity of ``f`` at ``t`` (``jump_t``).

        The default re-initialises, evaluating ``f`` just after ``t``.
        """
        return self.init(func, t, y)

    @property
    def initial_step_order(self) -> int:
        """Order used by the initial step-size heuristic (Hairer et al. I, §II.4)."""
        return self.order

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ExternalSolver(AbstractSolver):
    """A solver that runs a whole solve itself (e.g. another library's ``odeint``).

    The loop, controller and gradient-method plugins are bypassed: the solver
    receives the normalised problem and the name of the requested gradient
    method and must honour it or raise. Used by the torchdiffeq wrapper so that
    users can compare with, or fall back to, another implementation.
    """

    #: gradient-method names this solver can honour
    supported_adjoints: tuple[str, ...] = ("direct",)

    @abc.abstractmethod
    def solve_external(self, problem, adjoint: str, adjoint_options: dict):
        """Return an :class:`neurode.framework.adjoint.AdjointResult` for ``problem``."""

    def init(self, func, t0, y0):  # pragma: no cover - never stepped by the loop
        raise NotImplementedError(f"{type(self).__name__} runs whole solves; it has no step")

    def step(self, func, t0, h, y0, state):  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} runs whole solves; it has no step")

    def interpolate(self, step, theta):  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} runs whole solves; it has no dense output")
