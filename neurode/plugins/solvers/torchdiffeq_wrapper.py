"""Built-in plugin: every torchdiffeq method as a neurode solver named ``torchdiffeq.<method>``.

So that users can compare with, or fall back to, the reference
implementation: ``neurode.solve(f, y0, t, solver="torchdiffeq.dopri5")`` hands
the whole solve to ``torchdiffeq.odeint`` (gradient method ``direct``) or to
``torchdiffeq.odeint_adjoint`` (``backsolve``). These are
:class:`~neurode.framework.solver.ExternalSolver`\\ s: neurode's loop,
controller and gradient-method plugins are bypassed, and what neurode
normalised (flat tuple state, tolerances, loop options such as ``step_size``
or ``first_step``, the I controller's factors) is handed back to torchdiffeq
in its own terms. Evaluations of ``f`` are counted (forward into
``stats.nfe``, the adjoint solve into ``stats.nfe_backward``), steps through
torchdiffeq's step callbacks, and torchdiffeq's assertions become neurode's
typed errors.

torchdiffeq is a dependency of neurode, but it is imported only when such a
solver runs, so that listing plugins never depends on it.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from functools import partial

import torch

from neurode import hookimpl
from neurode.framework.adjoint import AdjointResult
from neurode.framework.controller import IController
from neurode.framework.errors import (
    EventNotFoundError,
    InvalidInputError,
    MaxStepsError,
    NonFiniteStateError,
    PluginUnavailableError,
    StepSizeUnderflowError,
)
from neurode.framework.loop import LoopConfig
from neurode.framework.solver import ExternalSolver
from neurode.framework.vector_field import VectorField, unflatten_state

PREFIX = "torchdiffeq."

_ADAPTIVE_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")
_FIXED_CALLBACKS = ("callback_step",)


@dataclass(frozen=True)
class Method:
    """A torchdiffeq method as torchdiffeq 0.2.5 declares it (``torchdiffeq/_impl/odeint.py``)."""

    name: str
    order: int
    adaptive: bool
    callbacks: tuple[str, ...]  # the step callbacks torchdiffeq calls for it (``valid_callbacks``)
    description: str


METHODS: tuple[Method, ...] = (
    Method("dopri5", 5, True, _ADAPTIVE_CALLBACKS, "Dormand–Prince 5(4)"),
    Method("dopri8", 8, True, _ADAPTIVE_CALLBACKS, "Dormand–Prince 8(7) (RK8(7)13M)"),
    Method("bosh3", 3, True, _ADAPTIVE_CALLBACKS, "Bogacki–Shampine 3(2)"),
    Method("fehlberg2", 2, True, _ADAPTIVE_CALLBACKS, "Runge–Kutta–Fehlberg 2(1)"),
    Method("adaptive_heun", 2, True, _ADAPTIVE_CALLBACKS, "Heun–Euler 2(1)"),
    Method("euler", 1, False, _FIXED_CALLBACKS, "forward Euler (fixed step)"),
    Method("midpoint", 2, False, _FIXED_CALLBACKS, "explicit midpoint (fixed step)"),
    Method("heun2", 2, False, _FIXED_CALLBACKS, "Heun's second-order method (fixed step)"),
    Method("heun3", 3, False, _FIXED_CALLBACKS, "Heun's third-order method (fixed step)"),
    Method("rk4", 4, False, _FIXED_CALLBACKS, "RK4, 3/8 rule (fixed step)"),
    Method("explicit_adams", 4, False, _FIXED_CALLBACKS, "Adams–Bashforth (fixed step)"),
    Method("implicit_adams", 4, False, _FIXED_CALLBACKS, "Adams–Bashforth–Moulton (fixed step)"),
    Method("fixed_adams", 4, False, _FIXED_CALLBACKS, "implicit_adams under its old name (fixed step)"),
    # solve_ivp's method (default LSODA) sets the order; the outputs carry no gradient in the forward pass.
    Method("scipy_solver", 1, True, (), "scipy.integrate.solve_ivp, LSODA by default (no direct gradients)"),
)
_BY_NAME = {m.name: m for m in METHODS}

#: neurode's adjoint_options for ``backsolve`` -> torchdiffeq.odeint_adjoint's arguments
ADJOINT_OPTION_NAMES = {
    "rtol": "adjoint_rtol",
    "atol": "adjoint_atol",
    "solver": "adjoint_method",
    "options": "adjoint_options",
    "norm": "adjoint_options['norm']",
}

#: torchdiffeq's assertion messages -> neurode's typed errors
_ERRORS = (
    ("max_num_steps exceeded", MaxStepsError),
    ("underflow in dt", StepSizeUnderflowError),
    ("non-finite values in state", NonFiniteStateError),
    ("Reached maximum number of iterations", EventNotFoundError),
    ("Event handling for fixed step solvers currently requires", InvalidInputError),
)


def import_torchdiffeq():
    """torchdiffeq, or an error that says how to get it."""
    try:
        import torchdiffeq
    except ImportError as exc:
        raise PluginUnavailableError(
            f"the torchdiffeq.* solvers need the torchdiffeq package (a dependency of neurode), which cannot be "
            f"imported: {exc}. Install it with `pip install torchdiffeq`."
        ) from exc
    return torchdiffeq


@functools.cache
def lsoda_honours_min_step() -> bool:
    """Whether scipy's LSODA bounds its steps by ``min_step``: scipy 1.17's C port drops it (scipy issue 25827).

    Probed once, not read off the version, so a fixed scipy is recognised: on ``dy/dt = -y`` over ``[0, 10]``
    at tight tolerances, ``min_step=5`` allows a few steps at most, against dozens without it.
    """
    from scipy.integrate import solve_ivp

    def evaluations(min_step: float) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an honoured min_step may fail the tolerance: that is fine here
            return solve_ivp(lambda t, y: -y, (0.0, 10.0), [1.0], method="LSODA", rtol=1e-10, atol=1e-12,
                             min_step=min_step).nfev

    return evaluations(5.0) < evaluations(0.0) // 2


class _CountingField:
    """The user's ``f`` on the flat state as torchdiffeq calls it; counts evaluations and steps into ``stats``.

    Before the forward solve returns, evaluations count as ``nfe``; after it (the
    adjoint's backward solve), as ``nfe_backward``. Only the callbacks that
    torchdiffeq calls for the method are defined (it warns about others), and
    the user's own callbacks are chained, with the tuple state restored.
    """

    def __init__(self, problem, method: Method, adjoint_method: Method | None) -> None:
        self.field = VectorField(problem.func, problem.y0, problem.shapes)
        self.stats = problem.stats
        self.shapes = problem.shapes
        self.backward = False
        self.fixed_grid = "callback_accept_step" not in method.callbacks
        user = problem.func
        self.user_callbacks = {
            name: getattr(user, name) for name in ("callback_step", "callback_accept_step", "callback_reject_step")
            if callable(getattr(user, name, None))
        }
        unsupported = set(self.user_callbacks) - set(method.callbacks)
        if unsupported:
            warnings.warn(f"Solver '{method.name}' does not support callbacks {unsupported}", stacklevel=2)
        for name in method.callbacks:
            setattr(self, name, partial(self._on_step, name))
        for name in ("callback_step_adjoint", "callback_accept_step_adjoint", "callback_reject_step_adjoint"):
            user_callback = getattr(user, name, None)
            if name == "callback_step_adjoint" and adjoint_method is not None and adjoint_method.callbacks:
                setattr(self, name, partial(self._on_backward_step, user_callback))
            elif callable(user_callback):
                setattr(self, name, user_callback)

    def __call__(self, t, y):
        if self.backward:
            self.stats.nfe_backward += 1
        else:
            self.stats.nfe += 1
        return self.field(t, y)

    def _on_step(self, name, t0, y0, dt):
        stats = self.stats
        if name == "callback_step":
            stats.n_steps += 1
            if self.fixed_grid:  # every step is kept
                stats.n_accepted += 1
        elif name == "callback_accept_step":
            stats.n_accepted += 1
        else:
            stats.n_rejected += 1
        user_callback = self.user_callbacks.get(name)
        if user_callback is not None:
            user_callback(t0, y0 if self.shapes is None else unflatten_state(y0, self.shapes), dt)

    def _on_backward_step(self, user_callback, t0, y0, dt):
        self.stats.n_steps_backward += 1
        if callable(user_callback):
            user_callback(t0, y0, dt)


class TorchdiffeqSolver(ExternalSolver):
    """A torchdiffeq method run by ``torchdiffeq.odeint`` / ``odeint_adjoint``.

    ``options`` are the method's own options as torchdiffeq takes them (e.g.
    ``interp``, ``perturb``, ``max_order``, scipy's ``solver``); neurode's loop
    options (``step_size``, ``first_step``, ``max_num_steps`` ...) are taken
    from the solve and handed over too. Gradient methods: ``direct``
    (backpropagation through torchdiffeq's operations) and ``backsolve``
    (torchdiffeq's continuous adjoint).
    """

    supported_adjoints = ("direct", "backsolve")

    def __init__(self, method: str, **options) -> None:
        if method not in _BY_NAME:
            raise ValueError(f"unknown torchdiffeq method {method!r}; known: {', '.join(_BY_NAME)}")
        self.method = _BY_NAME[method]
        self.order = self.error_order = self.method.order
        self.adaptive = self.method.adaptive
        self.options = dict(options)

    @property
    def name(self) -> str:
        return PREFIX + self.method.name

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"TorchdiffeqSolver({self.method.name!r}{options})"

    # ------------------------------------------------------------------ the solve

    def solve_external(self, problem, adjoint: str, adjoint_options: dict) -> AdjointResult:
        torchdiffeq = import_torchdiffeq()
        if adjoint not in self.supported_adjoints:
            raise InvalidInputError(
                f"solver {self.name!r} supports the gradient methods {list(self.supported_adjoints)}, not {adjoint!r}"
            )
        kwargs = {"rtol": problem.config.rtol, "atol": problem.config.atol, "method": self.method.name}
        options = self._options(problem.config)
        if options:
            kwargs["options"] = options
        adjoint_method = None
        if adjoint == "backsolve":
            adjoint_kwargs = self._adjoint_kwargs(adjoint_options, options)
            adjoint_method = _BY_NAME[adjoint_kwargs.get("adjoint_method", self.method.name)]
            kwargs.update(adjoint_kwargs, adjoint_params=problem.params)
            odeint = torchdiffeq.odeint_adjoint
        else:
            if adjoint_options:
                raise InvalidInputError(f"gradient method 'direct' takes no options, got {sorted(adjoint_options)}")
            odeint = torchdiffeq.odeint

        func = _CountingField(problem, self.method, adjoint_method)
        t = problem.t
        if problem.event_fn is not None:
            kwargs["event_fn"] = self._event_fn(problem)
            # torchdiffeq takes the direction from t[1] and nothing else from it in event mode
            t = torch.stack([t[0], t[1] if len(t) > 1 else t[0] + 1])
        try:
            out = odeint(func, problem.y0, t, **kwargs)
        except (AssertionError, RuntimeError) as exc:
            message = str(exc)
            for prefix, error in _ERRORS:
                if message.startswith(prefix):
                    raise error(f"{self.name}: {message}", stats=problem.stats) from exc
            raise
        finally:
            func.backward = True
        if problem.event_fn is None:
            return AdjointResult(out)
        event_t, ys = out
        return AdjointResult(ys, event_t=event_t)

    def _options(self, config: LoopConfig) -> dict:
        """torchdiffeq's ``options``: the method's own, plus the loop options neurode took out of them."""
        options = dict(self.options)
        if config.norm is not None:
            options["norm"] = config.norm
        if config.step_size is not None:
            options["step_size"] = config.step_size
        if config.grid_constructor is not None:
            options["grid_constructor"] = config.grid_constructor
        if config.first_step is not None:
            options["first_step"] = config.first_step
        if config.min_step != 0.0:
            options["min_step"] = config.min_step
            lsoda = self.method.name == "scipy_solver" and options.get("solver", "LSODA") == "LSODA"
            if lsoda and not lsoda_honours_min_step():
                warnings.warn(
                    f"{self.name}: this scipy's LSODA ignores min_step={config.min_step:g} (scipy issue 25827, "
                    "from scipy 1.17): its steps are not bounded below",
                    stacklevel=4,
                )
        if not math.isinf(config.max_step):
            options["max_step"] = config.max_step
        for key in ("step_t", "jump_t"):
            if getattr(config, key) is not None:
                options[key] = torch.tensor(getattr(config, key), dtype=torch.float64)
        if self.method.adaptive and self.method.callbacks:  # torchdiffeq's adaptive Runge–Kutta solvers
            options["max_num_steps"] = config.max_num_steps
        controller = config.controller
        if type(controller) is not IController:
            raise InvalidInputError(
                f"solver {self.name!r} has torchdiffeq's integral controller only (options safety, ifactor, "
                f"dfactor), not {controller!r}"
            )
        for key, default in (("safety", 0.9), ("ifactor", 10.0), ("dfactor", 0.2)):
            if getattr(controller, key) != default:
                options[key] = getattr(controller, key)
        return options

    def _adjoint_kwargs(self, adjoint_options: dict, forward_options: dict) -> dict:
        """``backsolve``'s options in torchdiffeq.odeint_adjoint's names (:data:`ADJOINT_OPTION_NAMES`)."""
        unknown = set(adjoint_options) - set(ADJOINT_OPTION_NAMES)
        if unknown:
            raise InvalidInputError(
                f"solver {self.name!r} with gradient method 'backsolve' does not accept adjoint options "
                f"{sorted(unknown)}; accepted: {', '.join(ADJOINT_OPTION_NAMES)}"
            )
        kwargs = {}
        for key in ("rtol", "atol"):
            if adjoint_options.get(key) is not None:
                kwargs[f"adjoint_{key}"] = adjoint_options[key]
        solver = adjoint_options.get("solver")
        if solver is not None:
            name = solver.removeprefix(PREFIX) if isinstance(solver, str) else None
            if name not in _BY_NAME:
                raise InvalidInputError(
                    f"the backward solve of {self.name!r} runs in torchdiffeq, so adjoint solver must be a torchdiffeq "
                    f"method ({', '.join(_BY_NAME)}), optionally prefixed {PREFIX!r}; got {solver!r}"
                )
            kwargs["adjoint_method"] = name
        options = adjoint_options.get("options")
        if options is None and kwargs.get("adjoint_method", self.method.name) != self.method.name:
            options = {}  # a different backward method does not inherit the forward options (torchdiffeq raises)
        elif options is None and "norm" in adjoint_options:
            options = {k: v for k, v in forward_options.items() if k != "norm"}  # what torchdiffeq would inherit
        if options is not None:
            options = dict(options)
            if "norm" in adjoint_options:
                options["norm"] = adjoint_options["norm"]
            kwargs["adjoint_options"] = options
        return kwargs

    @staticmethod
    def _event_fn(problem):
        if problem.shapes is None:
            return problem.event_fn
        event_fn, shapes = problem.event_fn, problem.shapes
        return lambda t, y: event_fn(t, unflatten_state(y, shapes))


@hookimpl
def register_solvers(register):
    for method in METHODS:
        register(PREFIX + method.name, partial(TorchdiffeqSolver, method.name),
                 description=f"torchdiffeq's {method.name}: {method.description}; the whole solve runs in torchdiffeq")
