"""The continuous adjoint along the stored forward solution: ``backsolve``'s backward pass for implicit methods.

Backsolve (Chen et al. 2018, Algorithm 1) integrates the state ``y`` back in
time beside the adjoint ``a``. For a stiff problem that reconstruction is
wrong: backwards in time the decaying modes grow (``e^{-λ t}`` with
``λ ≫ 1``), the backward solve follows them off the trajectory and the
gradient is taken along a wrong path. Measured before this module on
``y' = [[-1, 0], [1, -1000]] y`` with kvaerno5: 16,031 backward steps against
60 forward, and a gradient off by 500×.

The adjoint equation itself is stable backwards wherever the forward problem
is stable forwards, so the remedy is never to integrate ``y`` backwards.
This is the checkpointed adjoint of CVODES (Serban & Hindmarsh 2005, "CVODES:
the sensitivity-enabled ODE solver in SUNDIALS", §4; SciMLSensitivity's
``InterpolatingAdjoint(checkpointing=true)``): for each interval between two
output times, from the last back to the first,

1. the forward solve is redone from the stored output ``y(t_{i-1})`` to
   ``t_i``, keeping its accepted steps (the outputs are the checkpoints);
2. ``a' = -J(t, y(t))ᵀ a`` is integrated from ``t_i`` back to ``t_{i-1}``
   by the same implicit method with the exact Jacobian ``-Jᵀ`` (the adjoint
   of a stiff problem is stiff too), ``y(t)`` read from the kept steps'
   dense output;
3. the parameter (and time) gradients ``∫ -aᵀ ∂f/∂θ dt`` are quadratures
   over the backward steps: three-point Gauss–Legendre on each step (exact
   for quintics), ``a`` from the backward step's dense output.

Memory holds the accepted steps of one output interval, not the whole solve;
the work is one more forward solve. The gradient is that of the exact ODE to
the tolerances, as for any continuous adjoint. Because ``a`` is the only
integrated state, its Jacobian is exact and small (``n × n``), so Rosenbrock
methods, which need the exact Jacobian, step the adjoint too.
"""

from __future__ import annotations

import bisect
import math

import torch

from neurode.framework.jacobian import dense_jacobian, user_jacobian
from neurode.framework.loop import integrate
from neurode.framework.solution import SolveStats
from neurode.framework.solve import build_problem
from neurode.framework.vector_field import VectorField

#: three-point Gauss–Legendre rule on [0, 1] (Abramowitz & Stegun 25.4.29): nodes and weights
_GAUSS_NODES = (0.5 - math.sqrt(15.0) / 10.0, 0.5, 0.5 + math.sqrt(15.0) / 10.0)
_GAUSS_WEIGHTS = (5.0 / 18.0, 8.0 / 18.0, 5.0 / 18.0)


class DenseTrajectory:
    """``y(t)`` from the accepted steps of a forward solve over one interval (their dense output)."""

    def __init__(self, solver, steps: list) -> None:
        if not steps:
            raise ValueError("a dense trajectory needs at least one step")
        self.solver = solver
        self.steps = steps
        self.direction = 1.0 if steps[0].h > 0 else -1.0
        self.starts = [self.direction * step.t0 for step in steps]

    def __call__(self, t: float) -> torch.Tensor:
        index = max(bisect.bisect_right(self.starts, self.direction * t) - 1, 0)
        step = self.steps[index]
        theta = min(max((t - step.t0) / step.h, 0.0), 1.0)
        return self.solver.interpolate(step, theta)


