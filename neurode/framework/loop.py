"""The integration loop: the one place that advances a solve through time.

It owns what every method shares — choosing the next step (from the
controller, a fixed grid, ``step_t``/``jump_t`` and ``min_step``/``max_step``),
accepting or rejecting it, producing outputs at the requested times with the
method's dense interpolant (never by stepping onto every output time),
events, the step limit, non-finite detection and statistics — and nothing a
particular method knows (see ``solver.py``).

Time is kept as Python floats: float64 whatever the state's dtype, and no
device synchronisation beyond the one accept/reject decision per step. The
loop works on ``tau = direction * t`` so that decreasing ``t`` is an ordinary
forward solve with negative steps ``h = direction * dtau``.

Records: ``record="steps"`` keeps each accepted step's start state (for the
checkpointed adjoint: memory bounded by the stored step states, not the
activations), ``record="dense"`` keeps the whole steps (for dense output).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from neurode.framework.controller import (
    IController,
    PIController,
    PIDController,
    initial_step,
    newton_step_size,
    norm_value,
)
from neurode.framework.errors import (
    InvalidInputError,
    MaxStepsError,
    NewtonConvergenceError,
    NonFiniteStateError,
    SolverError,
    StepSizeUnderflowError,
)
from neurode.framework.events import EventSearch
from neurode.framework.solution import SolveStats
from neurode.framework.solver import AbstractSolver, Step, StepFailure
from neurode.framework.stiffness import DEFAULT_NSTIFF, StiffnessDetector
from neurode.framework.tangent import make_stepper
from neurode.framework.vector_field import VectorField, unflatten_state

#: Default step limit of a solve. Finite on purpose (diffrax's lesson): an
#: endless solve is a bug report; raise it with ``max_num_steps``.
DEFAULT_MAX_NUM_STEPS = 100_000


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square norm, the default error norm (Hairer et al. I, eq. 4.11)."""
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


