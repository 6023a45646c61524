"""Built-in dynamics ``mlp`` and ``linear``: the vector fields a neural ODE learns.

``mlp`` is the f(t, z; theta) of Chen et al. (2018): a multilayer perceptron
from the state (optionally with the time and a per-trajectory condition
vector appended to its input) to dz/dt. ``linear`` is dz/dt = A z + b (+ C c),
the smallest learnable field, whose flow is known in closed form.

Both accept ``t`` as a 0-d tensor (one time for the batch) or as ``[batch]``
(the batch-parallel loop gives each sample its own time), and an optional
``condition`` ``[batch, condition_dim]`` (static variables: a mass, a dose).
"""

from __future__ import annotations

import torch
from torch import nn

from neurode import hookimpl

#: activation name -> module class
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _time_column(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``t`` as a ``[..., 1]`` column matching ``y``'s leading dimensions."""
    t = t.to(y.dtype)
    if t.ndim == 0:
        return t.expand(y.shape[:-1]).unsqueeze(-1)
    return t.reshape(*t.shape, *([1] * (y.ndim - t.ndim)))[..., :1].expand(*y.shape[:-1], 1)


def _inputs(t, y, condition, time_input: bool, condition_dim: int) -> torch.Tensor:
    parts = [y]
    if time_input:
        parts.append(_time_column(t, y))
    if condition_dim:
        if condition is None:
            raise ValueError(f"this dynamics was built with condition_dim={condition_dim}; pass condition=")
        parts.append(condition.to(y.dtype).expand(*y.shape[:-1], condition_dim))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else y


class MLPDynamics(nn.Module):
    """Multilayer perceptron vector field dz/dt = MLP([z, t?, condition?])."""

    def __init__(
        self,
        state_dim: int,
        *,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        time_input: bool = False,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        _positive_int("state_dim", state_dim)
        _positive_int("width", width)
        _positive_int("depth", depth)
        _positive_int("condition_dim", condition_dim, minimum=0)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.state_dim, self.width, self.depth = state_dim, width, depth
        self.activation, self.time_input, self.condition_dim = activation, bool(time_input), condition_dim
        layers: list[nn.Module] = []
        size = state_dim + int(self.time_input) + condition_dim
        for _ in range(depth):
            layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
            size = width
        last = nn.Linear(size, state_dim)
        # A small last layer starts the flow near the identity map, so the first
        # solves are cheap and the loss starts at the "state stays put" baseline.
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, t: torch.Tensor, y: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_inputs(t, y, condition, self.time_input, self.condition_dim))

    def extra_repr(self) -> str:
        return (f"state_dim={self.state_dim}, width={self.width}, depth={self.depth}, activation={self.activation!r}, "
                f"time_input={self.time_input}, condition_dim={self.condition_dim}")


class LinearDynamics(nn.Module):
    """Linear vector field dz/dt = A z + b (+ C condition), A started at zero."""

    def __init__(self, state_dim: int, *, bias: bool = True, condition_dim: int = 0) -> None:
        super().__init__()
        _positive_int("state_dim", state_dim)
        _positive_int("condition_dim", condition_dim, minimum=0)
        self.state_dim, self.condition_dim = state_dim, condition_dim
        self.linear = nn.Linear(state_dim + condition_dim, state_dim, bias=bias)
        nn.init.zeros_(self.linear.weight)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def forward(self, t: torch.Tensor, y: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(_inputs(t, y, condition, False, self.condition_dim))


@hookimpl
def register_dynamics(register):
    register("mlp", MLPDynamics)
    register("linear", LinearDynamics)
