"""Tangent error control: step sizes that resolve the derivative of the solve, not only its value.

Backpropagating through an adaptive solve (``direct``, ``checkpoint``) gives
the exact derivative of the computation *with the accepted step sizes held
fixed*. That derivative approximates the derivative of the ODE's solution
only if those steps also resolve the variational equation
``dv/dt = ∂f/∂y(t, y) v`` — which the controller never looks at: it sees the
error of ``y`` alone. Where ``y`` is locally trivial the two part ways. A
state component that starts at exactly zero in a linear oscillator stays
zero, every error estimate is zero, the step grows by ``ifactor`` at every
step (1e-6, 1e-5, ..., 100), the values stay exact, and the derivative —
the stability function of the method evaluated far outside its stability
region — comes out as 1e24 instead of 1e-3 (issue 10). torchdiffeq and
diffrax behave the same way.

The remedy is the one DifferentialEquations.jl applies when it is
differentiated in forward mode: put the sensitivities into the error norm
(its default ``ODE_DEFAULT_NORM`` includes the partials of dual numbers;
Rackauckas et al. 2018, "A comparison of automatic differentiation and
continuous sensitivity analysis for derivatives of differential equation
solutions", §2). Here one tangent ``v`` is carried beside the state: after
each step of ``y``, the solver takes the same step (same ``t0``, ``h``,
tableau) on the variational equation, whose vector field at stage ``i`` is
the Jacobian-vector product ``∂f/∂y(t_i, Y_i) V_i`` at the stage point
``Y_i`` the step of ``y`` just used. That is exactly what forward-mode
differentiation of the step would give, and the solver's own embedded error
estimate measures the tangent's local error; a step is accepted only if both
errors pass. The direction is a fixed pseudo-random vector (the same for
every sample of a batch, so that a sample takes the same steps in any batch),
renormalised to unit RMS after every accepted step: what is controlled is
the relative accuracy of the linearised flow, which neither grows nor decays
out of reach of ``rtol``.

The products are forward differences, ``(f(Y + εV) - f(Y)) / ε`` with
``ε = sqrt(machine eps) (1 + rms Y) / rms V``, evaluated without gradients:
one plain evaluation of ``f`` each, for any callable (compiled ones
included). PyTorch's forward-mode AD would be exact, but on CPU its rule for
``linear`` runs a Python decomposition: 5x the cost of a solve against 2x
(measured on a 2-64-2 MLP). The difference is good to about ``sqrt(eps)``
relative, so the tangent is held to ``max(rtol, 10 sqrt(eps))`` (3.5e-3 in
float32, 1.5e-7 in float64): enough to stop the runaway steps above, never
asking the difference for digits it does not have.

Costs: one more evaluation of ``f`` per stage (counted in ``nfe``, without
autograd), the tangent step's arithmetic (without autograd), and the steps
that resolve both the solution and its derivative: about twice the forward
solve; the backward pass is unchanged. The two evaluations of a stage are
not stacked into one call on the rows ``[Y; Y + εV]``: under ``direct``
backpropagation that call's backward runs over both halves (its weight
gradients' products and activations see 2N rows), which costs more than the
dispatch the forward saves except on small batches (one stage of a
4-20-20-4 ELU field: -16 us at 16 rows, +130 us at 1000;
``benchmarks/bench_training.py --tangent-stacking``). Only solves whose gradients are
recorded pay it; ``tangent_control=False`` turns it off — as it must be for a
vector field that draws random numbers (dropout in training mode), whose
differences say nothing.
"""

from __future__ import annotations

import math

import torch

from neurode.framework.controller import norm_value
from neurode.framework.errors import SolverError
from neurode.framework.solver import AbstractSolver, Step

#: seed of the tangent direction: fixed, so that a solve is reproducible
_SEED = 1806_07366  # Chen et al.'s arXiv number


