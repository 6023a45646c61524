"""Built-in plugin: ``checkpoint``, exact gradients with memory bounded by the step states.

The forward solve runs without autograd and keeps, per accepted step, only
what is needed to redo it: its start time and size, the state ``y0`` and the
solver's carried tensors (the FSAL derivative, an Adams history). The
backward pass walks the steps in reverse, recomputes each one with autograd
on, and pulls the cotangents of its end state, carried tensors and the
outputs it produced back to its start (reverse-mode differentiation of the
step map; Griewank & Walther 2008, "Evaluating Derivatives", ch. 12,
checkpointing every step). The arithmetic is the forward pass's own, so the
gradients equal ``direct``'s up to round-off, while peak memory holds the
stored step states plus the activations of a single step.

The forward solve is watched (``framework/capture.py``): every tensor that
requires grad and that ``f`` reads — its parameters, what a closure captures,
``args`` — becomes an input of the autograd function, so that any callable
gets exactly ``direct``'s gradients, not only an ``nn.Module``'s parameters.
"""

from __future__ import annotations

import torch

from neurode import hookimpl
from neurode.framework.adjoint import AbstractAdjoint, AdjointResult, Problem, start_time_coupled
from neurode.framework.batch_loop import integrate_batch
from neurode.framework.loop import StepRecord
from neurode.framework.vector_field import slice_args


class Checkpoint(AbstractAdjoint):
    """Exact discrete gradients (as ``direct``) recomputing one step at a time."""

    def solve(self, problem: Problem) -> AdjointResult:
        holder = _Holder(problem)
        func, capture = problem.watched_vector_field()
        tangent = problem.wants_tangent(capture)
        if problem.per_sample:
            with torch.no_grad():
                holder.batch = integrate_batch(problem.solver, func, problem.y0, problem.t, problem.config,
                                               stats=problem.stats, record=True, tangent=tangent)
            ys = _CheckpointBatchFunction.apply(holder, problem.y0, *problem.gradient_inputs(capture))
            return AdjointResult(ys, batch=holder.batch)
        y0 = start_time_coupled(problem)
        with torch.no_grad():
            holder.result = problem.run_loop(func, record="steps", tangent=tangent)
        out = _CheckpointFunction.apply(holder, y0, problem.t, *problem.gradient_inputs(capture))
        ys, event_t = (out[0], out[1]) if problem.event_fn is not None else (out, None)
        # the output at t[0] is y0 itself: its gradient must not reach t[0] through the coupling
        ys = torch.cat([problem.y0[None], ys[1:]])
        return AdjointResult(ys, event_t)


class _Holder:
    """The forward solve, run before the autograd function is applied (its inputs are known only then)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.batch = None
        self.result = None


def _detached(x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(v.detach().requires_grad_(True) for v in x)


class _CheckpointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, holder: _Holder, y0, t, *params):
        problem = holder.problem
        result, holder.result = holder.result, None  # the autograd context owns the records now
        ys = torch.stack(result.ys)
        ctx.holder = holder
        ctx.records = result.records
        ctx.t_requires_grad = t.requires_grad
        ctx.event = problem.event_fn is not None
        ctx.save_for_backward(t.detach(), *params)
        if ctx.event:
            return ys, torch.tensor(result.event_t, dtype=t.dtype, device=t.device)
        return ys

    @staticmethod
    def backward(ctx, *grads):
        holder = ctx.holder
        problem = holder.problem
        solver = problem.solver
        t, *params = ctx.saved_tensors
        params = tuple(params)
        records: list[StepRecord] = ctx.records
        grad_ys = grads[0]
        func = problem.vector_field()
        t_requires_grad = ctx.t_requires_grad and not ctx.event
        time_vjps = torch.zeros_like(t) if t_requires_grad else None
        param_grads = [torch.zeros_like(p) for p in params]

        a_y = None  # cotangent of the state at the end of the current step
        a_state: tuple | None = None
        for record in reversed(records):
            with torch.enable_grad():
                y0 = record.y0.detach().requires_grad_(True)
                state0 = _detached(record.state0)
                step = solver.step(func, record.t0, record.h, y0, state0)
                state1 = step.state1
                if record.jump:
                    state1 = solver.after_jump(func, record.t0 + record.h, step.y1, state1)
                targets, cotangents = [], []
                if a_y is not None:
                    targets.append(step.y1)
                    cotangents.append(a_y)
                    for s, a in zip(state1, a_state):
                        if a is not None:
                            targets.append(s)
                            cotangents.append(a)
                thetas = []
                for index, theta in record.outputs:
                    if t_requires_grad:
                        theta_t = torch.tensor(theta, dtype=torch.float64, device=y0.device, requires_grad=True)
                        thetas.append((index, theta_t))
                        targets.append(solver.interpolate(step, theta_t))
                    else:
                        targets.append(solver.interpolate(step, theta))
                    cotangents.append(grad_ys[index])
                if not targets:
                    continue
                inputs = (y0, *state0, *params, *(th for _, th in thetas))
                grads_in = torch.autograd.grad(targets, inputs, cotangents, allow_unused=True)
            a_y = grads_in[0] if grads_in[0] is not None else torch.zeros_like(y0)
            n_state = len(state0)
            a_state = tuple(grads_in[1 : 1 + n_state])
            for k, g in enumerate(grads_in[1 + n_state : 1 + n_state + len(params)]):
                if g is not None:
                    param_grads[k] = param_grads[k] + g
            for (index, _), g in zip(thetas, grads_in[1 + n_state + len(params):]):
                if g is not None:
                    # theta = (t_i - t0) / h, so dL/dt_i = dL/dtheta / h
                    time_vjps[index] = time_vjps[index] + (g / record.h).to(t.dtype)

        # the initial carried state (e.g. f(t0, y0) for FSAL methods) depends on y0 and θ too
        a_y0 = grad_ys[0].clone()
        if records:
            a_y0 = a_y0 + a_y
            a_y0 = _pull_back_initial_state(solver, func, records[0].t0, problem.y0, a_state, a_y0, params,
                                            param_grads)
        problem.stats.nfe_backward += func.nfe
        problem.stats.n_jac_backward += func.n_jac
        problem.stats.n_lu_backward += func.n_lu
        problem.stats.n_steps_backward += len(records)
        return (None, a_y0, time_vjps, *param_grads)


def _pull_back_initial_state(solver, func, t0, y0, a_state, a_y0, params, param_grads):
    """Add the cotangent of the solver's initial carried state (e.g. the FSAL ``f(t0, y0)``) to ``y0``'s
    and the parameters' (``param_grads`` in place); returns the new ``y0`` cotangent."""
    if not a_state or not any(a is not None for a in a_state):
        return a_y0
    with torch.enable_grad():
        y0_in = y0.detach().requires_grad_(True)
        state0 = solver.init(func, t0, y0_in)
        pairs = [(s, a) for s, a in zip(state0, a_state) if a is not None]
        grads_in = torch.autograd.grad([s for s, _ in pairs], (y0_in, *params), [a for _, a in pairs],
                                       allow_unused=True)
    for k, g in enumerate(grads_in[1:]):
        if g is not None:
            param_grads[k] = param_grads[k] + g
    return a_y0 if grads_in[0] is None else a_y0 + grads_in[0]


