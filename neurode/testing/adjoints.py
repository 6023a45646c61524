"""Conformance checks for gradient-method plugins: ``check_adjoint``.

A gradient method ("adjoint") may change how gradients are computed, never
what the solve computes: its forward values must be ``direct``'s, and its
gradients must be those of the same solution — exactly ``direct``'s for a
discrete method (checkpointing), ``direct``'s up to the solver tolerance for
a continuous one (the adjoint ODE). :func:`check_adjoint` compares both, in
float64, on problems chosen to catch the usual mistakes: a loss at several
output times (cotangents must be added as the backward pass passes each
time), parameters given explicitly or found on an ``nn.Module``, a tuple
state, a batch, and the output times themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from neurode.framework.solve import solve


@dataclass
class AdjointCase:
    """One differentiation problem: a vector field, its inputs, and a weighted loss over the outputs.

    ``make()`` returns ``(func, y0, t, params)`` built fresh (leaf tensors
    requiring grad), ``params`` being ``adjoint_params`` or ``None`` for the
    parameters of an ``nn.Module``.
    """

    name: str
    make: Callable[[], tuple]
    wrt_t: bool = True


def _oscillator():
    # A damped, driven pendulum with explicit parameter tensors (no nn.Module), batch of two.
    k = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.5, -0.3], dtype=torch.float64, requires_grad=True)

    def func(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, -k * torch.sin(x) - c * v + w * torch.cos(2 * t)], dim=-1)

    y0 = torch.tensor([[1.0, 0.0], [-0.5, 0.8]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.1, 2.0], dtype=torch.float64, requires_grad=True)
    return func, y0, t, (k, c, w)


def _oscillator_tuple():
    # The same pendulum with the state as a tuple (positions, velocities).
    func, y0, t, params = _oscillator()

    def tuple_func(t, state):
        x, v = state
        dy = func(t, torch.stack([x, v], dim=-1))
        return dy[..., 0], dy[..., 1]

    x0 = y0.detach()[:, 0].clone().requires_grad_(True)
    v0 = y0.detach()[:, 1].clone().requires_grad_(True)
    return tuple_func, (x0, v0), t, params


class _SmallNet(torch.nn.Module):
    """``dy/dt = W2 tanh(W1 y + b1 + t u) + b2``: a two-layer network that also sees the time."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.inner = torch.nn.Linear(2, 6).double()
        self.outer = torch.nn.Linear(6, 2).double()
        self.time = torch.nn.Parameter(torch.empty(6, dtype=torch.float64))
        with torch.no_grad():
            for p in (*self.inner.parameters(), *self.outer.parameters(), self.time):
                p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=torch.float64))

    def forward(self, t, y):
        return self.outer(torch.tanh(self.inner(y) + t * self.time))