def _rows(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-sample vector shaped to broadcast over a ``(batch, ...)`` tensor of ``ndim`` dimensions."""
    return x.view(-1, *([1] * (ndim - 1)))


def _rms(x: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """RMS of ``x`` (a 0-d tensor), or of each sample (shaped to broadcast over ``x``) in the batch loop.

    A fresh tensor, which callers may change in place.
    """
    # a norm over sqrt(n): two operations where abs, square, mean and sqrt took four (this runs twice per stage);
    # keepdim instead of a view, and the sample size from the shape (x[0].numel() is one more operation)
    if not per_sample:
        return torch.linalg.vector_norm(x).div_(math.sqrt(max(x.numel(), 1)))
    if x.ndim == 1:  # one number per sample
        return x.abs()
    size = math.prod(x.shape[1:])
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True).div_(math.sqrt(max(size, 1)))


class _Recording:
    """``f`` for the step of ``y``: evaluates it and remembers every stage point ``(t, Y, extra, f(t, Y))``."""

    def __init__(self, func) -> None:
        self.func = func
        self.points: list[tuple] = []

    def __getattr__(self, name):  # time, time_dtype, direction, ... of the loop's VectorField
        return getattr(self.func, name)

    def __call__(self, t, y, *rest):
        out = self.func(t, y, *rest)
        self.points.append((t, y, rest, out))
        return out


class _Variational:
    """The variational equation's field for the tangent step: at its ``i``-th evaluation, ``∂f/∂y V`` at the
    ``i``-th stage point of the step of ``y`` (the solver evaluates the stages in the same order both times),
    as a forward difference."""

    def __init__(self, func, points: list[tuple], per_sample: bool) -> None:
        self.func = func
        self.points = points
        self.per_sample = per_sample
        self.index = 0

    def __getattr__(self, name):
        return getattr(self.func, name)

    def __call__(self, t, v, *rest):
        if self.index >= len(self.points):
            raise SolverError(
                f"tangent error control replays the solver's stage evaluations, but this solver evaluated f more "
                f"often on the tangent ({self.index + 1}) than on the state ({len(self.points)}); its step is not "
                f"linear in the state with f's evaluations fixed: declare supports_tangent = False on the solver, "
                f"or pass tangent_control=False")
        t_i, y_i, rest_i, f_i = self.points[self.index]
        self.index += 1
        # forward difference, eps = sqrt(machine eps) (1 + rms Y) / rms V (per sample in the batch loop), in place
        # on fresh tensors: this runs once per stage, and on small states every operation is microseconds of
        # dispatch (12 here where there were 19, the same roundings: not addcmul, whose fused multiply-add rounds
        # once where y + eps v rounds twice). Called under no_grad: nothing to detach.
        real = y_i.real.dtype if y_i.is_complex() else y_i.dtype
        eps = _rms(y_i, self.per_sample).add_(1.0).mul_(math.sqrt(torch.finfo(real).eps)).div_(
            _rms(v, self.per_sample).clamp_min_(torch.finfo(real).tiny))
        if eps.dtype != y_i.dtype:
            eps = eps.to(y_i.dtype)
        return torch.sub(self.func(t_i, torch.mul(v, eps).add_(y_i), *rest_i), f_i).div_(eps)


class TangentStepper:
    """Steps a solver, and after each step the same step of a tangent (see the module docstring).

    The loops call :meth:`init`, :meth:`step`, :meth:`accept`,
    :meth:`after_jump` and :meth:`compact` in place of the solver's own calls;
    what they get back is exactly what the solver returned. ``per_sample``: the
    leading dimension of the state is a batch of independent problems (the
    batch-parallel loop); the tangent is then renormalised per sample and
    compacted with the active set. ``auto``: keep the tangent only if the first
    evaluation of ``f`` shows that gradients are recorded.
    """

    def __init__(self, solver: AbstractSolver, y0: torch.Tensor, *, per_sample: bool, auto: bool = False) -> None:
        self.solver = solver
        self.per_sample = per_sample
        self.auto = auto
        self.enabled = True
        shape = y0.shape[1:] if per_sample else y0.shape
        seed = torch.randn(shape, generator=torch.Generator().manual_seed(_SEED), dtype=torch.float64)
        if seed.numel():
            seed = seed / seed.square().mean().sqrt()
        seed = seed.to(device=y0.device, dtype=y0.dtype)
        self.v = seed.expand_as(y0).clone() if per_sample else seed
        self.state_tangents: tuple[torch.Tensor, ...] = ()
        real = y0.real.dtype if y0.is_complex() else y0.dtype
        self.rtol_floor = 10 * math.sqrt(torch.finfo(real).eps)  # what a forward difference can resolve
        self._pending: tuple | None = None

    @property
    def evaluations_per_stage(self) -> int:
        """Evaluations of ``f`` per stage: the stage's own and, while the tangent is on, its difference."""
        return 2 if self.enabled else 1

    # ------------------------------------------------------------------ the solver's calls, and the tangent's

    def init(self, func, t0, y0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._carry(lambda f, y, state: self.solver.init(f, t0, y), func, y0, ())

    def after_jump(self, func, t, y: torch.Tensor, state) -> tuple[torch.Tensor, ...]:
        return self._carry(lambda f, y_, state_: self.solver.after_jump(f, t, y_, state_), func, y, state)

    def _carry(self, call, func, y, state):
        if not self.enabled:
            return call(func, y, state)
        recording = _Recording(func)
        new = call(recording, y, state)
        self._settle(func, new)
        if self.enabled:
            self.state_tangents = tuple(self._tangent_pass(
                lambda f: call(f, self.v, self.state_tangents), func, recording.points))
        return new

    def step(self, func, t0, h, y: torch.Tensor, state) -> tuple[Step, torch.Tensor | None]:
        """The solver's step, and the tangent's local error estimate (``None`` when there is none)."""
        if not self.enabled:
            return self.solver.step(func, t0, h, y, state), None
        recording = _Recording(func)
        step = self.solver.step(recording, t0, h, y, state)
        step.func = func  # an interpolant that evaluates f (cubic Hermite) must not record
        self._settle(func, (step.y1,))
        if not self.enabled:
            return step, None
        tangent = self._tangent_pass(lambda f: self.solver.step(f, t0, h, self.v, self.state_tangents), func,
                                     recording.points)
        self._pending = (tangent.y1, tuple(tangent.state1))
        return step, tangent.error

    def _tangent_pass(self, call, func, points):
        """``call(variational field)``, without autograd."""
        with torch.no_grad():
            return call(_Variational(func, points, self.per_sample))

    def _settle(self, func, produced) -> None:
        """In auto mode, after the first evaluation of ``f``: keep the tangent only if gradients are recorded,
        i.e. ``f`` read a tensor that requires grad (seen by the vector field's ``TensorCapture`` under
        ``no_grad``, or in the ``requires_grad`` of what it produced under grad mode)."""
        if not self.auto:
            return
        capture = getattr(func, "capture", None)
        if capture is not None and capture.tensors:
            self.auto = False
        elif produced:  # an init that evaluates nothing (no FSAL stage) decides nothing
            self.auto = False
            self.enabled = any(isinstance(x, torch.Tensor) and x.requires_grad for x in produced)

    # ------------------------------------------------------------------ acceptance

    def ratio(self, error: torch.Tensor | None, rtol, atol, norm=None) -> float | torch.Tensor | None:
        """The tangent's scaled error norm, as the state's (Hairer et al. I, eq. 4.10-4.11).

        A float for the shared loop (``norm`` of the whole state), a float64
        vector for the batch-parallel loop (RMS per sample); ``rtol`` is
        raised to what a forward difference resolves (module docstring). A non-finite
        value becomes 0: an infinite derivative of ``f`` (say ``sqrt`` at 0)
        says nothing about the step and must not reject it.
        """
        if error is None or self._pending is None:
            return None
        with torch.no_grad():
            if isinstance(rtol, torch.Tensor):
                rtol = rtol.clamp_min(self.rtol_floor)
            else:
                rtol = max(rtol, self.rtol_floor)
            scale = torch.maximum(self.v.abs(), self._pending[0].abs()).mul_(rtol).add_(atol)
            scaled = error / scale
            if not self.per_sample:
                value = norm_value(scaled, norm)
                return value if math.isfinite(value) else 0.0
            flat = scaled.reshape(scaled.shape[0], -1)
            ratio = torch.linalg.vector_norm(flat, dim=1).double() / math.sqrt(max(flat.shape[1], 1))
            return ratio.nan_to_num_(nan=0.0, posinf=0.0)

    def accept(self, accept: bool | torch.Tensor = True) -> None:
        """Keep the tangents of the step just taken (where ``accept``), renormalised to unit RMS."""
        pending, self._pending = self._pending, None
        if pending is None or accept is False or not self.enabled:
            return
        v1, state1 = pending
        if isinstance(accept, torch.Tensor):
            v1 = torch.where(_rows(accept, v1.ndim), v1, self.v)
            state1 = tuple(torch.where(_rows(accept, s1.ndim), s1, s0) for s0, s1 in zip(self.state_tangents, state1))
        factor = self._renormalisation(v1)
        self.v = v1.mul_(factor) if isinstance(accept, torch.Tensor) else v1 * factor  # where's result is fresh
        self.state_tangents = tuple(s * (_rows(factor, s.ndim) if self.per_sample else factor) for s in state1)

    def _renormalisation(self, v: torch.Tensor) -> torch.Tensor:
        """``1 / rms(v)`` (per sample, shaped to broadcast over ``v``; 1 where that is not finite or ``v`` is zero),
        without a host sync."""
        flat = v.reshape(v.shape[0], -1) if self.per_sample else v.reshape(1, -1)
        # |v|^2 is v^2 for real v, bit for bit: one operation fewer (this runs once per accepted step)
        rms = (flat.abs().square() if flat.is_complex() else flat.square()).mean(dim=1, keepdim=True).sqrt_()
        factor = torch.where(torch.isfinite(rms) & (rms > 0), rms.reciprocal(), 1.0)  # v's (real) dtype
        return _rows(factor, v.ndim) if self.per_sample else factor.reshape(())

    def compact(self, kept: torch.Tensor) -> None:
        """Keep the samples at positions ``kept`` (int64) of the active set (the batch-parallel loop's
        compaction)."""
        if self.enabled:
            self.v = self.v.index_select(0, kept)
            self.state_tangents = tuple(s.index_select(0, kept) for s in self.state_tangents)


class PlainStepper:
    """The solver's own calls, behind :class:`TangentStepper`'s interface (tangent control off)."""

    evaluations_per_stage = 1

    def __init__(self, solver: AbstractSolver) -> None:
        self.solver = solver

    def init(self, func, t0, y0):
        return self.solver.init(func, t0, y0)

    def after_jump(self, func, t, y, state):
        return self.solver.after_jump(func, t, y, state)

    def step(self, func, t0, h, y, state) -> tuple[Step, None]:
        return self.solver.step(func, t0, h, y, state), None

    def ratio(self, error, rtol, atol, norm=None) -> None:
        return None

    def accept(self, accept=True) -> None:
        return None

    def compact(self, kept) -> None:
        return None


def make_stepper(solver: AbstractSolver, y0: torch.Tensor, *, tangent: bool | str, per_sample: bool):
    """A :class:`TangentStepper` when ``tangent`` (``True``, or ``"auto"``: decided at the first evaluation)
    and the solver is adaptive and takes dual tensors; else a :class:`PlainStepper`."""
    if tangent not in (True, False, "auto"):
        raise ValueError(f"tangent must be True, False or 'auto', got {tangent!r}")
    if tangent and solver.adaptive and getattr(solver, "supports_tangent", True):
        return TangentStepper(solver, y0, per_sample=per_sample, auto=tangent == "auto")
    return PlainStepper(solver)