@dataclass
class LoopConfig:
    """Everything about *how* to integrate that is not the method itself."""

    rtol: float | torch.Tensor = 1e-7
    atol: float | torch.Tensor = 1e-9
    norm: Callable[[torch.Tensor], Any] | None = None
    controller: IController | PIController | PIDController = field(default_factory=IController)
    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS
    #: count max_num_steps per output interval (torchdiffeq's semantics, used by ``neurode.odeint``)
    #: instead of over the whole solve (``neurode.solve``)
    max_steps_per_output: bool = False
    step_t: Sequence[float] | None = None
    jump_t: Sequence[float] | None = None
    step_size: float | None = None
    grid_constructor: Callable | None = None
    #: with an event function: the time by which the event must have happened (``EventNotFoundError`` after);
    #: ``None``: no horizon, only ``max_num_steps`` bounds the search
    t_max: float | None = None
    #: accepted steps between two stiffness tests (Hairer's NSTIFF; 0 turns the test off), see stiffness.py
    nstiff: int = DEFAULT_NSTIFF

    def validate(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                if value.requires_grad:
                    raise InvalidInputError(f"{name} cannot require gradient")
                if (value < 0).any():
                    raise InvalidInputError(f"{name} must be >= 0, got {value}")
            elif not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (self.min_step >= 0):
            raise InvalidInputError(f"min_step must be >= 0, got {self.min_step!r}")
        if not (self.max_step > 0):
            raise InvalidInputError(f"max_step must be > 0, got {self.max_step!r}")
        if self.min_step > self.max_step:
            raise InvalidInputError(f"min_step ({self.min_step}) must not exceed max_step ({self.max_step})")
        if not (isinstance(self.max_num_steps, int) and self.max_num_steps > 0):
            raise InvalidInputError(f"max_num_steps must be a positive integer, got {self.max_num_steps!r}")
        if self.t_max is not None and not math.isfinite(self.t_max):
            raise InvalidInputError(f"t_max must be a finite time, got {self.t_max!r}")
        if self.first_step is not None and not (self.first_step > 0 and math.isfinite(self.first_step)):
            raise InvalidInputError(f"first_step must be a positive finite number, got {self.first_step!r}")
        if self.step_size is not None:
            if self.grid_constructor is not None:
                raise InvalidInputError("step_size and grid_constructor are mutually exclusive")
            if not (self.step_size > 0 and math.isfinite(self.step_size)):
                raise InvalidInputError(f"step_size must be a positive finite number, got {self.step_size!r}")


@dataclass
class StepRecord:
    """An accepted step as the checkpointed adjoint needs it."""

    t0: float
    h: float
    y0: torch.Tensor
    state0: tuple[torch.Tensor, ...]
    outputs: list[tuple[int, float]]  # (output index, theta) produced inside this step
    jump: bool = False  # the solver state was re-initialised at the end (jump_t)


@dataclass
class LoopResult:
    ys: list[torch.Tensor]
    stats: SolveStats
    event_t: float | None = None
    records: list[Any] = field(default_factory=list)


def _error_ratio(step: Step, rtol, atol, norm, abs_y0: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """The scaled error norm, and ``|y1|`` (the next step's ``|y0|`` if this one is accepted).

    No graph is built (step sizes carry no gradient).
    """
    if torch.is_grad_enabled():
        with torch.no_grad():
            return _error_ratio(step, rtol, atol, norm, abs_y0)
    # Hairer et al. I, eq. 4.10-4.11: err_i / (atol + rtol * max(|y0_i|, |y1_i|)).
    abs_y1 = step.y1.abs()
    scale = torch.maximum(step.y0.abs() if abs_y0 is None else abs_y0, abs_y1)
    if isinstance(rtol, torch.Tensor) or isinstance(atol, torch.Tensor):
        scale = atol + rtol * scale
    else:
        scale.mul_(rtol).add_(atol)
    return norm_value(step.error / scale, norm), abs_y1


def _fixed_grid(config: LoopConfig, func, y0, t: torch.Tensor, tau_out: list[float], direction: float) -> list[float]:
    if config.step_size is not None:
        # torchdiffeq's grid: ceil((t1 - t0) / dt + 1) points from t0, the last moved onto t1.
        start, end = tau_out[0], tau_out[-1]
        _check_fixed_step_count(config, tau_out)
        n = int(math.ceil((end - start) / config.step_size + 1))
        grid = [start + k * config.step_size for k in range(n)]
        grid[-1] = end
        if len(grid) >= 2 and grid[-1] <= grid[-2]:  # floating round-off made a zero-length last step
            grid.pop(-2)
        return grid
    if config.grid_constructor is not None:
        try:
            grid_t = config.grid_constructor(func, y0, t)
        except TypeError as exc:  # most often the wrong signature
            raise InvalidInputError(f"grid_constructor could not be called as grid_constructor(func, y0, t): {exc}") \
                from None
        if not isinstance(grid_t, torch.Tensor) or grid_t.ndim != 1:
            raise InvalidInputError("grid_constructor must return a 1-D tensor of times")
        grid = [direction * float(g) for g in grid_t.detach().cpu().tolist()]
        if grid[0] != tau_out[0] or grid[-1] != tau_out[-1]:
            raise InvalidInputError(
                f"grid_constructor must return a grid from t[0] to t[-1]; got {grid_t[0].item()} .. "
                f"{grid_t[-1].item()} for t[0]={t[0].item()}, t[-1]={t[-1].item()}"
            )
        if any(b <= a for a, b in zip(grid, grid[1:])):
            raise InvalidInputError("grid_constructor must return a strictly monotone grid in the direction of t")
        return grid
    return list(tau_out)


def _check_fixed_step_count(config: LoopConfig, tau_out: list[float]) -> None:
    """Raise :class:`MaxStepsError` before building a grid of more steps than ``max_num_steps`` allows.

    Building the grid is itself O(steps): a step size of 1e-9 would hang in the list before the loop's own
    step count could stop it.
    """
    if config.max_steps_per_output:
        span = max((b - a for a, b in zip(tau_out, tau_out[1:])), default=0.0)
    else:
        span = tau_out[-1] - tau_out[0]
    needed = math.ceil(span / config.step_size)
    if needed > config.max_num_steps:
        raise MaxStepsError(
            f"step_size={config.step_size:.3g} needs {needed} steps to cover "
            f"{'the longest output interval' if config.max_steps_per_output else 'the solve'} "
            f"(length {span:.6g}), more than max_num_steps={config.max_num_steps}; use a larger step_size or "
            "raise max_num_steps=...",
            t=None, dt=config.step_size,
        )


def _sorted_after(values: Sequence[float] | None, tau0: float, direction: float) -> list[float]:
    if values is None:
        return []
    taus = sorted(direction * float(v) for v in values)
    return [v for v in taus if v > tau0]


def integrate(
    solver: AbstractSolver,
    func: VectorField,
    y0: torch.Tensor,
    t: torch.Tensor,
    config: LoopConfig,
    *,
    event_fn: Callable | None = None,
    record: str | None = None,
    stats: SolveStats | None = None,
    t_requires_grad: bool = False,
    tangent: bool | str = False,
) -> LoopResult:
    """Integrate ``func`` from ``t[0]`` through every time in ``t``.

    ``t`` is a 1-D tensor, strictly monotone. With ``event_fn`` only ``t[0]``
    is used and the solve runs until ``event_fn(t, y)`` changes sign.
    Returns the states at the times of ``t`` as a list (``ys[0] is y0``, or
    ``y0.detach()`` when gradients are off). ``tangent`` (``True``, ``False`` or
    ``"auto"``): adaptive steps also control the error of a tangent of the
    solution (see ``tangent.py``).
    """
    stats = SolveStats() if stats is None else stats
    if y0.requires_grad and not torch.is_grad_enabled():
        y0 = y0.detach()  # f then sees the same kind of tensor at every call: no recompiles of a compiled f
    nfe_start = func.counts()
    t_list = [float(v) for v in t.detach().to(dtype=torch.float64, device="cpu").tolist()]
    n_out = len(t_list)
    direction = 1.0
    if n_out >= 2 and t_list[1] < t_list[0]:
        direction = -1.0
    tau_out = [direction * v for v in t_list]
    func.direction = direction
    fixed = config.step_size is not None or config.grid_constructor is not None or not solver.adaptive
    if event_fn is not None and fixed and config.step_size is None and not solver.adaptive:
        raise InvalidInputError(
            f"event handling with the fixed-step solver {solver!r} needs options={{'step_size': ...}}"
        )

    controller = config.controller.start()
    rtol, atol, norm = config.rtol, config.atol, config.norm
    order = solver.error_order

    tau = tau_out[0]
    y = y0
    stepper = make_stepper(solver, y0, tangent=False if fixed else tangent, per_sample=False)
    state = stepper.init(func, direction * tau, y0)
    ys: list[torch.Tensor] = [y0]
    records: list[Any] = []
    out_index = 1

    # ---- step-size set-up
    grid: list[float] = []
    grid_index = 1
    h = 0.0
    if fixed:
        if event_fn is not None:
            grid = []
        else:
            grid = _fixed_grid(config, func.func, y0, t, tau_out, direction)
    else:
        if config.first_step is not None:
            h = float(config.first_step)
        else:
            f0 = state[0] if state else func(direction * tau, y0)
            h = initial_step(func, direction * tau, y0, f0, solver.initial_step_order, rtol, atol, norm, direction)
    step_t = _sorted_after(config.step_t, tau, direction)
    jump_t = _sorted_after(config.jump_t, tau, direction)
    if set(step_t) & set(jump_t):
        raise InvalidInputError("step_t and jump_t must not share any time")
    if solver.steps_onto_outputs and not fixed and event_fn is None:
        step_t = sorted((set(step_t) | {v for v in tau_out[1:] if v > tau}) - set(jump_t))
    # a step must be a number of the state's dtype (f's error can be 0 and the steps grow without bound)
    min_step, max_step = float(config.min_step), min(float(config.max_step), torch.finfo(func.time_dtype).max)

    events = None if event_fn is None else EventSearch(event_fn, direction, tau, y0, config.t_max)
    if events is not None and events.sign0 == 0:  # already on the event
        func.tally(stats, nfe_start)
        return LoopResult([y0, y0], stats, event_t=direction * tau)
    tau_horizon = math.inf if events is None else events.tau_horizon
    stiffness = None if fixed else StiffnessDetector.for_solver(solver, config.nstiff)

    def unfinished() -> tuple[float, int]:  # time and steps left to the step budget's goal (stiffness verdict)
        goal = tau_horizon if events else tau_out[min(out_index, n_out - 1) if config.max_steps_per_output else -1]
        return goal - tau, config.max_num_steps - (steps_since_output if config.max_steps_per_output else n_steps)

    # torchdiffeq's optional callbacks on the vector field: callback_step(t0, y0, dt) before each step,
    # callback_accept_step / callback_reject_step(t0, y0, dt) after the decision. As in torchdiffeq,
    # dt is the step's size (positive also when t decreases) and t0 the step's start time.
    user = func.func
    cb_step = getattr(user, "callback_step", None)
    cb_accept = getattr(user, "callback_accept_step", None)
    cb_reject = getattr(user, "callback_reject_step", None)
    if fixed and (cb_accept is not None or cb_reject is not None):
        _warn_adaptive_only_callbacks(solver, cb_accept, cb_reject)
        cb_accept = cb_reject = None  # as in torchdiffeq, whose fixed-grid solvers never call them

    last: Step | None = None
    abs_y = None  # |y| of the current state, computed by the last accepted step's error ratio
    tau_prev = tau
    n_steps = 0
    steps_since_output = 0
    retried = False  # whether this fixed step already failed once and is being retried from step.state_retry
    newton_failed = False  # whether the last step attempt was rejected for its Newton iteration
    while True:
        # ---- outputs inside the last accepted step (tau_prev, tau]
        if last is not None and event_fn is None:
            emitted = []
            if out_index < n_out and tau_out[out_index] <= tau:
                steps_since_output = 0
            while out_index < n_out and tau_out[out_index] <= tau:
                target = tau_out[out_index]
                dtau = tau - tau_prev
                if t_requires_grad:
                    theta = (direction * t[out_index] - tau_prev) / dtau
                elif target == tau:
                    theta = 1.0
                else:
                    theta = (target - tau_prev) / dtau
                ys.append(solver.interpolate(last, theta))
                emitted.append((out_index, float(theta.detach()) if isinstance(theta, torch.Tensor) else theta))
                out_index += 1
            if record == "steps" and emitted:
                records[-1].outputs.extend(emitted)
        if event_fn is None and out_index >= n_out:
            break

        if (steps_since_output if config.max_steps_per_output else n_steps) >= config.max_num_steps:
            func.tally(stats, nfe_start)
            if not fixed:  # report the step that would be tried next, clipped as the loop would clip it
                h = min(max(h, min_step), max_step) if math.isfinite(h) else min_step
            raise _max_steps_error(config, direction * tau, direction * h, t_list[-1], event_fn is not None, stats)

        # ---- propose the step [tau, tau1]
        on_jump = False
        if fixed:
            if event_fn is not None:
                tau1 = min(tau + float(config.step_size), tau_horizon)
            else:
                tau1 = grid[grid_index]
            h = tau1 - tau
        else:
            if not math.isfinite(h):  # grown past the float range (an error of 0), or NaN
                h = max_step if h == math.inf else min_step
            h = min(max(h, min_step), max_step)
            tau1 = tau + h
            clipped = False
            if step_t and tau < step_t[0] < tau1:
                tau1, clipped = step_t[0], True
            if jump_t and tau < jump_t[0] < tau1:
                tau1, clipped, on_jump = jump_t[0], True, True
            if tau1 > tau_horizon:
                tau1, clipped = tau_horizon, True
            if clipped:  # otherwise keep h itself: tau1 - tau may round above min_step
                h = tau1 - tau
        if not math.inf > tau1 > tau:
            func.tally(stats, nfe_start)
            raise _step_size_error(direction * tau, direction * h, tau1, stats)

        if cb_step is not None:
            cb_step(func.time(direction * tau), _user_state(y, func), func.time(h))
        # a rejected attempt's stages must not stay alive while the next one runs (constant memory for backsolve)
        step = abs_y1 = None
        step, tangent_error = stepper.step(func, direction * tau, direction * h, y, state)
        n_steps += 1
        stats.n_steps += 1
        steps_since_output += 1

        # ---- accept or reject
        if fixed:
            if step.failure is not None and step.state_retry is not None and not retried:
                # a fixed step cannot shrink, but an implicit method's retry state may differ (a Jacobian formed
                # at y instead of an old one, Hairer & Wanner II, §IV.8): try the same step once more from it
                retried = True
                stats.n_rejected += 1
                state = step.state_retry
                continue
            if step.failure is not None:  # a fixed step cannot shrink: a Newton failure ends the solve
                func.tally(stats, nfe_start)
                raise newton_error(step.failure, 0, direction * tau, direction * h, stats, per_sample=False,
                                   advice="a fixed-step solve cannot shrink the step: use a smaller step_size or "
                                          "an adaptive solve")
            accept, h_next, retried = True, h, False
        else:
            ratio, abs_y1 = _error_ratio(step, rtol, atol, norm, abs_y)
            if tangent_error is not None and math.isfinite(ratio):
                ratio = max(ratio, stepper.ratio(tangent_error, rtol, atol, norm))
            accept, h_next = controller.adapt(h, ratio, order)
            h_next = newton_step_size(h, h_next, accept, step.failure is not None, newton_failed)
            newton_failed = step.failure is not None
            if not math.isfinite(ratio):
                accept = False
                if h <= min_step or not (tau + h_next > tau):
                    func.tally(stats, nfe_start)
                    if step.failure is not None:
                        raise newton_error(step.failure, 0, direction * tau, direction * h, stats, per_sample=False)
                    raise NonFiniteStateError(
                        f"the state became non-finite (NaN or inf) in a step from t={direction * tau:.9g} "
                        f"with step size {direction * h:.3g}, and shrinking the step did not help",
                        t=direction * tau, dt=direction * h, stats=stats,
                    )
            elif h <= min_step:
                accept = True  # torchdiffeq: steps at min_step are always taken

        if accept:
            if cb_accept is not None:
                cb_accept(func.time(direction * tau), _user_state(y, func), func.time(h))
            stats.n_accepted += 1
            stepper.accept()
            if record == "steps":
                records.append(StepRecord(direction * tau, direction * h, y, state, []))
            elif record == "dense":
                records.append(step)
            tau_prev, tau = tau, tau1
            y, state = step.y1, step.state1
            abs_y = abs_y1  # None for fixed steps, which have no error ratio
            last = step
            stats.h_last = direction * h
            if fixed and event_fn is None:
                grid_index += 1
            if stiffness is not None:
                _counting(stats, func, nfe_start, stiffness.check, step, stats, unfinished)
            if step_t and tau == step_t[0]:
                step_t.pop(0)
            if on_jump:
                jump_t.pop(0)
                state = stepper.after_jump(func, direction * tau, y, state)
                if record == "steps":
                    records[-1].jump = True
            # ---- events: a sign change of event_fn inside the step
            found = None if events is None else _counting(stats, func, nfe_start, events.locate, solver, last, func,
                                                          tau_prev, tau, y, atol, stats)
            if found is not None:
                event_tau, theta = found
                if record == "steps":
                    records[-1].outputs.append((1, theta))
                func.tally(stats, nfe_start)
                stats.h_next = direction * h_next
                return LoopResult([y0, solver.interpolate(last, theta)], stats, event_t=direction * event_tau,
                                  records=records)
        else:
            if cb_reject is not None:
                cb_reject(func.time(direction * tau), _user_state(y, func), func.time(h))
            stats.n_rejected += 1
            if step.state_retry is not None:  # e.g. an implicit method's Jacobian formed at y for the retry
                state = step.state_retry
        h = h_next

    func.tally(stats, nfe_start)
    stats.h_next = direction * h
    if fixed:
        # fixed steps have no error estimate to notice NaN: check the outputs once, after the solve
        _check_finite_outputs(ys, t_list, stats)
    return LoopResult(ys, stats, records=records)


def _counting(stats: SolveStats, func: VectorField, nfe_start: tuple[int, int, int], check: Callable, *args):
    """``check(*args)``; if it raises, the solve's evaluations are counted in ``stats`` first, as at every failure."""
    try:
        return check(*args)
    except SolverError:
        func.tally(stats, nfe_start)
        raise


def newton_error(failure: StepFailure, row: int, t: float, h: float, stats, *, per_sample: bool,
                 advice: str = "shrinking the step did not help") -> NewtonConvergenceError:
    """The typed error of an implicit method's Newton failure in row ``row`` (a sample, or the whole state)."""
    reason, residual = failure.describe(row)
    who = f"sample {row}: " if per_sample else ""
    return NewtonConvergenceError(
        f"{who}the Newton iteration for the implicit stages did not converge at t={t:.9g} with step size {h:.3g} "
        f"({reason}; last scaled increment norm {residual:.3g}), and {advice}; f may be non-smooth or singular "
        "here, or the solution blows up (check f near t; options max_iters=..., newton_tol=..., jac=...)",
        t=t, dt=h, stats=stats, sample=row if per_sample else None, residual=residual)


def _step_size_error(t: float, h: float, tau1: float, stats) -> SolverError:
    if math.isinf(tau1):
        return SolverError(f"the solve reached t={t:.6g}: a step of {h:.3g} leaves the range of float64 (the "
                           "error estimate is 0 and the steps grew without bound); with an event that never "
                           "happens, bound the search with t_max=...", t=t, dt=h, stats=stats)
    return StepSizeUnderflowError(
        f"step size underflow at t={t:.17g}: a step of {h:.3g} does not change t in float64; the solution may be "
        "blowing up or the problem is stiff", t=t, dt=h, stats=stats)


def _max_steps_error(config: LoopConfig, t: float, h: float, t_end: float, event: bool, stats) -> MaxStepsError:
    if event:
        horizon = "" if config.t_max is None else f" by t_max={config.t_max:.9g}"
        goal = f"the event function changed sign{horizon} (pass t_max=... to bound the search)"
    else:
        goal = f"reaching t={t_end:.9g}"
    return MaxStepsError(
        f"max_num_steps={config.max_num_steps} reached"
        f"{' within one output interval' if config.max_steps_per_output else ''} at t={t:.9g} with step size "
        f"{abs(h):.3g} before {goal}; the problem may be stiff (try an implicit solver) or the tolerances too tight; "
        "raise the limit with max_num_steps=...",
        t=t, dt=h, stats=stats,
    )


def _warn_adaptive_only_callbacks(solver: AbstractSolver, cb_accept, cb_reject) -> None:
    """A fixed grid decides nothing: warn that its accept/reject callbacks are never called (as torchdiffeq)."""
    names = sorted(n for n, cb in (("callback_accept_step", cb_accept), ("callback_reject_step", cb_reject)) if cb)
    warnings.warn(
        f"Solver {solver!r} does not support callbacks {set(names)}: it takes fixed steps, so no step is accepted "
        "or rejected and only callback_step is called",
        stacklevel=3,
    )


def _check_finite_outputs(ys: list[torch.Tensor], t_list: list[float], stats: SolveStats) -> None:
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(y).all() for y in ys]).tolist()
    if all(finite):
        return
    first = finite.index(False)
    raise NonFiniteStateError(
        f"the state is non-finite (NaN or inf) at the output time t={t_list[first]:.9g}"
        + (f" (finite at t={t_list[first - 1]:.9g})" if first else "")
        + "; a fixed-step solve cannot shrink its steps: use a smaller step_size or an adaptive solver",
        t=t_list[first], stats=stats,
    )


def _user_state(y: torch.Tensor, func: VectorField):
    if func.shapes is None:
        return y
    return unflatten_state(y, func.shapes)
