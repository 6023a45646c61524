"""The recurrent cells of the irregular-time models: RNN-Δt, GRU-D-style decay, and the ODE-RNN.

Each is a :class:`~neurode.plugins.models.irregular_scan.RecurrentCell` built
on a GRU (Cho et al., 2014) or a tanh RNN that takes in an observation as
``[values * mask, mask]`` — a missing variable is a zero value whose mask bit
says it is missing, never an imputed number:

- :class:`GapGRUCell` (``delta_t``): the GRU is also fed the time gap since the
  previous observation; between observations the state is what the same GRU
  makes of an empty observation after that gap (Rubanova et al., 2019, sec. 4,
  "RNN-Δt"; the recognition RNN of Chen et al., 2018, sec. 5, fed the gap).
- :class:`GapElmanCell` (``delta_t_tanh``): the same inputs into a tanh RNN
  (Elman, 1990), the cell of the recognition RNN of Chen et al.'s released
  example (torchdiffeq's ``examples/latent_ode.py``), a third of the GRU's
  weights and matrix products.
- :class:`DecayGRUCell` (``decay``): between observations the state decays
  exponentially towards zero, ``h * exp(-max(0, W_gamma * gap + b_gamma))``,
  per hidden unit (Che et al., 2018, GRU-D, eq. 4 and the hidden-state decay
  of sec. 3.1); the GRU is fed the gap too. GRU-D's decay of the *inputs*
  towards an empirical mean is an imputation and is left out: masks carry the
  missingness.
- :class:`ODEGRUCell` (``ode``): between observations the state follows
  ``dh/dt = f(t, h)``, a registered dynamics network, solved per trajectory
  with any registered solver and gradient method (Rubanova et al., 2019,
  Algorithm 1). Backwards reading solves backwards in time.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import nn

from neurode.framework.model import SolveSettings
from neurode.framework.registry import get_registry
from neurode.framework.solve import solve
from neurode.plugins.models.elman_sequence import elman_sequence
from neurode.plugins.models.gru_sequence import gru_sequence
from neurode.plugins.models.irregular_scan import RecurrentCell

CELLS = ("delta_t", "delta_t_tanh", "decay", "ode")


class _GapCell(RecurrentCell):
    """A recurrence fed ``[values * mask, mask, gap]``; crossing time is a step with an empty observation.

    Subclasses hold the recurrence (a ``GRUCell`` or a tanh ``RNNCell``) and
    its whole-sequence reader with backpropagation through time by hand.
    """

    observes_from_previous = True
    reads_sequences = True

    def __init__(self, n_features: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.n_features = n_features

    @abc.abstractmethod
    def _recurrence(self) -> nn.Module:
        """The torch cell stepped by ``advance`` and ``observe``."""

    @abc.abstractmethod
    def _read(self, inputs: torch.Tensor, h0: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
        """The same cell over a whole sequence (``observe_sequence``), backpropagation through time by hand."""

    def _step(self, h, gap, values, mask):
        return self._recurrence()(torch.cat([values, mask.to(h.dtype), gap], dim=-1), h)

    def advance(self, h, t_from, t_to, moving):
        gap = (t_to - t_from).abs().to(h.dtype).unsqueeze(-1)
        empty = h.new_zeros(h.shape[0], self.n_features)
        return self._step(h, gap, empty, empty)

    def observe(self, h, advanced, gap, values, mask):
        return self._step(h, gap, values, mask)

    def observe_sequence(self, h0, gap, values, mask, last):
        inputs = torch.cat([values.to(h0.dtype), mask.to(h0.dtype), gap], dim=-1)
        return self._read(inputs, h0, last)


class GapGRUCell(_GapCell):
    """GRU fed ``[values * mask, mask, gap]``; crossing time is a step with an empty observation."""

    def __init__(self, n_features: int, hidden_size: int) -> None:
        super().__init__(n_features, hidden_size)
        self.gru = nn.GRUCell(2 * n_features + 1, hidden_size)

    def _recurrence(self):
        return self.gru

    def _read(self, inputs, h0, last):
        return gru_sequence(self.gru, inputs, h0, last)


class GapElmanCell(_GapCell):
    """tanh RNN (Elman, 1990) fed ``[values * mask, mask, gap]``: the recognition RNN of Chen et al.'s example
    (``h' = tanh(W [x, h] + b)``), with the mask and the time gap as the GRU cells take them."""

    def __init__(self, n_features: int, hidden_size: int) -> None:
        super().__init__(n_features, hidden_size)
        self.rnn = nn.RNNCell(2 * n_features + 1, hidden_size, nonlinearity="tanh")

    def _recurrence(self):
        return self.rnn

    def _read(self, inputs, h0, last):
        return elman_sequence(self.rnn, inputs, h0, last)


class DecayGRUCell(RecurrentCell):
    """GRU-D-style cell: exponential decay of the hidden state across gaps, then a GRU fed the gap."""

    def __init__(self, n_features: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gru = nn.GRUCell(2 * n_features + 1, hidden_size)
        # gamma_h = exp(-max(0, W gap + b)), one rate per hidden unit (Che et al. 2018, eq. 4)
        self.decay = nn.Linear(1, hidden_size)

    def advance(self, h, t_from, t_to, moving):
        gap = (t_to - t_from).abs().to(h.dtype).unsqueeze(-1)
        return h * torch.exp(-torch.relu(self.decay(gap)))

    def observe(self, h, advanced, gap, values, mask):
        return self.gru(torch.cat([values, mask.to(h.dtype), gap], dim=-1), advanced)


class ODEGRUCell(RecurrentCell):
    """ODE-RNN cell: the hidden state follows a learned ODE between observations (Rubanova et al. 2019)."""

    def __init__(self, n_features: int, hidden_size: int, *, dynamics: str = "mlp",
                 dynamics_options: dict[str, Any] | None = None, solve: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gru = nn.GRUCell(2 * n_features, hidden_size)
        factory = get_registry().get("dynamics", dynamics).obj
        self.dynamics = factory(state_dim=hidden_size, **dict(dynamics_options or {}))
        self.settings = SolveSettings(**(solve or {}))
        self._stats: list = []
        self._rows = 0

    def advance(self, h, t_from, t_to, moving):
        if not bool(moving.any()):
            return h
        # one row per trajectory: [t_from, t_to], or [t_from, NaN] for a trajectory that stays put
        grid = torch.stack([t_from, torch.where(moving, t_to, torch.full_like(t_to, math.nan))], dim=1)
        solution = solve(self.dynamics, h, grid, per_sample=True, adjoint_params=tuple(self.dynamics.parameters()),
                         **self.settings.solve_kwargs())
        self._stats.append(solution.stats)
        self._rows = max(self._rows, h.shape[0])
        return torch.where(moving.unsqueeze(-1), solution.ys[-1], h)

    def observe(self, h, advanced, gap, values, mask):
        return self.gru(torch.cat([values, mask.to(h.dtype)], dim=-1), advanced)

    def reset_stats(self) -> None:
        self._stats, self._rows = [], 0

    def stats(self) -> dict[str, float]:
        if not self._stats:
            return {}
        rows = max(self._rows, 1)
        return {
            "nfe": float(sum(s.nfe for s in self._stats)),
            "nfe_per_sample": sum(s.nfe_rows for s in self._stats) / rows,
            "nfe_backward": float(sum(s.nfe_backward for s in self._stats)),
            "n_steps": float(sum(s.n_steps for s in self._stats)),
        }


def build_cell(cell: str, n_features: int, hidden_size: int, **ode_options) -> RecurrentCell:
    """The cell called ``cell`` (one of :data:`CELLS`); ``ode_options`` go to the ODE cell only."""
    if cell == "delta_t":
        return GapGRUCell(n_features, hidden_size)
    if cell == "delta_t_tanh":
        return GapElmanCell(n_features, hidden_size)
    if cell == "decay":
        return DecayGRUCell(n_features, hidden_size)
    if cell == "ode":
        return ODEGRUCell(n_features, hidden_size, **ode_options)
    raise ValueError(f"unknown recurrent cell {cell!r}, expected one of {', '.join(CELLS)}")
