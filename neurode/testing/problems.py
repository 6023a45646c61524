"""Initial-value problems for checking solvers: one with a known solution, and the standard test set.

:class:`ManufacturedProblem` is the workhorse of :func:`neurode.testing.check_solver`:
a coupled, nonlinear, non-autonomous system whose exact solution is known by
construction ("method of manufactured solutions": pick the solution ``u(t)``,
then set ``f(t, y) = u'(t) + g(y) - g(u(t))``; Roache 2002, *J. Fluids Eng.* 124).
Nonlinear coupling exercises every elementary differential of the order
conditions; explicit time dependence exercises the nodes ``c``; a batch of
phase-shifted copies averages away the accidental cancellations that make a
single trajectory's error curve wiggle.

The standard problems (:data:`STANDARD_PROBLEMS`) are the ones the numerical
ODE literature compares on (Hairer, Nørsett & Wanner I, §II.10): exponential
decay, Lotka–Volterra, the Kepler orbit, the Arenstorf orbit, van der Pol and
Lorenz. They are plain torch callables ``f(t, y)`` with an initial state and a
time span, so a reference can come from any integrator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


class ManufacturedProblem:
    """``dy/dt = u'(t) + g(y) - g(u(t))`` with exact solution ``y = u(t)``, batched over phases.

    The state has shape ``(batch, 3)``; copy ``k`` follows ``u(t + φ_k)``.
    ``u`` is not a polynomial (so no Runge–Kutta method integrates it exactly)
    and ``g`` couples the components nonlinearly::

        u(s) = (sin s, cos(s)/2 + 1, 1 / (1 + (s/2)^2 / 2))       s = t + φ
        g(y) = (y2 y3 - y1^2,  sin(y1) y3,  -y1 y2)

    Instances are callable as ``f(t, y)`` for any leading batch shape that
    broadcasts against the phases, in the dtype and on the device of ``y``.
    ``nfe`` counts the calls.
    """

    dim = 3

    def __init__(self, batch: int = 8) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.phases = torch.linspace(0.0, 2 * math.pi, batch + 1, dtype=torch.float64)[:-1]
        self.nfe = 0

    @property
    def batch(self) -> int:
        return len(self.phases)

    def _phases(self, like: torch.Tensor) -> torch.Tensor:
        return self.phases.to(dtype=like.dtype, device=like.device)

    def exact(self, t, *, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """``u(t + φ)``, shape ``(batch, 3)``, computed in float64 and then cast."""
        t = torch.as_tensor(t, dtype=torch.float64, device=device)
        s = t + self.phases.to(device)
        return self._u(s).to(dtype)

    @staticmethod
    def _u(s: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.sin(s), 0.5 * torch.cos(s) + 1.0, 1.0 / (1.0 + 0.125 * s * s)], dim=-1)

    @staticmethod
    def _du(s: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.cos(s), -0.5 * torch.sin(s), -0.25 * s / (1.0 + 0.125 * s * s) ** 2], dim=-1)

    @staticmethod
    def _g(y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([y2 * y3 - y1 * y1, torch.sin(y1) * y3, -y1 * y2], dim=-1)

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        s = t.to(y.dtype) + self._phases(y)
        return self._du(s) + self._g(y) - self._g(self._u(s))


@dataclass(frozen=True)
class StandardProblem:
    """A named initial-value problem: ``func(t, y)``, ``y0`` (float64) and the span ``(t0, t1)``.

    ``exact``, where the solution is known in closed form, maps a float64
    tensor of times to the states there.
    """

    name: str
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: tuple[float, ...]
    t_span: tuple[float, float]
    exact: Callable[[torch.Tensor], torch.Tensor] | None = None

    def initial_state(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        return torch.tensor(self.y0, dtype=dtype, device=device)


def _decay(t, y):
    return -0.5 * y


def _lotka_volterra(t, y):
    # prey x, predator z: x' = a x - b x z, z' = d x z - g z (a, b, d, g) = (1.5, 1, 1, 3)
    x, z = y.unbind(-1)
    return torch.stack([1.5 * x - x * z, x * z - 3.0 * z], dim=-1)


def _kepler(t, y):
    q, p = y[..., :2], y[..., 2:]
    r3 = (q * q).sum(-1, keepdim=True) ** 1.5
    return torch.cat([p, -q / r3], dim=-1)


_MU = 0.012277471  # Arenstorf: the moon-earth mass ratio (Hairer et al. I, §II.0, eq. 0.1)


def _arenstorf(t, y):
    y1, y2, v1, v2 = y.unbind(-1)
    mu, mu_ = _MU, 1.0 - _MU
    d1 = ((y1 + mu) ** 2 + y2 * y2) ** 1.5
    d2 = ((y1 - mu_) ** 2 + y2 * y2) ** 1.5
    a1 = y1 + 2 * v2 - mu_ * (y1 + mu) / d1 - mu * (y1 - mu_) / d2
    a2 = y2 - 2 * v1 - mu_ * y2 / d1 - mu * y2 / d2
    return torch.stack([v1, v2, a1, a2], dim=-1)


def _van_der_pol(t, y):
    x, v = y.unbind(-1)
    return torch.stack([v, 1.0 * (1 - x * x) * v - x], dim=-1)


def _lorenz(t, y):
    x, yy, z = y.unbind(-1)
    return torch.stack([10.0 * (yy - x), x * (28.0 - z) - yy, x * yy - (8.0 / 3.0) * z], dim=-1)


_KEPLER_E = 0.5
#: The Arenstorf orbit closes after this time (Hairer et al. I, §II.0).
ARENSTORF_PERIOD = 17.0652165601579625588917206249

STANDARD_PROBLEMS: dict[str, StandardProblem] = {
    p.name: p
    for p in (
        StandardProblem("exponential_decay", _decay, (1.0, -2.0, 0.5), (0.0, 5.0),
                        exact=lambda t: torch.exp(-0.5 * t)[:, None] * torch.tensor([1.0, -2.0, 0.5], dtype=t.dtype)),
        StandardProblem("lotka_volterra", _lotka_volterra, (1.0, 1.0), (0.0, 10.0)),
        # eccentricity 0.5, started at perihelion; period 2π (Hairer et al. I, §II.10, problem KEPL)
        StandardProblem("kepler", _kepler,
                        (1.0 - _KEPLER_E, 0.0, 0.0, math.sqrt((1.0 + _KEPLER_E) / (1.0 - _KEPLER_E))),
                        (0.0, 2 * math.pi)),
        StandardProblem("arenstorf", _arenstorf, (0.994, 0.0, 0.0, -2.00158510637908252240537862224),
                        (0.0, ARENSTORF_PERIOD)),
        StandardProblem("van_der_pol", _van_der_pol, (2.0, 0.0), (0.0, 10.0)),
        # chaotic: errors grow like exp(0.9 t), so only a short span has a meaningful reference
        StandardProblem("lorenz", _lorenz, (1.0, 1.0, 1.0), (0.0, 1.5)),
    )
}
