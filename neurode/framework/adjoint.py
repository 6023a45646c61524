"""The gradient-method contract ("adjoint"): how gradients flow through a solve.

A gradient method receives a fully normalised :class:`Problem` — flat state,
chosen solver, loop configuration — and returns the states at the output
times as a tensor that autograd can differentiate. It decides what is kept
for the backward pass: everything (``direct``), the step states
(``checkpoint``) or only the outputs (``backsolve``). It never changes how
the forward solution is computed, so every method returns the same forward
values — with one deliberate exception: a method that differentiates the
accepted steps themselves (``direct``, ``checkpoint``) asks the loop for
tangent error control when gradients are recorded (``Problem.wants_tangent``,
``tangent.py``), whose steps also resolve the derivative. With
``tangent_control`` set explicitly, every method takes the same steps.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from neurode.framework.capture import TensorCapture, tensors_requiring_grad, uncompiled, unique_tensors
from neurode.framework.loop import LoopConfig, LoopResult, integrate
from neurode.framework.solution import SolveStats
from neurode.framework.solver import AbstractSolver
from neurode.framework.vector_field import VectorField


@dataclass
class Problem:
    """One solve, normalised: what a gradient method works on.

    Attributes:
        func: the user's vector field ``f(t, y)`` (an ``nn.Module`` or callable).
        y0: the initial state as one tensor (a tuple state is flattened).
        t: 1-D tensor of output times, strictly monotone.
        solver: the solver instance.
        config: the loop configuration (tolerances, controller, limits).
        shapes: shapes of a tuple state, or ``None``.
        event_fn: terminal event function ``g(t, y)``, or ``None``.
        params: tensors to differentiate with respect to that are not inputs
            (``adjoint_params``; by default the parameters of ``func``).
        stats: filled in by the forward and backward passes.
        dense: keep the accepted steps for dense output.
        options: the solver and loop options as the user gave them (without
            ``norm``), for gradient methods that solve again (backsolve).
        params_explicit: ``params`` were given by the user (``adjoint_params``)
            rather than found; gradient methods then differentiate exactly those
            (and the tensors of ``args``).
        tangent_control: step sizes also control the error of a tangent of the
            solution (``tangent.py``): ``True``, ``False``, or ``None`` for
            "when gradients are recorded" (:meth:`wants_tangent`).
    """

    func: Callable
    y0: torch.Tensor
    t: torch.Tensor
    solver: AbstractSolver
    config: LoopConfig
    shapes: Sequence[torch.Size] | None = None
    event_fn: Callable | None = None
    params: tuple[torch.Tensor, ...] = ()
    stats: SolveStats = field(default_factory=SolveStats)
    dense: bool = False
    options: dict = field(default_factory=dict)  # the solver/loop options as given (without norm)
    solver_name: str | None = None
    per_sample: bool = False  # t is (batch, T): the batch-parallel loop, one problem per sample
    args: Any = None  # extra argument of func(t, y, args), or None for func(t, y)
    params_explicit: bool = False
    tangent_control: bool | None = None

    def vector_field(self, capture: TensorCapture | None = None) -> VectorField:
        return VectorField(self.func, self.y0, self.shapes, self.args, capture=capture)

    def wants_tangent(self, capture: TensorCapture | None = None) -> bool | str:
        """Whether adaptive steps should also control a tangent's error (``tangent.py``).

        ``tangent_control`` if the user set it; otherwise ``True`` when
        gradients are recorded — grad mode on and ``y0``, ``t``, a parameter, a
        tensor of ``args`` or a tensor ``capture`` already saw ``f`` read
        requires grad — ``False`` under ``no_grad``, and ``"auto"`` when that
        shows only once ``f`` runs (a closure, a module without parameters):
        the loop then decides after the first evaluation (``TangentStepper``).
        """
        if self.tangent_control is not None:
            return bool(self.tangent_control)
        if not torch.is_grad_enabled():
            return False
        if (self.y0.requires_grad or self.t.requires_grad or self.params or tensors_requiring_grad(self.args)
                or (capture is not None and capture.tensors)):
            return True
        return False if self.params_explicit else "auto"

    def _probe(self) -> TensorCapture:
        """What ``f`` (uncompiled) reads in one evaluation at the start, counted in ``stats.nfe``."""
        capture = TensorCapture()
        original = uncompiled(self.func)
        func = VectorField(self.func if original is None else original, self.y0, self.shapes, self.args,
                           capture=capture)
        t0 = self.t[..., 0].detach().to(torch.float64)
        with torch.no_grad():
            func(t0 if self.per_sample else float(t0), self.y0.detach())
        self.stats.nfe += func.nfe
        return capture

    def watched_vector_field(self) -> tuple[VectorField, TensorCapture | None]:
        """The vector field for the forward solve of a gradient method that must declare its inputs, and the
        :class:`TensorCapture` that holds what ``f`` read once that solve has run.

        No capture when the inputs were given (``adjoint_params``) or no gradient is recorded; a compiled ``f``
        is not watched but probed once (``capture.uncompiled``).
        """
        if self.params_explicit or not torch.is_grad_enabled():
            return self.vector_field(), None
        if uncompiled(self.func) is not None:
            return self.vector_field(), self._probe()
        capture = TensorCapture()
        return self.vector_field(capture), capture

    def gradient_inputs(self, capture: TensorCapture | None) -> tuple[torch.Tensor, ...]:
        """The tensors besides ``y0`` (and ``t``) to differentiate: ``params``, the tensors of ``args``
        that require grad, and what ``capture`` saw ``f`` read."""
        return unique_tensors(self.params, tensors_requiring_grad(self.args), capture.tensors if capture else ())

    def run_loop(
        self, func: VectorField | None = None, *, record: str | None = None, t_requires_grad=False,
        tangent: bool | str = False,
    ) -> LoopResult:
        return integrate(
            self.solver,
            func if func is not None else self.vector_field(),
            self.y0,
            self.t,
            self.config,
            event_fn=self.event_fn,
            record=record,
            stats=self.stats,
            t_requires_grad=t_requires_grad,
            tangent=tangent,
        )


@dataclass
class AdjointResult:
    """States at the output times (``(len(t), *y0.shape)``), and the event time if any."""

    ys: torch.Tensor
    event_t: torch.Tensor | None = None
    dense: Any = None
    batch: Any = None  # the BatchResult of a batch-parallel solve


class AbstractAdjoint(abc.ABC):
    """A gradient method. Subclasses implement :meth:`solve`."""

    @abc.abstractmethod
    def solve(self, problem: Problem) -> AdjointResult:
        """Solve ``problem`` forward; make the result differentiable as this method does."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def start_time_coupled(problem: Problem) -> torch.Tensor:
    """``y0`` carrying the sensitivity to the start time ``t[0]``.

    Moving the start time with ``y0`` fixed moves every later state like
    moving ``y0`` by ``-f(t0, y0) dt0``: ``∂y(t)/∂t0 = -Φ(t, t0) f(t0, y0)``
    (Hairer, Nørsett & Wanner I, §I.14, Thm. 14.8). Returned value equals
    ``y0``; its gradient w.r.t. ``t[0]`` is ``-f(t0, y0)``. Costs one
    evaluation of ``f``, and only when ``t`` requires grad.
    """
    t = problem.t
    if not (t.requires_grad and torch.is_grad_enabled()):
        return problem.y0
    with torch.no_grad():
        f0 = problem.vector_field()(t[0].detach(), problem.y0)
    shift = (t[0] - t[0].detach()).to(problem.y0.dtype)
    return problem.y0 - f0 * shift


def default_params(func: Callable) -> tuple[torch.Tensor, ...]:
    """The tensors to differentiate: the parameters of ``func`` that require grad."""
    if isinstance(func, torch.nn.Module):
        return tuple(p for p in func.parameters() if p.requires_grad)
    return ()
