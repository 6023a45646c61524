"""Built-in plugin: ``direct``, backpropagation through the solver's operations.

The "RK-Net" of Chen et al. (2018, §3): exact gradients of the discretised
solve, memory growing with the number of steps. Step sizes are chosen from
detached error estimates (as in torchdiffeq), so gradients do not flow
through the step-size controller. Gradients with respect to the output
times ``t[1:]`` flow through the dense interpolant.
"""

import torch

from neurode import hookimpl
from neurode.framework.adjoint import AbstractAdjoint, AdjointResult, Problem


class Direct(AbstractAdjoint):
    """Backpropagate through every operation of the solve (exact discrete gradients)."""

    def solve(self, problem: Problem) -> AdjointResult:
        t_requires_grad = problem.t.requires_grad and torch.is_grad_enabled()
        result = problem.run_loop(record="dense" if problem.dense else None, t_requires_grad=t_requires_grad)
        event_t = None
        if result.event_t is not None:
            event_t = torch.tensor(result.event_t, dtype=problem.t.dtype, device=problem.t.device)
        return AdjointResult(torch.stack(result.ys), event_t, dense=result.records if problem.dense else None)


@hookimpl
def register_adjoints(register):
    register("direct", Direct)
