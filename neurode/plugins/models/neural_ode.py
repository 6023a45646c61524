"""Built-in model ``neural_ode``: a Neural ODE for irregularly sampled trajectories.

The latent-trajectory model of Chen et al. (2018, sec. 5), fitted directly to
observations: an initial state z0 at each trajectory's first observation time
t0, evolved by a learned vector field dz/dt = f(t, z; theta), read out at the
observation times, and compared with what was observed (a masked squared
error: unobserved values do not count).

- z0: the first observation itself ("first"), with any variable missing at t0
  (and any extra latent dimensions) filled in by a learned encoder of the
  first ``encoder_obs`` observations; or the encoder's output alone ("encoder").
- Static per-trajectory variables (parameters, conditions) feed the encoder
  and, when the dynamics accepts ``condition_dim``, the vector field.
- Readout: the first ``n_features`` latent coordinates are the observed
  features, or a linear map (``readout=True``, started at that projection).
- Every trajectory is solved on its own observation times by the
  batch-parallel loop (``batch.solve_times()``): no union of the batch's
  times, no wasted rows, a step size per sample.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from neurode import hookimpl
from neurode.datasets.batch import PADDED
from neurode.framework.errors import InvalidInputError
from neurode.framework.model import AbstractModel, SolveSettings
from neurode.framework.registry import get_registry
from neurode.framework.solve import solve
from neurode.plugins.models.inputs import check_batch, check_times, forecast_grid

INITIAL_STATES = ("first", "encoder")


def _accepts_condition(factory) -> bool:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "condition_dim" in parameters


class NeuralODE(AbstractModel):
    """Neural ODE fitted to irregularly sampled trajectories (masked loss, per-sample solves)."""

    #: the batching mode this model consumes (each trajectory on its own times)
    batch_mode = PADDED

    def __init__(
        self,
        n_features: int,
        n_static: int = 0,
        *,
        latent_dim: int | None = None,
        dynamics: str = "mlp",
        dynamics_options: dict[str, Any] | None = None,
        initial_state: str = "first",
        encoder_obs: int = 3,
        encoder_width: int = 64,
        readout: bool = False,
        condition_on_static: bool = True,
        solve: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        latent_dim = n_features if latent_dim is None else latent_dim
        problems = []
        if not isinstance(n_features, int) or n_features < 1:
            problems.append(f"n_features must be a positive integer, got {n_features!r}")
        if not isinstance(n_static, int) or n_static < 0:
            problems.append(f"n_static must be a non-negative integer, got {n_static!r}")
        if not isinstance(latent_dim, int) or (isinstance(n_features, int) and latent_dim < n_features):
            problems.append(f"latent_dim must be an integer >= n_features ({n_features}), got {latent_dim!r}")
        if initial_state not in INITIAL_STATES:
            problems.append(f"initial_state must be one of {', '.join(INITIAL_STATES)}, got {initial_state!r}")
        if not isinstance(encoder_obs, int) or encoder_obs < 1:
            problems.append(f"encoder_obs must be a positive integer, got {encoder_obs!r}")
        if problems:
            raise InvalidInputError("neural_ode: " + "; ".join(problems))
        self.n_features, self.n_static, self.latent_dim = n_features, n_static, latent_dim
        self.initial_state, self.encoder_obs, self.encoder_width = initial_state, encoder_obs, encoder_width
        self.use_readout, self.condition_on_static = bool(readout), bool(condition_on_static)
        self.dynamics_name, self.dynamics_options = dynamics, dict(dynamics_options or {})
        self.settings = SolveSettings(**(solve or {}))

        factory = get_registry().get("dynamics", dynamics).obj
        options = dict(self.dynamics_options)
        self.conditioned = bool(n_static and self.condition_on_static and _accepts_condition(factory))
        if self.conditioned:
            options["condition_dim"] = n_static
        self.dynamics = factory(state_dim=latent_dim, **options)

        # Encoder of the first k observations: values (0 where unobserved), masks
        # and time offsets from t0, plus the static vector.
        encoder_in = encoder_obs * (2 * n_features + 1) + n_static
        self.encoder = nn.Sequential(nn.Linear(encoder_in, encoder_width), nn.Tanh(),
                                     nn.Linear(encoder_width, latent_dim))
        nn.init.zeros_(self.encoder[-1].weight)
        nn.init.zeros_(self.encoder[-1].bias)
        if self.use_readout:
            self.readout = nn.Linear(latent_dim, n_features)
            with torch.no_grad():
                self.readout.weight.copy_(torch.eye(n_features, latent_dim))
                self.readout.bias.zero_()
        self._last_stats = None
        self._last_batch_size = 0

    # ------------------------------------------------------------------ contract

    def config(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_static": self.n_static,
            "latent_dim": self.latent_dim,
            "dynamics": self.dynamics_name,
            "dynamics_options": dict(self.dynamics_options),
            "initial_state": self.initial_state,
            "encoder_obs": self.encoder_obs,
            "encoder_width": self.encoder_width,
            "readout": self.use_readout,
            "condition_on_static": self.condition_on_static,
            "solve": self.settings.as_dict(),
        }

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        pred = self.predict(batch)
        observed = batch.mask & batch.time_mask.unsqueeze(-1)
        # where(), not a product: predictions in the padding are NaN, and
        # NaN * 0 would poison the loss and its gradient.
        squared = torch.where(observed, (pred - batch.values) ** 2, torch.zeros_like(pred))
        count = observed.sum().clamp(min=1)
        mse = squared.sum() / count
        metrics = {"mse": float(mse.detach()), **self.solve_stats()}
        return mse, metrics

    def predict(self, batch, times: torch.Tensor | None = None) -> torch.Tensor:
        check_batch(self, batch, "neural_ode")
        z0 = self.initial_latent(batch)
        t0 = batch.times[:, 0]
        if times is None:
            grid = batch.solve_times()
            latent = self._solve(z0, grid, batch.static)
            latent = torch.where(batch.time_mask.unsqueeze(-1), latent, torch.full_like(latent, float("nan")))
            return self._read(latent)
        return self._read(self._solve_at(z0, t0, times, batch.static))

    def solve_stats(self) -> dict[str, float]:
        stats = self._last_stats
        if stats is None:
            return {}
        per_sample = max(self._last_batch_size, 1)
        return {
            "nfe": float(stats.nfe),
            "nfe_per_sample": stats.nfe_rows / per_sample,
            "nfe_backward": float(stats.nfe_backward),
            "n_steps": float(stats.n_steps),
        }

    # ------------------------------------------------------------------ pieces

    def initial_latent(self, batch) -> torch.Tensor:
        """z0 at each trajectory's first observation time."""
        k = self.encoder_obs
        values, mask, slots = batch.values[:, :k], batch.mask[:, :k], batch.time_mask[:, :k]
        pad = k - values.shape[1]
        if pad > 0:  # every trajectory of the batch has fewer than k observations
            values = nn.functional.pad(values, (0, 0, 0, pad))
            mask = nn.functional.pad(mask, (0, 0, 0, pad))
            slots = nn.functional.pad(slots, (0, pad))
        times = nn.functional.pad(batch.times[:, :k], (0, max(pad, 0)))
        offsets = (times - batch.times[:, :1]) * slots
        mask = mask & slots.unsqueeze(-1)
        dtype = batch.values.dtype
        features = torch.cat([(values * mask).flatten(1), mask.to(dtype).flatten(1), offsets.to(dtype)], dim=1)
        if self.n_static:
            features = torch.cat([features, batch.static], dim=1)
        encoded = self.encoder(features)
        if self.initial_state == "encoder":
            return encoded
        first = torch.where(batch.mask[:, 0], batch.values[:, 0], encoded[:, : self.n_features])
        return torch.cat([first, encoded[:, self.n_features:]], dim=1)

    def _read(self, latent: torch.Tensor) -> torch.Tensor:
        if self.use_readout:
            # padding (a NaN latent) must not reach the readout: 0 * NaN in its weight gradient is NaN
            padding = torch.isnan(latent).any(dim=-1, keepdim=True)
            read = self.readout(torch.where(padding, torch.zeros_like(latent), latent))
            return read.masked_fill(padding, math.nan)
        return latent[..., : self.n_features]

    def _solve(self, z0: torch.Tensor, grid: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """Latent states ``[batch, T, latent]`` on the per-sample grid ``[batch, T]`` (NaN-padded)."""
        if self.conditioned:
            def field(t, z, condition):
                return self.dynamics(t, z, condition)
            args = static
        else:
            def field(t, z):
                return self.dynamics(t, z)
            args = None
        solution = solve(field, z0, grid, per_sample=True, args=args,
                         adjoint_params=tuple(self.dynamics.parameters()), **self.settings.solve_kwargs())
        self._last_stats, self._last_batch_size = solution.stats, z0.shape[0]
        return solution.ys.transpose(0, 1)

    def _solve_at(self, z0, t0, times, static) -> torch.Tensor:
        """Latent states at ``times`` (``[T]`` or ``[batch, T]``, increasing, each >= that trajectory's t0)."""
        times = check_times(times, t0, "neural_ode", t0=t0, after_t0="neural_ode predicts forward from t0")
        grid, position = forecast_grid(t0, times)
        latent = self._solve(z0, grid, static)
        return latent.gather(1, position.unsqueeze(-1).expand(-1, -1, latent.shape[-1]))


@hookimpl
def register_models(register):
    register("neural_ode", NeuralODE)