def _scatter_rows(values: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor | None:
    """Undo a compaction: rows of the kept samples back into the previous active set (zeros elsewhere)."""
    if values is None:
        return None
    out = values.new_zeros((keep.shape[0], *values.shape[1:]))
    out[keep] = values
    return out


class _CheckpointBatchFunction(torch.autograd.Function):
    """Checkpointed gradients for the batch-parallel loop: replay each iteration on its active set."""

    @staticmethod
    def forward(ctx, holder: _Holder, y0, *params):
        batch = holder.batch
        ctx.holder = holder
        ctx.records = batch.records
        batch.records = None  # the autograd context owns them now
        ctx.save_for_backward(*params)
        return batch.ys

    @staticmethod
    def backward(ctx, grad_ys):
        problem = ctx.holder.problem
        solver = problem.solver
        params = tuple(ctx.saved_tensors)
        n_times, batch = grad_ys.shape[:2]
        grad_flat = grad_ys.transpose(0, 1).reshape(batch * n_times, *grad_ys.shape[2:])
        func = problem.vector_field()
        full_args = func.args
        param_grads = [torch.zeros_like(p) for p in params]
        a_y = None
        a_state: tuple = ()
        n_steps = 0
        for rec in reversed(ctx.records):
            with torch.enable_grad():
                func.args = slice_args(full_args, rec.act)  # with its graph: tensors of args get gradients
                y = rec.y.detach().requires_grad_(True)
                state = _detached(rec.state)
                step = solver.step(func, rec.t0, rec.h, y, state)
                n_steps += 1
                acc_col = rec.accept.view(-1, *([1] * (y.ndim - 1)))
                targets, cotangents = [], []
                if a_y is not None:
                    targets.append(torch.where(acc_col, step.y1, y))
                    cotangents.append(a_y)
                    for s0, s1, a in zip(state, step.state1, a_state):
                        if a is not None:
                            targets.append(torch.where(acc_col, s1, s0))
                            cotangents.append(a)
                for rows, theta, index in rec.emits:
                    targets.append(solver.interpolate_per_sample(step, rows, theta))
                    cotangents.append(grad_flat[index])
                if targets:
                    grads_in = torch.autograd.grad(targets, (y, *state, *params), cotangents, allow_unused=True)
                else:
                    grads_in = (None,) * (1 + len(state) + len(params))
            a_y = grads_in[0] if grads_in[0] is not None else torch.zeros_like(y)
            a_state = tuple(grads_in[1 : 1 + len(state)])
            for k, g in enumerate(grads_in[1 + len(state):]):
                if g is not None:
                    param_grads[k] = param_grads[k] + g
            if rec.keep is not None:
                a_y = _scatter_rows(a_y, rec.keep)
                a_state = tuple(_scatter_rows(a, rec.keep) for a in a_state)

        func.args = full_args
        y0 = problem.y0
        a_y0 = grad_flat[torch.arange(batch, device=grad_flat.device) * n_times].clone()  # output 0 is y0
        if a_y is not None:
            a_y0 = a_y0 + a_y
            t0 = problem.t[:, 0].detach().to(torch.float64)
            a_y0 = _pull_back_initial_state(solver, func, t0, y0, a_state, a_y0, params, param_grads)
        problem.stats.nfe_backward += func.nfe
        problem.stats.n_jac_backward += func.n_jac
        problem.stats.n_lu_backward += func.n_lu
        problem.stats.n_steps_backward += n_steps
        return (None, a_y0, *param_grads)


@hookimpl
def register_adjoints(register):
    register("checkpoint", Checkpoint)