def interpolated_adjoint(*, inner: VectorField, solver, config, backward_solver, options: dict, rtol, atol,
                         controller, t: torch.Tensor, ys: torch.Tensor, grad_ys: torch.Tensor, params: tuple,
                         t_requires_grad: bool, state_jac, stats: SolveStats):
    """The adjoint pass described in the module docstring.

    Args:
        inner: ``f`` over the flattened state (counts every evaluation).
        solver, config: the forward solve's method and loop configuration (the forward re-solves use them).
        backward_solver, options, rtol, atol, controller: how the adjoint is integrated back.
        t, ys, grad_ys: output times, the forward outputs ``[T, n]`` and their cotangents.
        params: tensors to differentiate ``f`` with respect to.
        state_jac: the user's ``jac(t, y)`` of ``f``, or ``None`` for autograd.
        stats: the forward solve's statistics (``*_backward`` counters are added to).

    Returns:
        ``(a(t_0), time_vjps or None, [g_θ])``.
    """
    dtype = ys.dtype
    state = {"y": None}  # the dense forward trajectory of the interval being integrated back

    def y_at(t_: torch.Tensor | float) -> torch.Tensor:
        # a float from the loop (the field below is built with float_time); a tensor only from a solver's jac call
        return state["y"](float(t_.detach()) if isinstance(t_, torch.Tensor) else t_)

    def adjoint_field(t_, a):
        with torch.enable_grad():
            y_in = y_at(t_).detach().requires_grad_(True)
            f = inner(t_, y_in)
            (vjp,) = torch.autograd.grad(f, y_in, -a, allow_unused=True) if f.requires_grad else (None,)
        return torch.zeros_like(a) if vjp is None else vjp

    def adjoint_jacobian(t_, a):
        y = y_at(t_)
        jac = (user_jacobian(state_jac, t_, y, per_sample=False) if state_jac is not None
               else dense_jacobian(lambda z: inner(t_, z), y))
        return (-jac.mT).contiguous()

    backward_options = dict(options)
    if options.get("linear_solver") == "krylov" or options.get("lband") is not None or options.get("uband") is not None:
        # Jacobian-free: GMRES takes products of the adjoint field, linear in a (forward differences of it are
        # -Jᵀ v to round-off); a band (a preconditioner's, or a Rosenbrock method's banded Jacobian, formed by
        # grouped differences of that linear field) has its bandwidths swapped under the transpose
        backward_options["lband"], backward_options["uband"] = options.get("uband"), options.get("lband")
        backward_options = {k: v for k, v in backward_options.items() if v is not None}
    else:
        backward_options["jac"] = adjoint_jacobian
    a = grad_ys[-1].clone()
    backward_problem, _ = build_problem(
        adjoint_field, a, t[-2:].flip(0) if len(t) >= 2 else t, solver=backward_solver, rtol=rtol, atol=atol,
        controller=controller, params=(), options=backward_options)
    # the loop's float times go to adjoint_field as they are: y_at reads no tensor back at every evaluation
    vf = VectorField(adjoint_field, backward_problem.y0, backward_problem.shapes, float_time=True)
    backward = backward_problem.solver

    param_grads = [torch.zeros_like(p, dtype=dtype) for p in params]
    time_vjps = torch.zeros(len(t), dtype=t.dtype, device=t.device) if t_requires_grad else None
    g_t = torch.zeros((), dtype=dtype, device=ys.device)
    resolve_stats = SolveStats()
    with torch.no_grad():
        for i in range(len(t) - 1, 0, -1):
            if t_requires_grad:
                # moving an output time moves that output along f (dL/dt_i = <dL/dy_i, f(t_i, y_i)>)
                d_t = torch.sum(inner(t[i], ys[i]) * grad_ys[i])
                g_t = g_t - d_t
                time_vjps[i] = d_t
            forward = integrate(solver, inner, ys[i - 1], t[i - 1 : i + 1], config, record="dense",
                                stats=resolve_stats)
            state["y"] = DenseTrajectory(solver, forward.records)
            span = torch.stack([t[i], t[i - 1]])
            result = integrate(backward, vf, a, span, backward_problem.config, record="dense",
                               stats=backward_problem.stats)
            # carry the step size into the next interval instead of re-running the starting-step heuristic
            h_next = abs(backward_problem.stats.h_next)
            if options.get("first_step") is None and h_next > 0 and h_next == h_next:
                backward_problem.config.first_step = h_next
            g_t = g_t + _quadrature(inner, backward, result.records, y_at, forward.records, span, params,
                                    param_grads, t_requires_grad, dtype)
            a = result.ys[-1] + grad_ys[i - 1]
            state["y"] = None
    if t_requires_grad:
        time_vjps[0] = g_t
    stats.n_steps_backward += backward_problem.stats.n_steps + resolve_stats.n_steps
    stats.n_jac_backward += backward_problem.stats.n_jac + resolve_stats.n_jac
    stats.n_lu_backward += backward_problem.stats.n_lu + resolve_stats.n_lu
    return a, time_vjps, param_grads


def _quadrature(inner, backward, steps, y_at, forward_steps, span, params, param_grads, t_requires_grad,
                dtype) -> torch.Tensor:
    """Add ``∫ -aᵀ ∂f/∂θ dt`` over ``span`` (from ``t_i`` back to ``t_{i-1}``) to ``param_grads``; return the
    same integral of ``-aᵀ ∂f/∂t`` (zero unless ``t_requires_grad``).

    The integrand is smooth between the step points of *both* solves (``a`` from the backward steps' dense
    output, ``y`` from the forward ones'), so the rule is applied on their merged partition: a transient of ``y``
    that the backward solve steps over in one step (``a`` is smooth there) is still resolved.
    """
    total_t = torch.zeros((), dtype=dtype)
    if not params and not t_requires_grad:
        return total_t
    t_start, t_end = float(span[0]), float(span[1])
    low, high = min(t_start, t_end), max(t_start, t_end)
    points = {t_start, t_end}
    for step in (*steps, *forward_steps):
        for point in (step.t0, step.t0 + step.h):
            if low < point < high:
                points.add(point)
    # in the backward direction: signed lengths, as the adjoint's quadratures run from t_i back to t_{i-1}
    partition = sorted(points, reverse=t_end < t_start)
    a_at = DenseTrajectory(backward, steps)
    for b0, b1 in zip(partition, partition[1:]):
        length = b1 - b0
        outs, cotangents, times = [], [], []
        with torch.enable_grad():
            for node, weight in zip(_GAUSS_NODES, _GAUSS_WEIGHTS):
                tau = b0 + node * length
                t_in = torch.tensor(tau, dtype=span.dtype, device=span.device).requires_grad_(t_requires_grad)
                outs.append(inner(t_in, y_at(tau).detach()))
                cotangents.append(-a_at(tau) * (weight * length))
                times.append(t_in)
            inputs = (*params, *times) if t_requires_grad else params
            grads = torch.autograd.grad(outs, inputs, cotangents, allow_unused=True)
        for k, g in enumerate(grads[: len(params)]):
            if g is not None:
                param_grads[k] = param_grads[k] + g
        if t_requires_grad:
            total_t = total_t + sum(g.to(dtype) for g in grads[len(params):] if g is not None)
    return total_t
