"""Built-in models ``ode_rnn``, ``rnn_delta_t`` and ``rnn_decay``: recurrent forecasters of irregular series.

The sequence models of Rubanova, Chen and Duvenaud (2019): a hidden state read
forwards in time over each trajectory's own observations, with a decoder from
the state to the observed variables. They differ in how the state crosses the
time between observations (:mod:`neurode.plugins.models.recurrent_cells`):

- ``ode_rnn``: it follows a learned ODE ``dh/dt = f(t, h)`` (any registered
  dynamics, solver and gradient method), solved per trajectory — the ODE-RNN
  (Rubanova et al., 2019, Algorithm 1);
- ``rnn_delta_t``: a GRU fed the time gap as an input (their RNN-Δt baseline);
- ``rnn_decay``: the state decays exponentially with the gap (the GRU-D
  hidden-state decay of Che et al., 2018; their RNN-Decay baseline).

Prediction is causal. The value at a time ``tau`` is decoded from the state
advanced to ``tau`` from the last observation strictly before it; at an
observation time that is a one-step-ahead forecast made before the
observation is read. Given ``times`` beyond the last observation, the state is
carried on from it (extrapolation); inside the window, the observations before
each time are read first (interpolation). The first observation of a
trajectory is predicted from a learned initial state (plus a linear map of the
static variables), so the masked squared error of :meth:`loss` covers every
observed value, exactly what ``predict`` reports.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurode import hookimpl
from neurode.datasets.batch import PADDED
from neurode.framework.errors import InvalidInputError
from neurode.framework.model import AbstractModel, SolveSettings
from neurode.plugins.models.inputs import check_batch, check_times
from neurode.plugins.models.irregular_scan import merge_queries, observation_kinds, scan
from neurode.plugins.models.recurrent_cells import build_cell


class RecurrentForecaster(AbstractModel):
    """A forward-reading recurrent model with a decoder; subclasses choose the cell."""

    batch_mode = PADDED
    #: registered name and the cell of :mod:`recurrent_cells` it uses
    name: str = ""
    cell: str = ""

    def __init__(self, n_features: int, n_static: int = 0, *, hidden_size: int = 32, decoder_width: int = 32,
                 **cell_options) -> None:
        super().__init__()
        problems = []
        for key, value, minimum in (("n_features", n_features, 1), ("n_static", n_static, 0),
                                    ("hidden_size", hidden_size, 1), ("decoder_width", decoder_width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                problems.append(f"{key} must be an integer >= {minimum}, got {value!r}")
        if problems:
            raise InvalidInputError(f"{self.name}: " + "; ".join(problems))
        self.n_features, self.n_static = n_features, n_static
        self.hidden_size, self.decoder_width = hidden_size, decoder_width
        self.recurrent = build_cell(self.cell, n_features, hidden_size, **cell_options)
        self.initial_state = nn.Parameter(torch.zeros(hidden_size))
        if n_static:
            self.static_state = nn.Linear(n_static, hidden_size, bias=False)
        self.decoder = nn.Sequential(nn.Linear(hidden_size, decoder_width), nn.Tanh(),
                                     nn.Linear(decoder_width, n_features))

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "n_static": self.n_static, "hidden_size": self.hidden_size,
                "decoder_width": self.decoder_width}

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        pred = self.predict(batch)
        observed = batch.mask & batch.time_mask.unsqueeze(-1)
        # where(), not a product: padding predictions are NaN and NaN * 0 is NaN; the values are
        # zeroed first too, or a NaN in an unobserved slot would reach the gradient as 0 * NaN
        values = torch.where(observed, batch.values, torch.zeros_like(batch.values))
        squared = torch.where(observed, (pred - values) ** 2, torch.zeros_like(pred))
        mse = squared.sum() / observed.sum().clamp(min=1)
        return mse, {"mse": float(mse.detach()), **self.solve_stats()}

    def predict(self, batch, times: torch.Tensor | None = None) -> torch.Tensor:
        check_batch(self, batch)
        self.recurrent.reset_stats()
        h0 = self.initial_state.expand(batch.batch_size, -1)
        if self.n_static:
            h0 = h0 + self.static_state(batch.static)
        if times is None:
            states = scan(self.recurrent, h0, batch.times, batch.values, batch.mask,
                          observation_kinds(batch.time_mask), record=True).before
            pred = self.decoder(states)
            return torch.where(batch.time_mask.unsqueeze(-1), pred, torch.full_like(pred, float("nan")))
        times = check_times(times, batch.times, self.name)
        merged = merge_queries(batch.times, batch.values, batch.mask, batch.time_mask, times)
        states = scan(self.recurrent, h0, merged.times, merged.values, merged.mask, merged.kind, record=True).before
        at_queries = states.gather(1, merged.query_position.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        return self.decoder(at_queries)

    def solve_stats(self) -> dict[str, float]:
        return self.recurrent.stats()


class ODERNN(RecurrentForecaster):
    """ODE-RNN (Rubanova et al. 2019): the GRU state follows a learned ODE between observations."""

    name, cell = "ode_rnn", "ode"

    def __init__(self, n_features: int, n_static: int = 0, *, hidden_size: int = 32, decoder_width: int = 32,
                 dynamics: str = "mlp", dynamics_options: dict[str, Any] | None = None,
                 solve: dict[str, Any] | None = None) -> None:
        ode = {"dynamics": dynamics, "dynamics_options": dict(dynamics_options or {}),
               "solve": SolveSettings(**(solve or {})).as_dict()}
        super().__init__(n_features, n_static, hidden_size=hidden_size, decoder_width=decoder_width, **ode)
        self._ode = ode

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dynamics": self._ode["dynamics"],
                "dynamics_options": dict(self._ode["dynamics_options"]), "solve": dict(self._ode["solve"])}


class RNNDeltaT(RecurrentForecaster):
    """RNN-Δt baseline: a GRU fed ``[values * mask, mask, time gap]``."""

    name, cell = "rnn_delta_t", "delta_t"

    def __init__(self, n_features: int, n_static: int = 0, *, hidden_size: int = 32, decoder_width: int = 32) -> None:
        super().__init__(n_features, n_static, hidden_size=hidden_size, decoder_width=decoder_width)


class RNNDecay(RecurrentForecaster):
    """RNN-Decay baseline (GRU-D style): exponential decay of the hidden state across time gaps."""

    name, cell = "rnn_decay", "decay"

    def __init__(self, n_features: int, n_static: int = 0, *, hidden_size: int = 32, decoder_width: int = 32) -> None:
        super().__init__(n_features, n_static, hidden_size=hidden_size, decoder_width=decoder_width)


@hookimpl
def register_models(register):
    register("ode_rnn", ODERNN)
    register("rnn_delta_t", RNNDeltaT)
    register("rnn_decay", RNNDecay)
