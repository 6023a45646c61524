"""Dense output: the solution as a function of time, from the accepted steps' interpolants."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from neurode.framework.errors import InvalidInputError
from neurode.framework.solver import AbstractSolver, Step
from neurode.framework.vector_field import unflatten_state


class DenseOutput:
    """``y(t)`` anywhere in the solved interval, by the method's own interpolant.

    Call with a float, a 0-d or a 1-D tensor of times; returns the state (with a
    leading time dimension for 1-D input).
    """

    def __init__(self, solver: AbstractSolver, steps: Sequence[Step], t: torch.Tensor, shapes=None) -> None:
        if not steps:
            raise InvalidInputError("dense output needs at least one accepted step (t[0] == t[-1]?)")
        self.solver = solver
        self.steps = list(steps)
        self.shapes = shapes
        self.direction = 1.0 if steps[0].h > 0 else -1.0
        self._starts = [self.direction * s.t0 for s in self.steps]
        self.t0 = steps[0].t0
        self.t1 = steps[-1].t0 + steps[-1].h

    def _one(self, t: float) -> torch.Tensor:
        tau = self.direction * t
        lo, hi = sorted((self.t0, self.t1))
        if not lo - 1e-12 * max(1.0, abs(lo)) <= t <= hi + 1e-12 * max(1.0, abs(hi)):
            raise InvalidInputError(f"dense output asked at t={t}, outside the solved interval [{lo}, {hi}]")
        i = max(0, bisect.bisect_right(self._starts, tau) - 1)
        step = self.steps[i]
        theta = min(max((t - step.t0) / step.h, 0.0), 1.0)
        return self.solver.interpolate(step, theta)

    def __call__(self, t) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            ys = torch.stack([self._one(float(v)) for v in t.detach().cpu().tolist()])
            lead = (ys.shape[0],)
        else:
            ys = self._one(float(t))
            lead = ()
        if self.shapes is not None:
            return unflatten_state(ys, self.shapes, lead=lead)
        return ys
