"""Built-in model ``latent_ode``: the Latent ODE of Chen et al. (2018, sec. 5) and Rubanova et al. (2019).

A generative model of irregularly sampled trajectories:

    z0 ~ p(z0) = N(0, I),   z(t) = z0 + int_{t0}^{t} f(s, z(s); theta) ds,   x(t_i) ~ N(decoder(z(t_i)), s^2)

fitted by amortised variational inference. A recognition network reads each
trajectory *backwards* in time, from its last observation to its first, and
outputs the Gaussian posterior q(z0 | x, t) = N(mu, diag(sigma^2)) at the first
observation time t0:

- ``encoder="rnn"``: a GRU fed ``[values * mask, mask, time gap]`` (Chen et
  al., 2018, sec. 5, with the gap and mask as Rubanova et al. feed them);
  with ``encoder_cell="tanh"`` a tanh RNN fed the same, the cell of the
  ``RecognitionRNN`` of Chen et al.'s released example (torchdiffeq's
  ``examples/latent_ode.py``): a third of the GRU's weights and work;
- ``encoder="ode_rnn"``: between observations its hidden state follows an ODE,
  solved backwards in time (Rubanova et al., 2019, sec. 3.3).

The decoder is ``decoder_depth`` ReLU layers of ``decoder_width`` units and a
linear output (default one layer, as the example of Chen et al.); depth 0 is a
linear map from latent to observation.

z0 is sampled by reparameterisation, carried to every requested time by the
latent dynamics (any registered dynamics, default ``mlp``; any registered
solver and gradient method), and decoded. The loss is the negative
variational bound of :mod:`neurode.plugins.models.elbo` (Gaussian likelihood
with fixed or learned noise, KL to N(0, I) with an annealing schedule, and
k importance samples when ``iwae_samples > 1``), averaged over trajectories.
With ``encode_fraction < 1`` the loss is the extrapolation objective of
Rubanova, Chen and Duvenaud (2019, sec. 4): the recognition network reads
only the observations in the first ``encode_fraction`` of each trajectory's
time span (a range ``[low, high]``: a fraction drawn per trajectory at every
step), and the likelihood scores the decoded trajectory on all of it;
:meth:`LatentODE.predict` still reads every observation.

``kinetic_weight`` and ``jacobian_weight`` add the regularisers of Finlay et
al. (2020, "How to train your neural ODE", eq. 4-5) to the loss: the kinetic
energy int ||f(z(t))||^2 dt and the squared Frobenius norm of the field's
Jacobian int ||df/dz||_F^2 dt along each latent trajectory, which favour
fields that are cheap to solve (fewer adaptive steps) among those that fit.
Finlay et al. integrate both alongside the state; here they are estimated by
the trapezoidal rule on each trajectory's own solve times, where z(t) is
already known (one extra field evaluation per time, no change to the solve),
and the Frobenius norm by Hutchinson's estimator, ||J||_F^2 = E ||e^T J||^2
with Rademacher e (exact when J is diagonal). Each is averaged over
trajectories, as the bound is, and reported in the metrics.

Every trajectory is solved on its own times (``batch.solve_times()`` and the
batch-parallel loop); the ``k`` posterior samples of a batch are ``k * batch``
rows of one per-sample solve. Static per-trajectory variables feed the
recognition network. The KL schedule counts optimiser steps in a buffer
(``kl_step``, saved with the weights, so a resumed run continues the schedule).

:meth:`LatentODE.predict` decodes the posterior mean of z0 (deterministic);
``samples=K`` returns ``K`` posterior draws ``[K, batch, T, F]`` for
uncertainty bands. Times may lie inside the observed window (interpolation)
or beyond it (extrapolation), not before a trajectory's first observation.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from neurode import hookimpl
from neurode.datasets.batch import PADDED
from neurode.framework.errors import InvalidInputError
from neurode.framework.model import AbstractModel, SolveSettings
from neurode.framework.registry import get_registry
from neurode.framework.solve import solve
from neurode.plugins.models import elbo
from neurode.plugins.models.inputs import check_batch, check_times, forecast_grid
from neurode.plugins.models.irregular_scan import observation_kinds, scan
from neurode.plugins.models.recurrent_cells import build_cell

ENCODERS = {"rnn": "delta_t", "ode_rnn": "ode"}
#: recurrent cells of the ``rnn`` encoder: the cell of :mod:`recurrent_cells` each names
ENCODER_CELLS = {"gru": "delta_t", "tanh": "delta_t_tanh"}


class LatentODE(AbstractModel):
    """Latent ODE with an RNN or ODE-RNN recognition network (see the module docstring)."""

    batch_mode = PADDED

    def __init__(
        self,
        n_features: int,
        n_static: int = 0,
        *,
        latent_dim: int = 4,
        encoder: str = "rnn",
        encoder_hidden: int = 25,
        encoder_cell: str = "gru",
        encoder_dynamics_options: dict[str, Any] | None = None,
        decoder_width: int = 20,
        decoder_depth: int = 1,
        dynamics: str = "mlp",
        dynamics_options: dict[str, Any] | None = None,
        noise_std: float = 0.1,
        learn_noise: bool = False,
        kl_schedule: str = "none",
        kl_anneal_steps: int = 1000,
        iwae_samples: int = 1,
        encode_fraction: float | tuple[float, float] = 1.0,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        solve: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        problems = []
        for name, value, minimum in (("n_features", n_features, 1), ("n_static", n_static, 0),
                                     ("latent_dim", latent_dim, 1), ("encoder_hidden", encoder_hidden, 1),
                                     ("decoder_width", decoder_width, 1), ("decoder_depth", decoder_depth, 0),
                                     ("kl_anneal_steps", kl_anneal_steps, 0),
                                     ("iwae_samples", iwae_samples, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                problems.append(f"{name} must be an integer >= {minimum}, got {value!r}")
        if encoder not in ENCODERS:
            problems.append(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if encoder_cell not in ENCODER_CELLS:
            problems.append(f"encoder_cell must be one of {', '.join(ENCODER_CELLS)}, got {encoder_cell!r}")
        elif encoder_cell != "gru" and encoder != "rnn":
            problems.append(f"encoder_cell {encoder_cell!r} is a cell of the rnn encoder; encoder {encoder!r} "
                            "takes encoder_cell 'gru'")
        if kl_schedule not in elbo.SCHEDULES:
            problems.append(f"kl_schedule must be one of {', '.join(elbo.SCHEDULES)}, got {kl_schedule!r}")
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not noise_std > 0:
            problems.append(f"noise_std must be a positive number, got {noise_std!r}")
        for name, value in (("kinetic_weight", kinetic_weight), ("jacobian_weight", jacobian_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        bounds = _fraction_bounds(encode_fraction)
        if bounds is None:
            problems.append(f"encode_fraction must be a number in (0, 1] or a range [low, high] with "
                            f"0 < low <= high <= 1, got {encode_fraction!r}")
        if problems:
            raise InvalidInputError("latent_ode: " + "; ".join(problems))
        self.n_features, self.n_static, self.latent_dim = n_features, n_static, latent_dim
        self.encoder_name, self.encoder_hidden, self.encoder_cell = encoder, encoder_hidden, encoder_cell
        self.decoder_width, self.decoder_depth = decoder_width, decoder_depth
        self.encoder_dynamics_options = dict(encoder_dynamics_options or {})
        self.dynamics_name, self.dynamics_options = dynamics, dict(dynamics_options or {})
        self.noise_std, self.learn_noise = float(noise_std), bool(learn_noise)
        self.kl_schedule, self.kl_anneal_steps, self.iwae_samples = kl_schedule, kl_anneal_steps, iwae_samples
        self.encode_fraction = bounds[0] if bounds[0] == bounds[1] else list(bounds)
        self.kinetic_weight, self.jacobian_weight = float(kinetic_weight), float(jacobian_weight)
        self.settings = SolveSettings(**(solve or {}))

        cell = ENCODER_CELLS[encoder_cell] if encoder == "rnn" else ENCODERS[encoder]
        self.encoder = build_cell(cell, n_features, encoder_hidden, dynamics=dynamics,
                                  dynamics_options=self.encoder_dynamics_options, solve=self.settings.as_dict())
        # h -> (mu, log sigma^2) of q(z0 | x, t), as the h2o layer of Chen et al.'s recognition RNN
        self.posterior = nn.Linear(encoder_hidden + n_static, 2 * latent_dim)
        self.dynamics = get_registry().get("dynamics", dynamics).obj(state_dim=latent_dim, **self.dynamics_options)
        # decoder_depth ReLU layers of decoder_width (Chen et al.'s example: one of 20), then a linear
        # map; depth 0 is a linear emission, which leaves every nonlinearity to the latent dynamics
        sizes = [latent_dim] + [decoder_width] * decoder_depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.decoder = nn.Sequential(*layers, nn.Linear(sizes[-1], n_features))
        log_std = torch.full((n_features,), float(torch.log(torch.tensor(self.noise_std))))
        if self.learn_noise:
            self.log_noise_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_noise_std", log_std)
        # optimiser steps seen by loss(), for the KL schedule; saved with the weights
        self.register_buffer("kl_step", torch.zeros(1, dtype=torch.long))
        self._last_stats = None
        self._last_rows = 0

    # ------------------------------------------------------------------ contract

    def config(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_static": self.n_static,
            "latent_dim": self.latent_dim,
            "encoder": self.encoder_name,
            "encoder_hidden": self.encoder_hidden,
            "encoder_cell": self.encoder_cell,
            "encoder_dynamics_options": dict(self.encoder_dynamics_options),
            "decoder_width": self.decoder_width,
            "decoder_depth": self.decoder_depth,
            "dynamics": self.dynamics_name,
            "dynamics_options": dict(self.dynamics_options),
            "noise_std": self.noise_std,
            "learn_noise": self.learn_noise,
            "kl_schedule": self.kl_schedule,
            "kl_anneal_steps": self.kl_anneal_steps,
            "iwae_samples": self.iwae_samples,
            "encode_fraction": (list(self.encode_fraction) if isinstance(self.encode_fraction, list)
                                else self.encode_fraction),
            "kinetic_weight": self.kinetic_weight,
            "jacobian_weight": self.jacobian_weight,
            "solve": self.settings.as_dict(),
        }

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        check_batch(self, batch)
        mean, log_var = self.posterior_parameters(self.encoder_view(batch))
        k = self.iwae_samples
        z0 = mean + torch.exp(0.5 * log_var) * torch.randn((k, *mean.shape), dtype=mean.dtype, device=mean.device)
        grid = batch.solve_times()
        latent = self.latent_path(z0, grid)
        pred = self.decoder(latent)
        observed = batch.mask & batch.time_mask.unsqueeze(-1)
        log_likelihood = elbo.gaussian_log_likelihood(batch.values, pred, self.log_noise_std, observed)
        beta = elbo.kl_weight(self.kl_schedule, int(self.kl_step), self.kl_anneal_steps)
        bound, kl = elbo.variational_bound(log_likelihood, z0, mean, log_var, beta)
        loss = -bound.mean()
        regularisers = {}
        if self.kinetic_weight or self.jacobian_weight:
            regularisers = self.field_regularisers(latent, grid)
            loss = loss + self.kinetic_weight * regularisers["kinetic_energy"]
            if self.jacobian_weight:
                loss = loss + self.jacobian_weight * regularisers["jacobian_frobenius"]
        if self.training:
            self.kl_step += 1
        with torch.no_grad():
            values = torch.where(observed, batch.values, torch.zeros_like(batch.values))
            squared = torch.where(observed, (pred - values) ** 2, torch.zeros_like(pred))
            mse = squared.sum() / (observed.sum() * k).clamp(min=1)
        metrics = {"neg_elbo": float(loss.detach()), "nll": float(-log_likelihood.detach().mean()),
                   "kl": float(kl.detach().mean()), "kl_weight": beta, "mse": float(mse),
                   **{name: float(value.detach()) for name, value in regularisers.items()},
                   **self.solve_stats()}
        if self.learn_noise:
            metrics["noise_std"] = float(self.log_noise_std.detach().exp().mean())
        return loss, metrics

    def predict(self, batch, times: torch.Tensor | None = None, samples: int | None = None) -> torch.Tensor:
        """Decoded trajectories ``[batch, T, F]`` from the posterior mean of z0, or ``[samples, batch, T, F]``.

        ``samples=K`` draws z0 ``K`` times from q(z0 | x, t) (torch's global RNG).
        """
        check_batch(self, batch)
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise InvalidInputError(f"latent_ode: samples must be a positive integer or None, got {samples!r}")
        mean, log_var = self.posterior_parameters(batch)
        if samples is None:
            z0 = mean.unsqueeze(0)
        else:
            noise = torch.randn((samples, *mean.shape), dtype=mean.dtype, device=mean.device)
            z0 = mean + torch.exp(0.5 * log_var) * noise
        if times is None:
            pred = self.decode(z0, batch.solve_times())
            pred = torch.where(batch.time_mask[None, :, :, None], pred, torch.full_like(pred, float("nan")))
        else:
            t0 = batch.times[:, 0]
            grid, position = forecast_grid(t0, check_times(times, t0, "latent_ode", t0=t0, after_t0=(
                "the latent state z0 is inferred at t0 and carried forward")))
            decoded = self.decode(z0, grid)
            pred = decoded.gather(2, position[None, :, :, None].expand(z0.shape[0], -1, -1, decoded.shape[-1]))
        return pred[0] if samples is None else pred

    def solve_stats(self) -> dict[str, float]:
        stats = dict(self.encoder.stats())
        latent = self._last_stats
        if latent is not None:
            rows = max(self._last_rows, 1)
            stats = {
                "nfe": float(latent.nfe) + stats.get("nfe", 0.0),
                "nfe_per_sample": latent.nfe_rows / rows + stats.get("nfe_per_sample", 0.0),
                "nfe_backward": float(latent.nfe_backward) + stats.get("nfe_backward", 0.0),
                "n_steps": float(latent.n_steps) + stats.get("n_steps", 0.0),
            }
        return stats

    # ------------------------------------------------------------------ pieces

    def posterior_parameters(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log sigma^2)`` ``[batch, latent]`` of q(z0 | x, t), from a backwards read of each trajectory."""
        self.encoder.reset_stats()
        values = batch.values
        h0 = values.new_zeros(batch.batch_size, self.encoder_hidden)
        h = scan(self.encoder, h0, batch.times, values, batch.mask, observation_kinds(batch.time_mask),
                 reverse=True).final
        if self.n_static:
            h = torch.cat([h, batch.static], dim=-1)
        mean, log_var = self.posterior(h).chunk(2, dim=-1)
        return mean, log_var

    def encoder_view(self, batch):
        """What the recognition network reads in :meth:`loss`: each trajectory's observations up to
        ``t0 + f * (t_last - t0)`` (the rest become padding), ``f`` the ``encode_fraction``, or for a range
        ``[low, high]`` drawn uniformly from ``[low, high)`` per trajectory at every call (torch's global
        RNG); the whole batch at 1.

        The extrapolation objective of Rubanova, Chen and Duvenaud (2019, sec. 4): z0 is inferred from
        the first part of the window and the likelihood scores the decoded trajectory on all of it, so
        the latent flow, not the encoder, must carry what the later observations show. A range up to 1
        also shows the encoder (nearly) whole trajectories, as :meth:`predict` gives it.
        """
        low, high = _fraction_bounds(self.encode_fraction)
        if low >= 1.0:
            return batch
        times = batch.times
        t0 = times[:, :1]
        # padding repeats the last time, so the row maximum is the last observation's time
        t_last = torch.where(batch.time_mask, times, t0).amax(dim=1, keepdim=True)
        fraction = low if low == high else low + (high - low) * torch.rand(t0.shape, dtype=t0.dtype,
                                                                          device=t0.device)
        cutoff = t0 + fraction * (t_last - t0)
        # the first slot always stays: every trajectory keeps at least its first observation
        read = batch.time_mask & (times <= cutoff)
        read[:, 0] = batch.time_mask[:, 0]
        return replace(batch, time_mask=read, mask=batch.mask & read.unsqueeze(-1))

    def decode(self, z0: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Decoded values ``[k, batch, T, F]`` on the per-sample grid ``[batch, T]`` from ``z0`` ``[k, batch, L]``.

        Finite everywhere: at the grid's NaN padding it decodes a zero latent (never a prediction).
        """
        return self.decoder(self.latent_path(z0, grid))

    def latent_path(self, z0: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """The latent trajectories ``[k, batch, T, L]`` on the per-sample grid ``[batch, T]``; zero at its padding."""
        k, batch, latent_dim = z0.shape
        solution = solve(self.dynamics, z0.reshape(k * batch, latent_dim), grid.repeat(k, 1), per_sample=True,
                         adjoint_params=tuple(self.dynamics.parameters()), **self.settings.solve_kwargs())
        self._last_stats, self._last_rows = solution.stats, k * batch
        latent = solution.ys.transpose(0, 1).reshape(k, batch, grid.shape[1], latent_dim)
        # the solve leaves NaN at the grid's padding; a NaN entering the decoder would
        # reach its weight gradients (0 * NaN), however the loss masks it afterwards
        finite = torch.isfinite(grid)
        if bool(finite.all()):  # no padding (one host read): nothing to replace, and no where in the backward pass
            return latent
        return torch.where(finite[None, :, :, None], latent, torch.zeros_like(latent))

    def field_regularisers(self, latent: torch.Tensor, grid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Kinetic energy and (with ``jacobian_weight``) Jacobian Frobenius norm of the field along ``latent``
        ``[k, batch, T, L]``: means over trajectories of trapezoidal sums over each one's times ``grid``
        ``[batch, T]`` (NaN padding; see the module docstring). Differentiable in the field's parameters and,
        through ``latent``, in everything before it."""
        k, batch, steps, latent_dim = latent.shape
        valid = torch.isfinite(grid)
        times = torch.where(valid, grid, torch.zeros_like(grid))
        # trapezoidal weights: half of each neighbouring gap that lies between two of the trajectory's times
        gaps = torch.where(valid[:, 1:] & valid[:, :-1], times[:, 1:] - times[:, :-1], torch.zeros_like(times[:, 1:]))
        weights = 0.5 * (torch.nn.functional.pad(gaps, (1, 0)) + torch.nn.functional.pad(gaps, (0, 1)))
        weights = weights.to(latent.dtype).repeat(k, 1)
        z = latent.reshape(k * batch * steps, latent_dim)
        if not z.requires_grad:  # a latent outside autograd (no_grad callers): the Jacobian still needs a graph
            z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            field = self.dynamics(times.repeat(k, 1).reshape(-1).to(z.dtype), z)
            terms = {"kinetic_energy": field.pow(2).sum(-1)}
            if self.jacobian_weight:  # a second backward pass: only when it is asked for
                probe = torch.randint(0, 2, field.shape, dtype=field.dtype, device=field.device) * 2 - 1
                (row,) = torch.autograd.grad(field, z, probe, create_graph=True)
                terms["jacobian_frobenius"] = row.pow(2).sum(-1)
        return {name: (term.reshape(k * batch, steps) * weights).sum(-1).mean() for name, term in terms.items()}


def _fraction_bounds(value) -> tuple[float, float] | None:
    """``(low, high)`` of an ``encode_fraction`` (a number is a range of one point); None when invalid."""
    pair = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pair):
        return None
    low, high = float(pair[0]), float(pair[1])
    return (low, high) if 0 < low <= high <= 1 else None


@hookimpl
def register_models(register):
    register("latent_ode", LatentODE)
