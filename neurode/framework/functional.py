"""The torchdiffeq-compatible functional API: change ``import torchdiffeq`` to ``import neurode``.

Same arguments, defaults (``rtol=1e-7, atol=1e-9``, ``method="dopri5"``),
``options`` keys and method names; tuple states, decreasing ``t``, events.
Unknown options are warned about and ignored, as torchdiffeq does. What
differs: failures raise typed errors (:class:`neurode.SolverError`) instead of
asserts, the step limit is finite by default (``max_num_steps=100000``), and
time is always kept in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch.autograd.functional import vjp

from neurode.framework.errors import InvalidInputError
from neurode.framework.registry import get_registry
from neurode.framework.solve import (
    LOOP_OPTIONS,
    _accepted_keywords,
    build_problem,
    run_problem,
    signature_parameters,
)
from neurode.framework.vector_field import flatten_state, unflatten_state

#: torchdiffeq method names that are spelled differently here
METHOD_ALIASES = {"fixed_adams": "implicit_adams", "scipy_solver": "torchdiffeq.scipy_solver"}


def _method_name(method: str | None) -> str:
    if method is None:
        return "dopri5"
    if not isinstance(method, str):
        raise InvalidInputError(f"method must be a string, got {method!r}")
    return METHOD_ALIASES.get(method, method)


def _filter_options(method: str, options: dict | None) -> dict:
    """torchdiffeq warns about (and ignores) options a method does not take; so does neurode.odeint."""
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(f"options must be a dict of solver and loop options, got {options!r}")
    options = dict(options or {})
    if not options:
        return options
    factory = get_registry().get("solver", method).obj
    accepted = set(_accepted_keywords(factory)) | LOOP_OPTIONS
    if any(p.kind is p.VAR_KEYWORD for p in signature_parameters(factory)):
        return options
    unused = {k: options.pop(k) for k in list(options) if k not in accepted}
    if unused:
        warnings.warn(f"{method}: Unexpected arguments {unused}", stacklevel=3)
    return options


def _run(func, y0, t, rtol, atol, method, options, event_fn, adjoint, adjoint_options=None, params=None):
    method = _method_name(method)
    options = _filter_options(method, options)
    if "torchdiffeq_interpolant" in _accepted_keywords(get_registry().get("solver", method).obj):
        # torchdiffeq's outputs: its interpolant where a method has a better one of its own (dopri8)
        options.setdefault("torchdiffeq_interpolant", True)
    problem, _ = build_problem(
        func, y0, t, solver=method, rtol=rtol, atol=atol, event_fn=event_fn, params=params, options=options,
        tangent_control=False,  # torchdiffeq's step sizes, for parity (neurode.solve controls the tangent too)
        event_horizon=False,
    )
    # torchdiffeq counts max_num_steps per output interval; so does its drop-in
    problem.config.max_steps_per_output = True
    result, _ = run_problem(problem, adjoint, adjoint_options)
    if result.batch is not None:
        from neurode.framework.batch_loop import raise_for_status

        raise_for_status(result.batch, problem.stats)
    ys = result.ys
    if problem.shapes is not None:
        ys = unflatten_state(ys, problem.shapes, lead=(ys.shape[0],))
    if event_fn is None:
        return ys
    return result.event_t.to(t), ys


def odeint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: str | None = None,
           options: dict | None = None, event_fn: Callable | None = None):
    """Integrate ``dy/dt = func(t, y)`` from ``y(t[0]) = y0``; returns ``y`` at every time of ``t``.

    Gradients flow by backpropagation through the solver (the ``direct``
    gradient method). With ``event_fn``, returns ``(event_t, y)`` where ``y``
    holds the states at ``t[0]`` and at the event (``event_t`` carries no
    gradient; use :func:`odeint_event` for that).
    """
    return _run(func, y0, t, rtol, atol, method, options, event_fn, "direct")


def odeint_adjoint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: str | None = None,
                   options: dict | None = None, event_fn: Callable | None = None, adjoint_rtol=None,
                   adjoint_atol=None, adjoint_method: str | None = None, adjoint_options: dict | None = None,
                   adjoint_params: Sequence[torch.Tensor] | None = None):
    """:func:`odeint` with gradients from the continuous adjoint (Chen et al. 2018, Algorithm 1).

    Memory is independent of the number of steps; the backward pass solves
    the augmented system ``[y, a = dL/dy, dL/dθ, dL/dt]`` in reverse time with
    ``adjoint_method`` at ``adjoint_rtol``/``adjoint_atol`` (defaulting to the
    forward ones). As in torchdiffeq, the backward error norm includes the
    parameter part; ``adjoint_options={"norm": "seminorm"}`` leaves it out
    (Kidger, Chen & Lyons 2021), which usually saves many backward steps and
    is the default of ``neurode.solve(..., adjoint="backsolve")``.
    """
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError(
            "func must be an instance of nn.Module to specify the adjoint parameters; alternatively they can be "
            "specified explicitly via the `adjoint_params` argument. If there are no parameters then it is "
            "allowable to set `adjoint_params=()`."
        )
    if adjoint_method is not None and adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError(
            "If `adjoint_method != method` then we cannot infer `adjoint_options` from `options`. So as `options` "
            "has been passed then `adjoint_options` must be passed as well."
        )
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    # torchdiffeq's default backward norm includes the parameter part (neurode.solve's default is the seminorm)
    adjoint_options = {"norm": "full", **adjoint_options}
    backsolve_options = {
        "rtol": rtol if adjoint_rtol is None else adjoint_rtol,
        "atol": atol if adjoint_atol is None else adjoint_atol,
        "solver": _method_name(method if adjoint_method is None else adjoint_method),
        "options": dict(adjoint_options),
    }
    return _run(func, y0, t, rtol, atol, method, options, event_fn, "backsolve", backsolve_options,
                params=adjoint_params)


def odeint_event(func: Callable, y0, t0: torch.Tensor, *, event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Callable = odeint, t_max: float | None = None, **kwargs):
    """Solve until ``event_fn(t, y) = 0``; the event time is differentiable.

    ``t_max`` (neurode's addition): raise ``EventNotFoundError`` if there is no event by then; without it
    only ``max_num_steps`` bounds the search.

    Returns ``(event_t, y)`` with ``y`` the states at ``t0`` and at the event.
    Gradients of the event time follow from the implicit function theorem
    (Chen, Amos & Nickel 2021, "Learning neural event functions", eq. 6):
    ``dt*/dθ = -(∂g/∂θ) / (dg/dt)`` with ``dg/dt = ∂g/∂t + ∂g/∂y · f``.
    """
    if t_max is not None:
        kwargs["options"] = {**(kwargs.get("options") or {}), "t_max": t_max}
    t0 = t0.reshape(-1)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)

    y_flat, shapes = flatten_state(y0)
    if shapes is None:
        state_t = solution[-1]
        flat_func, flat_event = func, event_fn
    else:
        state_t = torch.cat([s[-1].reshape(-1) for s in solution])

        def flat_func(t_, y_):
            return torch.cat([f.reshape(-1) for f in func(t_, unflatten_state(y_, shapes))])

        def flat_event(t_, y_):
            return event_fn(t_, unflatten_state(y_, shapes))

    with torch.no_grad():
        signs = torch.sign(flat_event(t0[0].to(y_flat.dtype), y_flat))

    def combined_event(t_, y_):
        return torch.min(flat_event(t_, y_) * signs)

    event_t, state_t = _ImplicitEventGradient.apply(flat_func, combined_event, event_t, state_t)
    if shapes is None:
        solution = torch.cat([solution[:-1], state_t[None]], dim=0)
    else:
        parts = unflatten_state(state_t, shapes)
        solution = tuple(torch.cat([s[:-1], p[None]], dim=0) for s, p in zip(solution, parts))
    return event_t, solution


class _ImplicitEventGradient(torch.autograd.Function):
    """Routes gradients of the terminal state through the event time (torchdiffeq's ImplicitFnGradientRerouting)."""

    @staticmethod
    def forward(ctx, func, event_fn, event_t, state_t):
        ctx.func = func
        ctx.event_fn = event_fn
        ctx.save_for_backward(event_t, state_t)
        return event_t.detach(), state_t.detach()

    @staticmethod
    def backward(ctx, grad_t, grad_state):
        event_t, state_t = ctx.saved_tensors
        event_t = event_t.detach().clone().requires_grad_(True)
        state_t = state_t.detach().clone().requires_grad_(True)
        t_in = event_t.to(state_t.dtype)
        f_val = ctx.func(t_in, state_t)
        with torch.enable_grad():
            c, (par_dt, dstate) = vjp(ctx.event_fn, (t_in, state_t))
        # total derivative of the event function along the solution at the event
        dcdt = par_dt + torch.sum(dstate * f_val)
        # moving the end time moves the final state by f
        grad_t = grad_t + torch.sum(grad_state * f_val)
        dstate = dstate * (-grad_t / (dcdt + 1e-12)).reshape_as(c)
        return None, None, None, grad_state + dstate


def odeint_dense(func: Callable, y0: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, *, rtol=1e-7, atol=1e-9,
                 method: str | None = None, options: dict | None = None):
    """Solve from ``t0`` to ``t1`` and return ``dense(t) -> y(t)`` over the whole interval.

    torchdiffeq supports only dopri5 here; neurode supports every method
    (adaptive ones use their dense interpolant, fixed-step ones their ``interp``).
    """
    from neurode.framework.dense import DenseOutput

    method = _method_name(method)
    options = _filter_options(method, options)
    t = torch.stack([torch.as_tensor(t0).reshape(()), torch.as_tensor(t1).reshape(())]).to(torch.float64)
    problem, _ = build_problem(func, y0, t, solver=method, rtol=rtol, atol=atol, options=options, dense=True,
                               tangent_control=False)
    result, _ = run_problem(problem, "direct", None)
    return DenseOutput(problem.solver, result.dense, t, problem.shapes)