def _module():
    func = _SmallNet()
    y0 = torch.tensor([[0.3, -0.7], [1.0, 0.5], [-0.2, 0.1]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64, requires_grad=True)
    return func, y0, t, None


CASES: tuple[AdjointCase, ...] = (
    AdjointCase("pendulum with explicit adjoint_params", _oscillator),
    AdjointCase("pendulum with a tuple state", _oscillator_tuple),
    AdjointCase("nn.Module dynamics (parameters found on the module)", _module),
)


@dataclass
class AdjointReport:
    """What :func:`check_adjoint` measured: per case, the largest relative gradient difference from ``direct``."""

    name: str
    differences: dict[str, float] = field(default_factory=dict)


def _weights(ys, seed: int):
    # fixed pseudo-random cotangents, one per output entry, so that every output time matters
    generator = torch.Generator().manual_seed(seed)
    parts = ys if isinstance(ys, tuple) else (ys,)
    return tuple(torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in parts)


def _run(case: AdjointCase, adjoint, adjoint_options, solver, options, rtol, atol, tangent_control):
    func, y0, t, params = case.make()
    t_input = t if case.wrt_t else t.detach()
    sol = solve(func, y0, t_input, solver=solver, adjoint=adjoint, adjoint_options=adjoint_options,
                adjoint_params=params, rtol=rtol, atol=atol, tangent_control=tangent_control, **options)
    ys = sol.ys if isinstance(sol.ys, tuple) else (sol.ys,)
    loss = sum((y * w).sum() for y, w in zip(ys, _weights(sol.ys, 0)))
    inputs = {}
    for i, part in enumerate(y0 if isinstance(y0, tuple) else (y0,)):
        inputs[f"y0[{i}]" if isinstance(y0, tuple) else "y0"] = part
    module_params = dict(func.named_parameters()) if isinstance(func, torch.nn.Module) else {}
    for i, p in enumerate(params or ()):
        inputs[f"adjoint_params[{i}]"] = p
    for name, p in module_params.items():
        inputs[f"parameter {name}"] = p
    if case.wrt_t:
        inputs["t"] = t
    grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
    grads = {name: (torch.zeros_like(x) if g is None else g) for (name, x), g in zip(inputs.items(), grads)}
    return tuple(y.detach() for y in ys), grads


def check_adjoint(adjoint, *, adjoint_options: dict | None = None, solver: str = "dopri5",
                  options: dict | None = None, rtol: float = 1e-10, atol: float = 1e-10,
                  gradient_rtol: float = 1e-6, cases: Sequence[AdjointCase] = CASES,
                  tangent_control: bool = False) -> AdjointReport:
    """Check that a gradient method agrees with ``direct``; raise ``AssertionError`` if not.

    For every case in ``cases`` (by default :data:`CASES`: a pendulum with
    parameters passed as ``adjoint_params``, the same with a tuple state, and
    a small ``nn.Module`` whose parameters are found on the module; all float64,
    batched, with a loss on several output times), solves with ``adjoint``
    and with ``direct`` at ``rtol``/``atol`` and asserts that

    * the forward values are identical up to round-off (a gradient method
      must not change the solution), and
    * the gradients of the loss with respect to ``y0``, every parameter and
      the output times ``t`` agree within ``gradient_rtol``, relative to the
      largest entry of ``direct``'s gradient of that input.

    Args:
        adjoint: a registered gradient-method name or an ``AbstractAdjoint`` instance.
        adjoint_options: options of the gradient method (``solve``'s ``adjoint_options``).
        solver, options: the solver and its options for both solves.
        rtol, atol: tolerances of both solves. A continuous adjoint's
            gradients differ from ``direct``'s by about these, so keep them
            far below ``gradient_rtol``.
        gradient_rtol: allowed relative difference of the gradients. Use
            about ``1e-10`` for a method that claims exact discrete gradients.
        tangent_control: ``solve``'s option, the same for both solves. Off by
            default so that both take the same steps: ``direct`` would
            otherwise also control a tangent's error (``framework/tangent.py``)
            and step differently from a method that does not.

    Returns an :class:`AdjointReport`. Example::

        from neurode.testing import check_adjoint

        def test_my_adjoint_agrees_with_direct():
            check_adjoint("my_adjoint", adjoint_options={"rtol": 1e-10, "atol": 1e-10})
    """
    label = adjoint if isinstance(adjoint, str) else repr(adjoint)
    options = dict(options or {})
    report = AdjointReport(label)
    for case in cases:
        ys_ref, grads_ref = _run(case, "direct", None, solver, options, rtol, atol, tangent_control)
        ys, grads = _run(case, adjoint, adjoint_options, solver, options, rtol, atol, tangent_control)
        for i, (got, want) in enumerate(zip(ys, ys_ref)):
            diff = float((got - want).abs().max())
            if not diff <= 1e-12 * max(1.0, float(want.abs().max())):
                raise AssertionError(
                    f"gradient method {label!r} on {case.name}: forward values (part {i}) differ from direct's by "
                    f"{diff:.3g}; a gradient method must not change the solution"
                )
        worst = 0.0
        for name, want in grads_ref.items():
            got = grads[name]
            scale = max(float(want.abs().max()), 1e-12)
            rel = float((got - want).abs().max()) / scale
            worst = max(worst, rel)
            if not rel <= gradient_rtol:
                raise AssertionError(
                    f"gradient method {label!r} on {case.name}: the gradient with respect to {name} differs from "
                    f"direct's by {rel:.3g} relative (expected <= {gradient_rtol:g});\n"
                    f"  direct: {want.flatten().tolist()}\n  {label}: {got.flatten().tolist()}"
                )
        report.differences[case.name] = worst
    return report
