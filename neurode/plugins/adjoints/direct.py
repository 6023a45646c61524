"""Built-in plugin: ``direct``, backpropagation through the solver's operations.

The "RK-Net" of Chen et al. (2018, §3): exact gradients of the discretised
solve, memory growing with the number of steps. Step sizes are chosen from
detached error estimates (as in torchdiffeq), so gradients do not flow
through the step-size controller; when gradients are recorded the steps also
control a tangent's error (``framework/tangent.py``), so that the discrete
derivative is an accurate derivative of the ODE's solution. Gradients with respect to the output
times ``t[1:]`` flow through the dense interpolant, and to ``t[0]`` through
``-f(t0, y0)`` (see ``start_time_coupled``).
"""

import torch

from neurode import hookimpl
from neurode.framework.adjoint import AbstractAdjoint, AdjointResult, Problem, start_time_coupled
from neurode.framework.batch_loop import integrate_batch


class Direct(AbstractAdjoint):
    """Backpropagate through every operation of the solve (exact discrete gradients)."""

    def solve(self, problem: Problem) -> AdjointResult:
        if problem.per_sample:
            batch = integrate_batch(problem.solver, problem.vector_field(), problem.y0, problem.t, problem.config,
                                    stats=problem.stats, tangent=problem.wants_tangent())
            return AdjointResult(batch.ys, batch=batch)
        t_requires_grad = problem.t.requires_grad and torch.is_grad_enabled()
        y0 = problem.y0
        if t_requires_grad:
            problem.y0 = start_time_coupled(problem)
        try:
            result = problem.run_loop(record="dense" if problem.dense else None, t_requires_grad=t_requires_grad,
                                      tangent=problem.wants_tangent())
        finally:
            problem.y0 = y0
        event_t = None
        if result.event_t is not None:
            event_t = torch.tensor(result.event_t, dtype=problem.t.dtype, device=problem.t.device)
        ys = torch.stack([y0, *result.ys[1:]])  # the output at t[0] is y0 itself, whatever t[0]
        return AdjointResult(ys, event_t, dense=result.records if problem.dense else None)


@hookimpl
def register_adjoints(register):
    register("direct", Direct)
