"""Damped linear dynamics: dy/dt = (A - gamma I) y, a learnable linear vector field.

With A skew-symmetric (how it starts) the undamped flow is a rotation; the
damping ``gamma >= 0`` makes every trajectory spiral into the origin, as a
damped harmonic oscillator does. A is a trainable parameter, so the module can
be fitted to data like any neural vector field.
"""

from __future__ import annotations

import torch
from torch import nn


class DampedLinear(nn.Module):
    """Damped linear dynamics dy/dt = (A - gamma I) y with learnable A."""

    def __init__(self, state_dim: int = 2, damping: float = 0.1, frequency: float = 1.0) -> None:
        super().__init__()
        if not isinstance(state_dim, int) or state_dim < 1:
            raise ValueError(f"state_dim must be a positive integer, got {state_dim!r}")
        if not damping >= 0:
            raise ValueError(f"damping must be >= 0 (a negative value makes the system grow), got {damping!r}")
        # A starts as a block rotation at `frequency`: each pair of coordinates is
        # one undamped oscillator; an odd last coordinate starts at rest (A = 0).
        weight = torch.zeros(state_dim, state_dim)
        for i in range(0, state_dim - 1, 2):
            weight[i, i + 1] = frequency
            weight[i + 1, i] = -frequency
        self.weight = nn.Parameter(weight)
        self.register_buffer("damping", torch.tensor(float(damping)))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dy/dt at state ``y`` of shape ``(..., state_dim)``; autonomous, so ``t`` is unused."""
        return y @ self.weight.to(y.dtype).T - self.damping.to(y.dtype) * y

    def extra_repr(self) -> str:
        return f"state_dim={self.weight.shape[0]}, damping={self.damping.item():g}"
