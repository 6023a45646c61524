"""``neurode.solve``: any registered solver and gradient method, one call.

Separate objects, as diffrax separates them: the *solver* (a registered name
or an :class:`AbstractSolver`), the *step-size controller* (``"i"``,
``"pid"`` or an instance), the *gradient method* (a registered name or an
:class:`AbstractAdjoint`) and the output times ``t``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from neurode.framework.adjoint import AbstractAdjoint, Problem, default_params
from neurode.framework.controller import IController, PIController, PIDController
from neurode.framework.errors import InvalidInputError, NonFiniteStateError
from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.framework.loop import DEFAULT_MAX_NUM_STEPS, LoopConfig, rms_norm
from neurode.framework.registry import get_registry
from neurode.framework.solution import Solution, SolveStats
from neurode.framework.solver import AbstractSolver, ExternalSolver
from neurode.framework.vector_field import flatten_state, unflatten_state

#: grids up to this length (on the CPU) are validated in Python rather than with tensor operations
_SMALL_GRID = 256

DEFAULT_SOLVER = "dopri5"
DEFAULT_ADJOINT = "direct"
#: gradient methods that run the batch-parallel loop
PER_SAMPLE_ADJOINTS = ("direct", "checkpoint", "backsolve")

#: options that configure the step-size controller: every controller's factors, the PID's and the PI's coefficients
_FACTOR_OPTIONS, _PID_OPTIONS, _PI_OPTIONS = ("safety", "ifactor", "dfactor"), ("pcoeff", "icoeff", "dcoeff"), ("beta",)
CONTROLLER_OPTIONS = frozenset(_FACTOR_OPTIONS + _PID_OPTIONS + _PI_OPTIONS)
#: options consumed by the loop and the controller; the rest go to the solver
LOOP_OPTIONS = frozenset(
    {"first_step", "min_step", "max_step", "max_num_steps", "step_t", "jump_t", "step_size",
     "grid_constructor", "norm", "dtype", "t_max", "nstiff"} | CONTROLLER_OPTIONS
)


def mixed_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor | float:
    """Max over the RMS norms of the parts of a tuple state (torchdiffeq's ``_mixed_norm``)."""
    if len(tensors) == 0:
        return 0.0
    return max(rms_norm(x) for x in tensors)


def check_times(t: Any, name: str = "t", *, min_len: int = 1) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor of times, got {type(t).__name__}")
    if not torch.is_floating_point(t):
        raise InvalidInputError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    if len(t) < min_len:
        raise InvalidInputError(f"{name} must hold at least {min_len} time(s), got {len(t)}")
    if t.device.type == "cpu" and len(t) <= _SMALL_GRID:
        # a few output times on the host: check them in Python (one transfer instead of ~8 tensor operations)
        values = t.detach().tolist()
        finite = all(math.isfinite(v) for v in values)
        pairs = list(itertools.pairwise(values))
        monotone = all(b > a for a, b in pairs) or all(b < a for a, b in pairs)
    else:
        with torch.no_grad():
            finite = bool(torch.isfinite(t).all())
            diff = t[1:] - t[:-1]
            monotone = len(t) < 2 or bool((diff > 0).all() or (diff < 0).all())
        values = None
    if not finite:
        shown = (values if values is not None else t.detach().cpu().tolist())[:8]
        raise InvalidInputError(f"{name} must be finite, got {shown}")
    if not monotone:
        shown = (values if values is not None else t.detach().cpu().tolist())[:8]
        raise InvalidInputError(
            f"{name} must be strictly increasing or strictly decreasing, got {shown}" + (" ..." if len(t) > 8 else "")
        )
    return t


def _check_per_sample_args(args, batch: int, where: str = "args") -> None:
    """Per sample, every tensor in ``args`` is indexed by sample along its first dimension (``slice_args``): one
    whose first dimension is not the batch is a shared parameter passed where per-sample ones go."""
    if isinstance(args, torch.Tensor):
        if args.ndim == 0 or args.shape[0] != batch:
            raise InvalidInputError(
                f"in per-sample mode the tensors in args are indexed by sample along their first dimension (so "
                f"that they stay aligned with the samples still running); {where} has shape {tuple(args.shape)}, "
                f"expected a first dimension of {batch} (the batch). For a parameter shared by every sample, pass "
                f"it expanded (x.expand({batch}, *x.shape)) or read it from a closure or an nn.Module")
    elif isinstance(args, (tuple, list)):
        for i, value in enumerate(args):
            _check_per_sample_args(value, batch, f"{where}[{i}]")
    elif isinstance(args, dict):
        for key, value in args.items():
            _check_per_sample_args(value, batch, f"{where}[{key!r}]")


def _tuple_tol(name: str, tol, shapes):
    # torchdiffeq: a tolerance per tuple element, expanded over that element.
    if isinstance(tol, (tuple, list)):
        if len(tol) != len(shapes):
            raise InvalidInputError(f"{name} has {len(tol)} entries for a tuple state of {len(shapes)} tensors")
        parts = []
        for i, (x, s) in enumerate(zip(tol, shapes)):
            if not isinstance(x, (int, float, torch.Tensor)) or isinstance(x, bool):
                raise InvalidInputError(f"{name}[{i}] (for part {i} of the tuple state) must be a number or a "
                                        f"tensor, got {x!r}")
            x = torch.as_tensor(x, dtype=torch.float64)
            if x.numel() != 1:
                raise InvalidInputError(f"{name}[{i}] (for part {i} of the tuple state) must be a scalar, got shape "
                                        f"{tuple(x.shape)}")
            parts.append(x.reshape(()).expand(s.numel()))
        return torch.cat(parts)
    return tol


def _as_tolerance(name: str, value, y0: torch.Tensor):
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise InvalidInputError(f"{name} cannot require gradient")
        if value.is_complex() or not (torch.is_floating_point(value) or value.dtype in _INT_DTYPES):
            raise InvalidInputError(f"{name} must be a real tensor, got dtype {value.dtype}")
        with torch.no_grad():
            bad = ~torch.isfinite(value) | (value < 0)
        if bool(bad.any()):
            shown = value.detach().flatten()[bad.flatten()][:4].tolist()
            raise InvalidInputError(f"{name} must be finite and >= 0 everywhere, got {shown} in {name} of shape "
                                    f"{tuple(value.shape)}")
        if value.numel() == 1:
            return float(value)
        try:
            fits = torch.broadcast_shapes(value.shape, y0.shape) == y0.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise InvalidInputError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to the state's shape {tuple(y0.shape)}; "
                f"give a scalar, or a tensor that broadcasts to the state (one tolerance per component)")
        return value.to(device=y0.device, dtype=y0.real.dtype if y0.is_complex() else y0.dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number or a tensor, got {value!r}")
    return float(value)


def _check_tolerances(rtol, atol) -> None:
    """Reject ``rtol`` and ``atol`` both zero for some component: its error would be divided by zero."""
    both_zero = torch.as_tensor(rtol) == 0
    both_zero = both_zero & (torch.as_tensor(atol) == 0)
    if bool(both_zero.any()):
        raise InvalidInputError(
            f"rtol and atol are both 0 (rtol={_shown(rtol)}, atol={_shown(atol)}): the error tolerance "
            "atol + rtol * |y| would be 0 where y is 0; give atol > 0 (or rtol > 0 for every component)")


def _shown(value) -> str:
    return f"{value!r}" if not isinstance(value, torch.Tensor) else f"tensor of shape {tuple(value.shape)}"


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def float_option(name: str, value) -> float:
    """``value`` of the option ``name`` as a float: a number or a one-element tensor, else a clear error."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"option {name!r} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _int_option(name: str, value) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"option {name!r} must be a positive (finite) integer, got {value!r}")
    return value


def _times_option(name: str, value) -> list[float]:
    """``step_t``/``jump_t``: a sequence (or 1-D tensor) of finite times."""
    if isinstance(value, torch.Tensor):
        values = value.detach().cpu().reshape(-1).tolist()
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        raise InvalidInputError(
            f"option {name!r} must be a sequence (list, tuple or 1-D tensor) of times, got {value!r}; "
            f"write [{value!r}] for a single time")
    try:
        values = [float_option(name, v) for v in values]
    except InvalidInputError:
        raise InvalidInputError(f"option {name!r} must hold numbers only, got {value!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"option {name!r} must hold finite times, got {values[:8]}")
    return values


def _check_finite_state(y0: torch.Tensor) -> None:
    # also when no step is taken (t of one time): a NaN in y0 would come back as the "solution"
    with torch.no_grad():
        finite = bool(torch.isfinite(y0).all())
    if not finite:
        shown = y0.detach().flatten()[~torch.isfinite(y0.detach().flatten())][:4].tolist()
        raise NonFiniteStateError(f"the initial state y0 is not finite: it holds {shown}", t=None)


def _check_norm(norm, y0) -> None:
    """Call the user's ``norm`` once on a probe: it must map the state to one finite number > 0."""
    if not callable(norm):
        raise InvalidInputError(f"option 'norm' must be callable as norm(x) -> scalar, got {norm!r}")
    probe = torch.ones_like(y0) if isinstance(y0, torch.Tensor) else tuple(torch.ones_like(p) for p in y0)
    try:
        with torch.no_grad():
            value = norm(probe)
    except TypeError as exc:  # most often the wrong signature
        raise InvalidInputError(f"option 'norm' could not be called as norm(x): {exc}") from None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InvalidInputError(f"option 'norm' must return a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"option 'norm' must return a number or a 0-d tensor, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(
            f"option 'norm' returned {value!r} for a state of ones; a norm must return a finite number > 0 for a "
            "nonzero state")


def _make_controller(controller, options: dict) -> IController | PIController | PIDController:
    factors = {k: float_option(k, options.pop(k)) for k in _FACTOR_OPTIONS if k in options}
    pid = {k: float_option(k, options.pop(k)) for k in _PID_OPTIONS if k in options}
    pi = {k: float_option(k, options.pop(k)) for k in _PI_OPTIONS if k in options}
    try:
        if controller is None:
            controller = "pid" if pid else "pi" if pi else "i"
        if isinstance(controller, str):
            if controller != "pid" and pid:
                raise InvalidInputError(f"options {sorted(pid)} need controller='pid', got controller={controller!r}")
            if controller != "pi" and pi:
                raise InvalidInputError(f"option 'beta' needs controller='pi', got controller={controller!r}")
            if controller == "i":
                return IController(**factors)
            if controller == "pi":
                return PIController(**pi, **factors)
            if controller == "pid":
                return PIDController(**pid, **factors)
            raise InvalidInputError(
                f"controller must be 'i', 'pi', 'pid' or a controller instance, got {controller!r}")
    except ValueError as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(str(exc)) from None
    if factors or pid or pi:
        raise InvalidInputError(
            f"options {sorted({**factors, **pid, **pi})} conflict with an explicit controller instance")
    if not hasattr(controller, "adapt") or not hasattr(controller, "start"):
        raise InvalidInputError(f"controller must provide start() and adapt(); got {controller!r}")
    return controller


def make_solver(solver: str | AbstractSolver, options: dict) -> tuple[AbstractSolver, str]:
    if isinstance(solver, AbstractSolver):
        if options:
            raise InvalidInputError(
                f"solver options {sorted(options)} given with a solver instance; configure the instance"
            )
        return solver, getattr(solver, "name", type(solver).__name__)
    if not isinstance(solver, str):
        raise InvalidInputError(f"solver must be a registered name or an AbstractSolver, got {solver!r}")
    factory = get_registry().get("solver", solver).obj
    if options:
        reject_unknown_options(f"solver {solver!r}", factory, options, LOOP_OPTIONS - {"dtype"})
    try:
        instance = factory(**options)
    except (TypeError, RuntimeError) as exc:  # raised inside the factory (RuntimeError: bool() of a tensor option)
        raise InvalidInputError(f"solver {solver!r} rejected the options {options}: {exc}") from None
    except ValueError as exc:
        raise InvalidInputError(f"solver {solver!r}: {exc}") from None
    if not isinstance(instance, AbstractSolver):
        raise InvalidInputError(f"solver {solver!r} factory returned {type(instance).__name__}, not an AbstractSolver")
    return instance, solver


def make_adjoint(adjoint: str | AbstractAdjoint, options: dict | None) -> tuple[AbstractAdjoint, str]:
    options = dict(options or {})
    if isinstance(adjoint, AbstractAdjoint):
        if options:
            raise InvalidInputError("adjoint options given with an adjoint instance; configure the instance")
        return adjoint, type(adjoint).__name__
    if not isinstance(adjoint, str):
        raise InvalidInputError(f"adjoint must be a registered name or an AbstractAdjoint, got {adjoint!r}")
    factory = get_registry().get("adjoint", adjoint).obj
    if options:
        reject_unknown_options(f"gradient method {adjoint!r}", factory, options, frozenset())
    try:
        return factory(**options), adjoint
    except TypeError as exc:  # raised inside the factory: its own message is the explanation
        raise InvalidInputError(f"gradient method {adjoint!r} rejected the options {options}: {exc}") from None


def reject_unknown_options(what: str, factory, options: dict, loop_options: frozenset) -> None:
    """Raise :class:`InvalidInputError` naming the options ``factory`` does not take, before calling it.

    Checked against the signature, so that the error lists what the user may pass (not the keywords a
    registered ``functools.partial`` already binds) instead of Python's ``__init__() got an unexpected
    keyword argument``. Factories taking ``**kwargs``, or whose signature cannot be read, check their own.
    """
    parameters = signature_parameters(factory)
    if not parameters or any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = _accepted_keywords(factory)
    unknown = sorted(o for o in options if o not in accepted)
    if not unknown:
        return
    known = sorted(set(accepted) | loop_options)
    hints = [f"{o!r} -> did you mean {close[0]!r}?" for o in unknown
             if (close := difflib.get_close_matches(o, known, n=1))]
    raise InvalidInputError(
        f"{what} does not accept the options {unknown}{' (' + '; '.join(hints) + ')' if hints else ''}; "
        f"its options are: {', '.join(accepted) or '(none)'}"
        + (f"; loop options are: {', '.join(sorted(loop_options))}" if loop_options else "")
    )


def signature_parameters(factory) -> tuple[inspect.Parameter, ...]:
    """The parameters of a plugin factory's signature (cached: every solve looks them up)."""
    try:
        return _cached_signature_parameters(factory)
    except TypeError:  # an unhashable factory (e.g. a callable dataclass instance)
        return _signature_parameters(factory)


def _signature_parameters(factory) -> tuple[inspect.Parameter, ...]:
    try:
        return tuple(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return ()


_cached_signature_parameters = functools.lru_cache(maxsize=256)(_signature_parameters)


def _accepted_keywords(factory) -> list[str]:
    """The options a factory takes: its keywords with defaults, less those a registered partial binds."""
    # a partial's keywords (ExplicitRungeKutta's tableau) belong to the registration, not to the user
    bound = factory.keywords if isinstance(factory, functools.partial) else {}
    return [p.name for p in signature_parameters(factory) if p.name not in bound and (p.kind is p.KEYWORD_ONLY or (
        p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty))]


def run_problem(problem: Problem, adjoint, adjoint_options: dict | None):
    """Solve ``problem`` with the gradient method ``adjoint`` (or hand it to an external solver).

    Returns ``(AdjointResult, gradient-method name)``; shared by ``solve`` and the functional API.
    """
    if problem.per_sample and adjoint not in PER_SAMPLE_ADJOINTS and not isinstance(adjoint, AbstractAdjoint):
        raise InvalidInputError(
            f"per-sample solving supports the gradient methods {list(PER_SAMPLE_ADJOINTS)}, got {adjoint!r}"
        )
    if isinstance(problem.solver, ExternalSolver):
        return run_external(problem, adjoint, adjoint_options)
    adjoint_obj, adjoint_name = make_adjoint(adjoint, adjoint_options)
    if problem.dense and adjoint_name != "direct":
        raise InvalidInputError(f"dense=True needs adjoint='direct', got {adjoint_name!r}")
    return adjoint_obj.solve(problem), adjoint_name


def run_external(problem: Problem, adjoint, adjoint_options: dict | None):
    """Hand a whole solve to an :class:`ExternalSolver` (the loop and adjoint plugins are bypassed)."""
    solver = problem.solver
    if not isinstance(adjoint, str):
        raise InvalidInputError(f"solver {solver!r} runs whole solves and takes the gradient method by name")
    if adjoint not in solver.supported_adjoints:
        raise InvalidInputError(
            f"solver {solver!r} supports the gradient methods {list(solver.supported_adjoints)}, not {adjoint!r}"
        )
    if problem.dense:
        raise InvalidInputError(f"solver {solver!r} has no dense output")
    if problem.args is not None or problem.per_sample:
        raise InvalidInputError(f"solver {solver!r} supports neither args nor per-sample time grids")
    return solver.solve_external(problem, adjoint, dict(adjoint_options or {})), adjoint


def build_problem(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    solver: str | AbstractSolver = DEFAULT_SOLVER,
    rtol=1e-7,
    atol=1e-9,
    controller=None,
    event_fn: Callable | None = None,
    params: Sequence[torch.Tensor] | None = None,
    options: dict | None = None,
    dense: bool = False,
    per_sample: bool = False,
    args=None,
    compile: bool | dict = False,
    tangent_control: bool | None = None,
    event_horizon: bool = True,
) -> tuple[Problem, str]:
    """Normalise a solve's arguments into a :class:`Problem` (shared by ``solve`` and ``odeint``).

    ``event_horizon``: with ``event_fn``, ``t[-1]`` bounds the event search unless ``t_max`` is given (``odeint``'s
    ``t[1]`` only sets the direction, as in torchdiffeq, and passes ``False``).
    """
    if not callable(func):
        raise InvalidInputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    y0_flat, shapes = flatten_state(y0)
    if not (torch.is_floating_point(y0_flat) or y0_flat.is_complex()):
        raise InvalidInputError(f"y0 must be a floating-point (or complex) tensor, got dtype {y0_flat.dtype}")
    if isinstance(t, torch.Tensor) and t.ndim == 2:
        per_sample = True
    if per_sample:
        if shapes is not None:
            raise InvalidInputError("per-sample time grids need a tensor state of shape (batch, ...), not a tuple")
        if event_fn is not None:
            raise InvalidInputError("event_fn is not supported with per-sample time grids")
        if not isinstance(t, torch.Tensor) or not torch.is_floating_point(t):
            raise InvalidInputError(f"t must be a floating-point tensor, got {t!r}")
        if y0_flat.ndim < 1:
            raise InvalidInputError("per-sample solving needs y0 with a leading batch dimension")
        if y0_flat.shape[0] == 0:
            raise InvalidInputError(f"per-sample solving needs at least one sample, got y0 of shape "
                                    f"{tuple(y0_flat.shape)} (an empty batch)")
        if dense:
            raise InvalidInputError("dense=True is not supported with per-sample solving (each sample has its own "
                                    "steps); request the output times in t, one row per sample")
        if t.ndim == 1:
            check_times(t)
            t = t.expand(y0_flat.shape[0], -1)
        if t.requires_grad:
            raise InvalidInputError("gradients with respect to per-sample times are not supported")
        _check_per_sample_args(args, y0_flat.shape[0])
    else:
        check_times(t, min_len=1)
    if t.device != y0_flat.device:
        t = t.to(y0_flat.device)
    original_options = dict(options or {})
    options = dict(options or {})
    options.pop("dtype", None)  # torchdiffeq's time dtype: neurode always keeps time in float64

    if shapes is not None:
        rtol = _tuple_tol("rtol", rtol, shapes)
        atol = _tuple_tol("atol", atol, shapes)
    rtol = _as_tolerance("rtol", rtol, y0_flat)
    atol = _as_tolerance("atol", atol, y0_flat)

    _check_tolerances(rtol, atol)
    if not per_sample:  # (per sample, a non-finite sample fails with its own status)
        _check_finite_state(y0_flat)

    norm = options.pop("norm", None)
    if norm is not None:
        _check_norm(norm, y0 if shapes is not None else y0_flat)
    if shapes is not None:
        user_norm = norm if norm is not None else mixed_norm

        def norm(x, _shapes=shapes, _user=user_norm):
            return _user(unflatten_state(x, _shapes))

    loop_kwargs = {k: options.pop(k) for k in list(options) if k in LOOP_OPTIONS}
    controller = _make_controller(controller, loop_kwargs)
    for key in ("step_t", "jump_t"):
        if loop_kwargs.get(key) is not None:
            loop_kwargs[key] = _times_option(key, loop_kwargs[key])
    if "nstiff" in loop_kwargs:
        loop_kwargs["nstiff"] = _int_option("nstiff", loop_kwargs["nstiff"])
    if event_fn is not None and loop_kwargs.get("t_max") is None and len(t) >= 2 and event_horizon:
        loop_kwargs["t_max"] = float(t[-1])  # solve's event search ends at the last output time
    for key in ("first_step", "min_step", "max_step", "step_size", "t_max"):
        if loop_kwargs.get(key) is not None:
            loop_kwargs[key] = float_option(key, loop_kwargs[key])
    if loop_kwargs.get("min_step") is not None and not math.isfinite(loop_kwargs["min_step"]):
        raise InvalidInputError(f"option 'min_step' must be a finite number >= 0, got {loop_kwargs['min_step']!r}")
    if loop_kwargs.get("grid_constructor") is not None and not callable(loop_kwargs["grid_constructor"]):
        raise InvalidInputError(f"option 'grid_constructor' must be callable as grid_constructor(func, y0, t), got "
                                f"{loop_kwargs['grid_constructor']!r}")
    config = LoopConfig(
        rtol=rtol,
        atol=atol,
        norm=norm,
        controller=controller,
        max_num_steps=_int_option("max_num_steps", loop_kwargs.pop("max_num_steps", DEFAULT_MAX_NUM_STEPS)),
        **{k: v for k, v in loop_kwargs.items() if v is not None or k in ("step_size", "grid_constructor")},
    )
    config.max_num_steps = min(config.max_num_steps, 2**31 - 1)
    config.validate()
    if not math.isinf(config.max_step) and config.first_step is not None and config.first_step > config.max_step:
        config.first_step = config.max_step

    raw_options = {k: v for k, v in (original_options or {}).items() if k != "norm"}
    if isinstance(solver, str):
        # solvers with their own tolerances (e.g. the Adams corrector) get the solve's, unless set explicitly
        accepted = _accepted_keywords(get_registry().get("solver", solver).obj)
        fixed_step = config.step_size is not None or config.grid_constructor is not None
        # ... and whether the steps are fixed (an implicit method then solves its stages to round-off)
        for name, value in (("rtol", rtol), ("atol", atol), ("fixed_step", fixed_step)):
            if name in accepted and name not in options:
                options[name] = value
    solver_obj, solver_name = make_solver(solver, options)
    if not getattr(solver_obj, "adaptive", False) and config.step_size is None and config.grid_constructor is None \
            and event_fn is None and not per_sample:
        _warn_no_step_size(solver_name, t)
    if isinstance(controller, PIController) and getattr(solver_obj, "adaptive", False):
        controller.exponent(solver_obj.error_order)  # a beta too large for this method's order: say so now
    if compile:
        from neurode.framework.compiled_step import CompiledRungeKutta

        if per_sample:
            raise InvalidInputError("compile=True is not supported with per-sample solving")
        if shapes is not None:
            raise InvalidInputError("compile=True needs a tensor state, not a tuple of tensors")
        if not isinstance(solver_obj, ExplicitRungeKutta):
            raise InvalidInputError(f"compile=True needs an explicit Runge-Kutta solver, got {solver_name!r}")
        if tangent_control:
            raise InvalidInputError("tangent_control=True is not supported with compile=True (the compiled step "
                                    "takes no forward-mode tangent); use one or the other")
        solver_obj = CompiledRungeKutta(solver_obj, **(compile if isinstance(compile, dict) else {}))
    if event_fn is not None and not callable(event_fn):
        raise InvalidInputError(f"event_fn must be callable as event_fn(t, y) -> tensor, got {event_fn!r}")
    if event_fn is not None and shapes is not None:
        user_event_fn = event_fn

        def event_fn(t_, y_, _shapes=shapes, _user=user_event_fn):
            return _user(t_, unflatten_state(y_, _shapes))

    if tangent_control not in (None, True, False):
        raise InvalidInputError(f"tangent_control must be None (automatic), True or False, got {tangent_control!r}")
    params_explicit = params is not None
    if params_explicit:
        if isinstance(params, torch.Tensor):
            raise InvalidInputError("adjoint_params must be a sequence of tensors (e.g. a tuple), got one Tensor")
        params = tuple(params)  # may be a generator such as net.parameters()
        others = sorted({type(p).__name__ for p in params if not isinstance(p, torch.Tensor)})
        if others:
            raise InvalidInputError(f"adjoint_params must hold tensors only, got {others}")
    if params is None:
        # the parameters of func are only needed for a backward pass, i.e. when gradients are recorded
        params = default_params(func) if torch.is_grad_enabled() else ()
    params = tuple(p for p in params if isinstance(p, torch.Tensor) and p.requires_grad)
    problem = Problem(
        func=func, y0=y0_flat, t=t, solver=solver_obj, config=config, shapes=shapes, event_fn=event_fn,
        params=params, stats=SolveStats(), dense=dense, options=raw_options,
        solver_name=solver if isinstance(solver, str) else None, per_sample=per_sample,
        args=args, params_explicit=params_explicit, tangent_control=tangent_control,
    )
    return problem, solver_name


def _warn_no_step_size(solver_name: str, t: torch.Tensor) -> None:
    # torchdiffeq then steps from output time to output time, silently: a two-point t is one step
    n = len(t) - 1
    if n < 1:
        return
    warnings.warn(
        f"solver {solver_name!r} takes fixed steps and was given no step_size: it steps from each output time to "
        f"the next ({n} step{'s' if n > 1 else ''} from t={float(t[0]):g} to t={float(t[-1]):g}) and rtol/atol "
        "have no effect; pass step_size=... (options={'step_size': ...} with odeint) or grid_constructor=...",
        stacklevel=3,
    )


def solve(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    solver: str | AbstractSolver = DEFAULT_SOLVER,
    adjoint: str | AbstractAdjoint = DEFAULT_ADJOINT,
    rtol=1e-7,
    atol=1e-9,
    controller=None,
    event_fn: Callable | None = None,
    adjoint_options: dict | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    dense: bool = False,
    per_sample: bool = False,
    on_failure: str = "raise",
    args=None,
    compile: bool | dict = False,
    tangent_control: bool | None = None,
    **options,
) -> Solution:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, and report what it took.

    Args:
        func: ``func(t, y) -> dy/dt``; ``t`` arrives as a 0-d tensor of
            ``y``'s dtype. ``y`` is a tensor or a tuple of tensors.
        y0: initial state, any shape (a batch is just leading dimensions).
        t: 1-D tensor of output times, increasing or decreasing.
        solver: a registered solver name (``neurode plugins --kind solver``)
            or an :class:`AbstractSolver` instance.
        adjoint: the gradient method: ``"direct"``, ``"backsolve"``,
            ``"checkpoint"`` or any registered one, or an instance.
        rtol, atol: relative and absolute tolerances (floats, or tensors per
            element; tuples per part of a tuple state).
        controller: ``"i"`` (default; torchdiffeq's integral controller),
            ``"pi"`` (Hairer's DOPRI5 PI control, option ``beta``; fewer
            rejected steps on oscillatory solutions), ``"pid"`` (options
            ``pcoeff``, ``icoeff``, ``dcoeff``) or a controller instance.
        event_fn: stop at the first sign change of ``event_fn(t, y)``; ``t[0]``
            is the start, ``t[-1]`` (or the option ``t_max``) the horizon:
            no sign change by then raises ``EventNotFoundError``.
            ``Solution.event_t`` holds the time.
        adjoint_options: options of the gradient method (e.g. for
            ``backsolve``: ``rtol``, ``atol``, ``solver``, ``options``,
            ``norm="seminorm"``).
        adjoint_params: tensors to differentiate besides ``y0`` and the tensors
            of ``args``. Default: every tensor that requires grad and that
            ``func`` reads — its parameters, and what a closure or module
            captures (the ``checkpoint`` and ``backsolve`` methods watch the
            forward solve to find them; ``direct`` needs no list). Given, exactly
            these are differentiated, as with torchdiffeq's ``odeint_adjoint``.
        dense: also return a dense-output callable ``Solution.dense(t)``
            (``direct`` gradient method only).
        per_sample: solve every sample of the batch (the leading dimension of
            ``y0``) as its own problem, with its own step size and status
            (implied when ``t`` has shape ``(batch, T)``: per-sample output
            times, NaN-padded at the end for ragged grids). ``func`` then
            receives ``t`` as a ``(active batch,)`` tensor and only the
            samples still running. ``ys`` has shape ``(T, batch, ...)``.
        args: if given, ``func`` is called as ``func(t, y, args)`` (as in
            diffrax). In per-sample mode, tensors in ``args`` (alone, or in a
            tuple/list/dict) are indexed along their first dimension to the
            samples still running, so per-sample parameters stay aligned with
            the state.
        compile: run each step of an explicit Runge–Kutta solver, the
            evaluations of ``func`` included, as code compiled by
            ``torch.compile`` (as diffrax jit-compiles its steps). Worth it for
            small states, where eager PyTorch spends more time dispatching the
            stage combinations than evaluating ``func``; the first solve
            compiles for seconds, and a new state shape or dtype compiles again.
            Tensor states only; not with per-sample solving; no
            ``tangent_control`` (the steps control the solution's error only). A dict is passed
            to ``torch.compile`` as options. See
            ``neurode/framework/compiled_step.py``.
        tangent_control: with an adaptive solver and the ``direct`` or
            ``checkpoint`` gradient method, also control the local error of a
            tangent of the solution (forward-mode AD), so that the steps resolve
            the derivative that backpropagation computes, not only the values.
            Without it a component that is exactly zero (an oscillator started
            at rest) gives no error, the steps grow without bound, and the
            gradient can be off by orders of magnitude. ``None`` (default): on
            when gradients are recorded. Costs about one Jacobian-vector product
            per evaluation of ``func``. See ``neurode/framework/tangent.py``.
        on_failure: in per-sample mode, ``"raise"`` (default) raises the
            typed error of the first failed sample; ``"report"`` returns the
            others' results with NaN after a failure and ``Solution.status``.
        **options: solver and loop options, with torchdiffeq's names:
            ``first_step``, ``min_step``, ``max_step``, ``max_num_steps``
            (default 100000), ``step_t``, ``jump_t``, ``norm``, ``safety``,
            ``ifactor``, ``dfactor``, ``pcoeff``/``icoeff``/``dcoeff`` (PID),
            and for fixed-step methods ``step_size``, ``grid_constructor``,
            ``interp`` (``"linear"``/``"cubic"``), ``perturb``. neurode's own:
            ``t_max`` (the event horizon), ``nstiff`` (accepted steps between
            two stiffness tests, default 1000, 0 for none; a solve the step
            limit cannot finish with its steps pinned at the explicit method's
            stability limit raises ``StiffProblemError``, see ``stiffness.py``).

    Returns:
        :class:`Solution` with ``ys`` of shape ``(len(t), *y0.shape)`` and
        ``stats`` (nfe forward and backward, accepted and rejected steps,
        last step size).
    """
    if on_failure not in ("raise", "report"):
        raise InvalidInputError(f"on_failure must be 'raise' or 'report', got {on_failure!r}")
    problem, solver_name = build_problem(
        func, y0, t, solver=solver, rtol=rtol, atol=atol, controller=controller, event_fn=event_fn,
        params=adjoint_params, options=options, dense=dense, per_sample=per_sample, args=args, compile=compile,
        tangent_control=tangent_control,
    )
    result, adjoint_name = run_problem(problem, adjoint, adjoint_options)
    ys = result.ys
    if problem.shapes is not None:
        ys = unflatten_state(ys, problem.shapes, lead=(ys.shape[0],))
    status = sample_stats = None
    if result.batch is not None:
        from neurode.framework.batch_loop import raise_for_status

        if on_failure == "raise":
            raise_for_status(result.batch, problem.stats)
        status = result.batch.status
        sample_stats = {"n_accepted": result.batch.n_accepted, "n_rejected": result.batch.n_rejected,
                        "h_last": result.batch.h_last, "fail_t": result.batch.fail_t}
    dense_fn = None
    if dense:
        from neurode.framework.dense import DenseOutput

        dense_fn = DenseOutput(problem.solver, result.dense, problem.t, problem.shapes)
    return Solution(
        ts=t, ys=ys, stats=problem.stats, solver=solver_name, adjoint=adjoint_name,
        event_t=result.event_t, dense=dense_fn, status=status, sample_stats=sample_stats,
    )
