"""Reproduce the spirals table of Chen et al. (2018, sec. 5.1, table 2) with neurode's model plugins.

Data, as in the authors' released example (torchdiffeq ``examples/latent_ode.py``):
1000 two-dimensional Archimedean spirals (a = 0, b = 0.3), half clockwise
(centre x = -5, r = b * 50 / (6 pi + 1 - t)) and half counter-clockwise (centre
x = +5, r = b * t), each on 1000 points over t in [0, 6 pi]; a window of 100
consecutive points starts at a random offset, with Gaussian observation noise
sigma = 0.3; window times restart at 0 (the example's ``samp_ts``). Training
windows start between points 100 and 899, as the example draws them (the
last ends on point 999); test windows between 100 and 799, which leaves room
for the 100 scored points after each. From each window, 30, 50 or 100 observations are drawn
at random (irregular times, a different draw per spiral). The models are
scored on the 100 points that follow the window (extrapolation), by RMSE
against the noisy points (as the observations) and against the clean spiral.

Settings the paper leaves open, stated here (all in :class:`Settings`):

- Split and seeds: 800 spirals train, 200 test (one generated set per seed;
  the test spirals' windows are never trained on, and nothing after a
  training window exists: those points are NaN); seeds 0, 1, 2 set the
  data, the observation draws, the initialisation and the minibatch order;
  mean and spread (sample standard deviation) over seeds.
- Where training windows start: up to point 899 as in the example, not only
  up to 799 as the test windows must. With every window up to 799, no
  training observation lies past point 899, while the test futures run to
  999, where the clockwise spiral's radius (15 / angle) grows from 5.2 to
  15: the 14 % of test spirals whose future reaches there were predicted by
  a flow that had never seen such states (the predicted radius stalls near
  5) and scored 1.0 to 1.3 against 0.24 to 0.27 for the rest, half of all
  squared error (seed 0, 30 observations, 2000 steps). The benchmark asks
  the model to continue a spiral past its own window, not to invent states
  no training window shows; the second table gives the error over futures
  past every training window (about none now).
- Normalisation: the spirals span about +-10, and a latent ODE trained on
  raw coordinates at lr 0.01 learns slowly, so the models see coordinates
  centred per axis and divided by one common scale (the RMS of the centred
  training observations, about 4.5: one scale keeps the spirals circular);
  the likelihood's noise is 0.3 divided by that scale, and predictions are
  mapped back before scoring.
- Optimiser: Adam, learning rate 0.01 decayed exponentially to 0.001 over
  the run, minibatches of 100 spirals (reshuffled every epoch). In short
  runs, minibatches converged faster per second than full-batch steps (a
  step of 100 spirals costs about a third of a step of 800): 0.60 against
  1.14 clean RMSE after about two minutes each. Half a cosine from 0.01 to
  0.001 instead (``schedule="cosine"``, which stays near the first rate
  longer) fitted the training windows better (final loss -56.4 against
  -55.4) but not the futures: 0.265 against 0.260 clean after 3000 steps
  (seed 0, 30 observations). Minibatches of 200 cost 1.7 times as much per
  step.
- Latent ODE: latent dimension 4; recognition network ``rnn``, a GRU of 25
  units fed [value, mask, time gap] over the observations read backwards,
  whose last state gives q(z0); dynamics ``mlp`` of width 40 and depth 2 with
  ELU (the example's LatentODEfunc is width 20: width 40 reached 0.54 against
  0.70 after 750 steps); a *linear* decoder (``decoder_depth=0``; the example
  has one ReLU layer of 20: 0.58 against 0.59 after 2000 steps, 0.82 against
  0.97 after 500), which leaves every nonlinearity to the latent flow; fixed observation noise; one
  posterior sample; no KL annealing; the Jacobian regulariser at weight
  0.001, none at 100 observations (below); 15,000 steps, 10,000 at 100
  observations; predictions decoded from the posterior mean
  of z0. Tried after 3000 steps (seed 0, 30 observations,
  clean RMSE 0.260 with these settings; the cost per step measured back to
  back, since the machine was shared): dynamics of depth 3, 0.232 (quarters
  0.18, 0.20, 0.24, 0.29) at twice the cost per step, so it buys less than
  doubling the steps of depth 2 does (0.208 after 6000); width 64, 0.269;
  latent dimension 6, 0.423 (slower to fit, as 8 was). The ``ode_rnn``
  recognition network (Rubanova et al., 2019) costs ten times as much per
  step here (100 steps: 30 s against 3 s), its GRU state solved by dopri5
  between every pair of observations: 10,000 steps at the cost of its
  first 100 would take 50 minutes per run, nine runs per table, outside the
  budget (Rubanova et al.'s code steps that ODE with
  Euler; the encoder's solver is the latent one's here).
- Training objective: the extrapolation objective of Rubanova, Chen and
  Duvenaud (2019, sec. 4), ``encode_fraction=[0.25, 1]``: at every step the
  encoder reads each training window up to a cut-off drawn uniformly
  between its first quarter and its end, and the likelihood scores the decoded
  trajectory on the whole window, so the latent flow must carry the state
  forward rather than the encoder summarise the points it is scored on.
  Seed 0, 30 observations, 2000 steps, clean RMSE (quarters of the 100
  scored points): whole windows 0.415 (0.22, 0.31, 0.43, 0.60), [0.5, 1]
  0.368 (0.25, 0.31, 0.38, 0.49). A *fixed* cut-off is worse (0.5: 0.71
  against 0.52 for whole windows, then with every window before point 800):
  the encoder never sees a whole window in training and misreads the whole
  ones it is given in ``predict`` (first quarter 0.59 against 0.21).
  Cut-offs from the first quarter on let the flow carry the state up to 75
  points past what the encoder read (50 from the middle): after 3000 steps
  [0.25, 1] scored 0.252 (0.18, 0.22, 0.26, 0.33) against 0.260 (0.18,
  0.22, 0.27, 0.34) for [0.5, 1], the later quarters a little lower (one
  seed: within run-to-run spread, and free, so kept).
- Length: the step count moved the error most. Seed 0, clean RMSE: 2000
  steps 0.368, 3000 steps 0.260 (quarters 0.18, 0.22, 0.27, 0.34), 6000
  steps 0.208, and 10,000 steps (with cut-offs from the first quarter)
  0.166 (0.135, 0.151, 0.172, 0.200) at 30 observations; at 100
  observations 0.148 after 3000 and 0.134 after 6000. The spread over seeds
  is as large as these gains: seed 1 scored 0.267 after 10,000 steps (0.138,
  0.184, 0.272, 0.398; training loss -57.5 against -60.6 for seed 0), the
  same first quarter, a flow that drifts. 6000 steps took 23 minutes for the
  table on two idle cores (a seed's three counts about 11 minutes on one
  thread); 10,000 scale that to about 37. Without the regulariser, 15,000
  steps gave seed 0 0.155 and 0.116 at 30 and 50 observations, seed 1
  0.1405, 0.132 and 0.102 at 30, 50 and 100, but the field's growing cost
  put the table over the 45 minutes; with it, 15,000 steps are the
  setting at 30 and 50 observations. At 100 observations the runs are
  10,000 steps (``iters_100``) without the regulariser
  (``jacobian_weight_100 = 0``): a step there costs almost twice one at 30
  (the encoder, the likelihood and the regulariser's second backward pass
  over 100 times, 14 ms of it: seed 0 took 1000 s for 15,000 steps with
  it, 0.0991 clean), and there it did not pay: with it 0.1266 / 0.1865 /
  0.0816 after 10,000 steps, without it 0.1292 / 0.1205 / 0.0764 in about
  half the time (the flow does not drift when every window holds 100
  points). The table takes 34 minutes as two processes; with the
  regulariser at 100 observations it took 46.7. 12,000 steps at 50
  observations (``iters_50``) scored 0.1434 against 15,000's 0.1216 and
  saved 1.3 minutes: not taken. Tried and left:
  latent dimension 8 (0.54 after 2000 steps: slower to fit), a GRU of 50
  units (0.33 after 2000 steps and 0.33 after 3000, within run-to-run spread).
- Solver: dopri5, rtol 1e-3, atol 1e-4 (normalised units), ``direct``
  gradients, tangent control *off*: it guards the gradient where a solution
  is locally trivial (a state at rest, whose error estimates vanish and whose
  steps grow without bound); here z0 is a posterior sample, every latent
  moves, and the controller's steps stay small (about 20 evaluations per
  window), so it would double the forward solve for nothing.
- Cost, and the Jacobian regulariser: a step's time is the latent solve's,
  forward and backward. The per-sample dopri5 loop runs until the
  minibatch's hardest trajectory is done, each iteration a few small
  operations, so the time follows the evaluations of the batch (``nfe``;
  the mean per trajectory is lower): on one thread, about 7 ms plus 0.4 ms
  per evaluation. Without a regulariser (seed 0, 30 observations) the
  learned field grows costlier as it fits: 27 evaluations per step at step
  500, 79 at 5000, 145 at 10,000, 162 at 11,000 (CPU 18, 41, 60, 70 ms a
  step), so the last third of a 15,000-step run costs about as much as the
  first two. From that run's 10,000-step weights, 100 or 200 further steps
  each: rtol 1e-2, atol 1e-3 took 118 evaluations a step against 150 (CPU
  60 against 67 ms; the weights' predictions as good, 0.1632 against
  0.1628), rtol 3e-3, atol 3e-4 took 140, the kinetic energy of Finlay et
  al. (2020) at weight 0.01 143 (unchanged after 200 steps), and their
  Jacobian Frobenius norm (``jacobian_weight``, Hutchinson's estimate on the
  solve times) at 0.01 67 (56 after 100 steps; 0.001: 92 after 200), the
  field reshaped to one about a third as costly within a hundred steps.
  Trained with it from the start (seed 0, 30 observations, 15,000 steps;
  CPU seconds on a shared machine): none, 0.155 clean (an earlier run) in
  about 800 s (extrapolated: 482 s to step 11,000, where this run was
  stopped, then 70 ms a step and rising); weight 0.01 0.1657
  (0.137, 0.153, 0.170, 0.197) in 497 s, about 40 evaluations a step
  throughout, a fit held back (the 10,000-step run's error); weight 0.001
  0.1487 (0.125, 0.138, 0.153, 0.175) in 565 s, 64 to 66 evaluations a
  step from step 2000 to the end, training loss -61.4. So ``jacobian_weight
  = 0.001``: a better extrapolation and about 0.7 of the time, the field's
  cost held where the unregularised one's starts to climb. The regulariser
  itself (a field evaluation and a second backward pass at each
  trajectory's solve times) costs 4 ms a step at 30 observations, 7 at 50
  and 14 at 100. Seed 0 with these settings: 100 observations 0.0991 in
  1000 s, 50 observations 0.1249 in 585 s (30: 0.1487 in 565 s), 2150 s
  for the three on a shared machine: a table of 41 to 55 minutes as two
  processes at that speed (seeds 1 and 2 at the 0.54 to 0.71 of seed 0's
  time they took without the regulariser, or at seed 0's). Seed 1 at 30
  observations: 0.1404 in 377 s (0.67 of seed 0's; 0.267 after 10,000
  steps without the regulariser, its drift gone).
- RNN baseline: ``rnn_delta_t`` (a GRU of 25 units fed values, mask and time
  gap, decoder of width 20), same data, normalisation, optimiser and
  schedule, 600 steps, trained on the one-step-ahead squared error of the
  observations. It extrapolates autoregressively (:func:`rollout`): each
  forecast is read as the next observation, so every step crosses one grid
  gap as in training. Jumping from the last observation straight to each
  future time (the model's own ``predict`` beyond the data) crosses gaps up
  to 1.9, ten to thirty times any gap seen in training, and scored about
  2.4 (clean, seed 0, 30 observations): no better than a constant.
- Scoring: RMSE over the 100 points after each window, both coordinates, in
  the spirals' own units, against the noisy points (as the observations) and
  against the clean spiral. The observation noise (sigma = 0.3) bounds the
  first from below by about 0.3, so the paper's numbers (0.16 to 0.13) can
  only be met against the clean spiral.

Usage::

    python benchmarks/reproduce_spirals.py --quick                    # under 3 minutes, a smoke run, writes nothing
    python benchmarks/reproduce_spirals.py --jobs 2 --write-readme    # the benchmark: the table, two processes
    # or by hand, one process per seed (and count), then the one table of them all:
    python benchmarks/reproduce_spirals.py --seeds 0 --rows runs0.jsonl   # (and 1, 2; --counts 30 50 ...)
    python benchmarks/reproduce_spirals.py --merge runs0.jsonl runs1.jsonl runs2.jsonl --write-readme
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from readme_table import publish

from neurode.datasets.batch import Trajectory, collate_padded
from neurode.framework.model import SolveSettings, build_model

#: Chen et al. (2018), table 2: predictive RMSE on the spirals, by number of training observations
PAPER = {"RNN": {30: 0.3937, 50: 0.3202, 100: 0.1813}, "Latent ODE": {30: 0.1642, 50: 0.1502, 100: 0.1346}}
COUNTS = (30, 50, 100)
NOISE_STD = 0.3
README_START, README_END = "<!-- spirals-table:start -->", "<!-- spirals-table:end -->"


def spirals(n_spirals: int, seed: int, **settings):
    """Windows of noisy spirals and the ``horizon`` points after each: times, observed, noisy and clean futures."""
    return spiral_windows(n_spirals, seed, **settings)[:4]


def spiral_windows(n_spirals: int, seed: int, *, n_total=1000, window=100, horizon=100, stop=6 * math.pi, a=0.0,
                   b=0.3, noise_std=NOISE_STD, n_train=0, train_start_max=None):
    """:func:`spirals` and, per spiral, its window's first point on the 1000 and its rotation (1: counter-clockwise).

    The first ``n_train`` spirals (training, never scored) may start up to ``train_start_max`` (inclusive;
    the example's ``n_total - window - 1`` puts a window's last point on the last of the 1000); their
    futures are NaN, so no score and no training step can read them.
    """
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, stop, n_total)
    angle_cw = stop + 1.0 - ts
    radius_cw = a + b * 50.0 / angle_cw
    clockwise = np.stack([radius_cw * np.cos(angle_cw) - 5.0, radius_cw * np.sin(angle_cw)], axis=1)
    radius_cc = a + b * ts
    counter = np.stack([radius_cc * np.cos(ts) + 5.0, radius_cc * np.sin(ts)], axis=1)
    rotation = rng.permutation(np.arange(n_spirals) % 2)  # exactly half each way
    if train_start_max is None:
        starts = rng.integers(window, n_total - 2 * window, n_spirals)
    else:
        starts = rng.integers(window, np.where(np.arange(n_spirals) < n_train, train_start_max + 1,
                                               n_total - 2 * window))
    # NaN past the last point, where a training window's future would lie
    curves = [np.concatenate([curve, np.full((horizon, 2), np.nan)]) for curve in (clockwise, counter)]
    clean = np.stack([curves[r][s:s + window + horizon] for r, s in zip(rotation, starts, strict=True)])
    if train_start_max is not None:
        clean[:n_train, window:] = np.nan
    noisy = clean + rng.normal(scale=noise_std, size=clean.shape)
    rel_times = ts[: window + horizon]  # each window's clock starts at 0, as the example's samp_ts
    return rel_times, noisy, clean, rng, starts, rotation


def observed_batch(rel_times, noisy, rng, n_obs: int, window=100):
    """A padded batch of ``n_obs`` observations drawn at random from each window."""
    items = []
    for i in range(noisy.shape[0]):
        picks = np.sort(rng.choice(window, size=n_obs, replace=False))
        values = torch.tensor(noisy[i, picks], dtype=torch.float32)
        items.append(Trajectory(index=i, times=torch.tensor(rel_times[picks], dtype=torch.float64), values=values,
                                mask=torch.ones_like(values, dtype=torch.bool), static=torch.zeros(0)))
    return collate_padded(items, feature_names=("x", "y"))


@dataclass(frozen=True)
class Settings:
    """What the paper leaves open (the module docstring says why each is what it is)."""

    iters: int = 15000
    #: Latent ODE steps at 50 observations (``None``: ``iters``)
    iters_50: int | None = None
    #: Latent ODE steps at 100 observations (``None``: ``iters``): the widest margin and the costliest step
    iters_100: int | None = 10000
    batch_size: int = 100
    lr: float = 0.01
    lr_end: float = 0.001
    schedule: str = "exponential"
    rnn_iters: int = 600
    latent_dim: int = 4
    encoder: str = "rnn"
    width: int = 40
    depth: int = 2
    encoder_hidden: int = 25
    decoder_width: int = 20
    decoder_depth: int = 0
    rtol: float = 1e-3
    atol: float = 1e-4
    tangent_control: bool = False
    encode_fraction: float | tuple[float, float] = (0.25, 1.0)
    train_start_max: int = 899
    kinetic_weight: float = 0.0
    jacobian_weight: float = 0.001
    #: the Jacobian regulariser's weight at 100 observations (``None``: ``jacobian_weight``)
    jacobian_weight_100: float | None = 0.0


#: the smoke run of ``--quick``: far from converged, its numbers are not a result
QUICK = Settings(iters=150, iters_50=None, iters_100=None, jacobian_weight_100=None, rnn_iters=100)


def build(name: str, settings: Settings, noise_std: float):
    if name == "Latent ODE":
        solve = SolveSettings(solver="dopri5", rtol=settings.rtol, atol=settings.atol,
                              tangent_control=settings.tangent_control)
        return build_model("latent_ode", n_features=2, solve=solve, dynamics="mlp",
                           dynamics_options={"width": settings.width, "depth": settings.depth, "activation": "elu"},
                           options={"latent_dim": settings.latent_dim, "encoder": settings.encoder,
                                    "encoder_hidden": settings.encoder_hidden,
                                    "decoder_width": settings.decoder_width,
                                    "decoder_depth": settings.decoder_depth, "noise_std": noise_std,
                                    "encode_fraction": settings.encode_fraction,
                                    "kinetic_weight": settings.kinetic_weight,
                                    "jacobian_weight": settings.jacobian_weight})
    return build_model("rnn_delta_t", n_features=2, options={"hidden_size": settings.encoder_hidden,
                                                             "decoder_width": settings.decoder_width})


def run_one(name: str, n_obs: int, seed: int, settings: Settings, n_spirals: int) -> dict:
    n_train = int(0.8 * n_spirals)
    rel_times, noisy, clean, rng, starts, rotation = spiral_windows(n_spirals, seed, n_train=n_train,
                                                                    train_start_max=settings.train_start_max)
    batch = observed_batch(rel_times, noisy, rng, n_obs)
    # one centre per coordinate and one scale for both (the spirals stay circles), from the
    # training observations only; the models see and predict normalised coordinates
    observed = batch.values[:n_train]
    centre = observed.mean(dim=(0, 1))
    scale = float((observed - centre).pow(2).mean().sqrt())
    batch = replace(batch, values=(batch.values - centre) / scale)
    train = _rows(batch, torch.arange(n_train))
    test = _rows(batch, torch.arange(n_train, n_spirals))
    torch.manual_seed(seed)
    settings = for_count(settings, n_obs)
    model = build(name, settings, NOISE_STD / scale)
    iters = settings.iters if name == "Latent ODE" else settings.rnn_iters
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(settings.schedule, step, iters, settings.lr_end / settings.lr))
    draws = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_train, generator=draws)
    started = time.perf_counter()
    for step in range(iters):
        first = (step * settings.batch_size) % n_train
        if first + settings.batch_size > n_train:  # a new epoch: a new order
            order, first = torch.randperm(n_train, generator=draws), 0
        optimizer.zero_grad()
        loss, _ = model.loss(_rows(train, order[first:first + settings.batch_size]))
        loss.backward()
        optimizer.step()
        decay.step()
    seconds = time.perf_counter() - started
    model.eval()
    future = torch.tensor(rel_times[100:], dtype=torch.float64)
    with torch.no_grad():
        pred = model.predict(test, times=future) if name == "Latent ODE" else rollout(model, test, future)
        pred = (pred * scale + centre).double().numpy()
    clean_error = (pred - clean[n_train:, 100:]) ** 2
    beyond = beyond_training(starts, rotation, n_train)
    return {"noisy": float(np.sqrt(np.mean((pred - noisy[n_train:, 100:]) ** 2))),
            "clean": float(np.sqrt(np.mean(clean_error))),
            # diagnostics of the clean RMSE: over each quarter of the 100 predicted points (how the error
            # grows with distance), and over the test spirals whose future stays inside the stretch of
            # their spiral the training windows cover, or runs past it
            "quarters": [float(np.sqrt(np.mean(q))) for q in np.array_split(clean_error, 4, axis=1)],
            "inside": float(np.sqrt(np.mean(clean_error[~beyond]))),
            "beyond": float(np.sqrt(np.mean(clean_error[beyond]))) if beyond.any() else math.nan,
            "n_beyond": int(beyond.sum()),
            "n_test": int(beyond.size),
            "seconds": seconds, "final_loss": float(loss.detach())}


SCHEDULES = ("exponential", "cosine")


def for_count(settings: Settings, n_obs: int) -> Settings:
    """The settings of a run at ``n_obs`` observations per window: the per-count fields resolved into
    ``iters`` and ``jacobian_weight`` (and cleared)."""
    iters = {50: settings.iters_50, 100: settings.iters_100}.get(n_obs)
    weight = settings.jacobian_weight_100 if n_obs == 100 else None
    return replace(settings, iters=settings.iters if iters is None else iters,
                   jacobian_weight=settings.jacobian_weight if weight is None else weight,
                   iters_50=None, iters_100=None, jacobian_weight_100=None)


def lr_factor(schedule: str, step: int, iters: int, end: float) -> float:
    """The learning rate at ``step`` of ``iters`` as a fraction of the first, falling to ``end`` at the last step.

    ``exponential``: ``end ** (step / iters)``; ``cosine``: half a cosine from 1 to ``end`` (Loshchilov and
    Hutter, 2017, eq. 5, one cycle), which stays near the first rate longer and ends as low.
    """
    progress = min(step / iters, 1.0)
    if schedule == "exponential":
        return end**progress
    if schedule == "cosine":
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def beyond_training(starts: np.ndarray, rotation: np.ndarray, n_train: int, window=100, horizon=100) -> np.ndarray:
    """Which test spirals' futures run past the last point of their spiral any training window reaches.

    Windows start at most at point 799, so training observations end by point 899 while a future runs
    to 999: there the clockwise spiral's radius (15 / angle) grows from 5.2 to 15, states no window shows.
    """
    reach = {r: int(starts[:n_train][rotation[:n_train] == r].max()) + window - 1 for r in (0, 1)}
    test_starts, test_rotation = starts[n_train:], rotation[n_train:]
    return np.array([s + window + horizon - 1 > reach[int(r)]
                     for s, r in zip(test_starts, test_rotation, strict=True)])


def rollout(model, batch, future: torch.Tensor) -> torch.Tensor:
    """Autoregressive extrapolation ``[batch, T, F]`` of a one-step-ahead forecaster.

    The forecast at each future time is read as an observation before the next
    one is made, so every step crosses one grid gap, as in training.
    """
    if not bool(batch.time_mask.all()):
        raise ValueError("rollout appends forecasts after each trajectory's last column: it needs unpadded batches")
    forecasts = []
    for k in range(future.shape[0]):
        step = model.predict(batch, times=future[k:k + 1])
        forecasts.append(step)
        batch = replace(batch, times=torch.cat([batch.times, future[k].expand(batch.batch_size, 1)], dim=1),
                        values=torch.cat([batch.values, step], dim=1),
                        mask=torch.cat([batch.mask, torch.ones_like(step, dtype=torch.bool)], dim=1),
                        time_mask=torch.cat([batch.time_mask, batch.time_mask[:, :1]], dim=1))
    return torch.cat(forecasts, dim=1)


def _rows(batch, rows: torch.Tensor):
    """The trajectories ``rows`` (an index tensor) of a padded batch."""
    return replace(batch, **{f.name: getattr(batch, f.name)[rows] for f in fields(batch)
                             if isinstance(getattr(batch, f.name), torch.Tensor)},
                   ids=tuple(batch.ids[i] for i in rows.tolist()))


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _lengths(settings: Settings) -> str:
    """The Latent ODE's training, for the table's caption: steps per count and the regulariser where it differs."""
    per_count = [for_count(settings, n) for n in COUNTS]
    steps = {s.iters for s in per_count}
    text = (str(settings.iters) if len(steps) == 1 else
            " / ".join(str(s.iters) for s in per_count) + " at " + " / ".join(map(str, COUNTS)) + " observations")
    weights = {s.jacobian_weight for s in per_count}
    if len(weights) > 1:
        text += " (Jacobian regulariser " + ", ".join(f"{s.jacobian_weight:g} at {n}"
                                                     for s, n in zip(per_count, COUNTS, strict=True)) + ")"
    return text


def table(results: dict, seeds: list[int], settings: Settings, n_spirals: int) -> str:
    lines = [f"Predictive RMSE on the 100 points after each window ({n_spirals} spirals, 80/20 split, "
             f"{_lengths(settings)} Adam steps (RNN {settings.rnn_iters}) on minibatches of {settings.batch_size}, "
             f"seeds {', '.join(map(str, seeds))}; mean ± sample std over seeds):", "",
             "| model | target | 30 obs | 50 obs | 100 obs |", "| --- | --- | --- | --- | --- |"]
    for name, paper in PAPER.items():
        lines.append(f"| {name} (Chen et al. 2018, table 2) | not stated | "
                     + " | ".join(f"{paper[n]:.4f}" for n in COUNTS) + " |")
    for name in PAPER:
        for target in ("noisy", "clean"):
            cells = [_cell([r[target] for r in results[name][n]]) for n in COUNTS]
            lines.append(f"| {name} (neurode) | {target} | " + " | ".join(cells) + " |")
    runs = results["Latent ODE"]
    lines += ["", "Where the Latent ODE's clean error lies (mean over seeds): by quarter of the 100 predicted points; "
              "over the test spirals whose future stays on the stretch of their spiral that training windows "
              "cover, and over those whose future runs past it (into states no training window shows):", "",
              "| observations | 1st quarter | 2nd | 3rd | 4th | future covered | future past (spirals) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for n in COUNTS:
        quarters = [statistics.mean(r["quarters"][q] for r in runs[n]) for q in range(4)]
        inside = statistics.mean(r["inside"] for r in runs[n])
        past = [r["beyond"] for r in runs[n] if r["n_beyond"]]
        lines.append(f"| {n} | " + " | ".join(f"{q:.3f}" for q in quarters) + f" | {inside:.3f} | "
                     + (f"{statistics.mean(past):.3f}" if past else "none")
                     + f" ({statistics.mean(r['n_beyond'] for r in runs[n]):.1f} of {runs[n][0]['n_test']}) |")
    return "\n".join(lines)


def plan(seeds: list[int], counts: list[int]) -> list[tuple[int, str, int]]:
    """The runs ``(seed, model, n_obs)`` of a table, the costliest first: the Latent ODE before the RNN, more
    observations before fewer, then by seed.

    With several workers, a long run started last would leave the others idle at the end; started first, the
    short ones fill in around it (the longest-processing-time-first rule of list scheduling).
    """
    return sorted(((seed, name, n_obs) for seed in seeds for n_obs in counts for name in PAPER),
                  key=lambda run: (run[1] != "Latent ODE", -run[2], run[0]))


class RunFailed(RuntimeError):
    """A run of the table raised: names the run and the error."""


def execute(runs, settings: Settings, n_spirals: int, *, jobs: int = 1, threads: int = 1):
    """Yield ``(run, result)`` for each ``(seed, model, n_obs)`` of ``runs``, as each finishes.

    ``jobs=1`` runs them here, in order; more spread them over that many worker processes ("spawn": a
    fresh interpreter, no forked torch state), each with ``threads`` torch threads, handed out one at a
    time in the order of ``runs``. Runs are seeded and independent, so a run's result does not depend on
    the process it ran in. Whatever ends the loop early (a failed run, Ctrl-C, SIGTERM: :func:`main`
    turns it into ``SystemExit``, or the caller closing the generator) terminates the workers and the
    runs they are in: none is left running on its own.
    """
    if jobs == 1:
        for run in runs:
            yield run, _attempt(run, settings, n_spirals)
        return
    context = multiprocessing.get_context("spawn")
    # Pool.__exit__ terminates its workers (a ProcessPoolExecutor would wait for their runs to finish)
    with context.Pool(jobs, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        yield from pool.imap_unordered(partial(_attempt_pair, settings=settings, n_spirals=n_spirals), runs,
                                       chunksize=1)


def _attempt_pair(run: tuple[int, str, int], settings: Settings, n_spirals: int) -> tuple[tuple[int, str, int], dict]:
    return run, _attempt(run, settings, n_spirals)


def _attempt(run: tuple[int, str, int], settings: Settings, n_spirals: int) -> dict:
    seed, name, n_obs = run
    try:
        return run_one(name, n_obs, seed, settings, n_spirals)
    except Exception as error:  # the worker's traceback would not name the run
        raise RunFailed(f"seed {seed} {name} {n_obs} obs failed: {type(error).__name__}: {error}") from None


def timing(wall: float, jobs: int, threads: int, results: dict) -> str:
    """The line under the table: its wall time, the processes it ran as, and what each model's runs took."""
    per_model = {name: sum(row["seconds"] for cell in by_count.values() for row in cell)
                 for name, by_count in results.items()}
    longest = max(row["seconds"] for cell in results["Latent ODE"].values() for row in cell)
    return (f"Wall time {wall / 60:.1f} minutes as {jobs} worker process{'es' if jobs > 1 else ''} of "
            f"{threads} thread{'s' if threads > 1 else ''} each; training time of the runs summed: Latent ODE "
            f"{per_model['Latent ODE'] / 60:.1f} min (longest run {longest:.0f} s), "
            f"RNN {per_model['RNN'] / 60:.1f} min.")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run under 3 minutes (fewer spirals and steps)")
    parser.add_argument("--iters", type=int, default=None,
                        help=f"Latent ODE optimiser steps per run, every count (default {Settings.iters}, at 50 "
                             f"observations {Settings.iters_50}, at 100 {Settings.iters_100}; quick {QUICK.iters})")
    parser.add_argument("--rnn-iters", type=int, default=None,
                        help=f"RNN optimiser steps per run (default {Settings.rnn_iters}; quick {QUICK.rnn_iters})")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; quick 0)")
    parser.add_argument("--spirals", type=int, default=None, help="number of spirals (default 1000; quick 250)")
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS), choices=COUNTS,
                        help="observation counts to run (default all; with --rows, for --merge)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--jobs", type=_positive, default=1,
                        help="worker processes the runs spread over, the costliest first (default 1: in this process)")
    parser.add_argument("--rows", type=Path, default=None,
                        help="also append each run's result to this JSON-lines file (for --merge)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="train nothing: the table of the runs recorded by --rows in these files (e.g. one "
                             "process per seed)")
    parser.add_argument("--write-readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    if args.merge:
        try:
            results, seeds, settings, n_spirals, quick = merge(args.merge)
        except (OSError, ValueError) as error:
            print(f"reproduce_spirals: {error}", file=sys.stderr)
            return 1
        publish(table(results, seeds, settings, n_spirals), quick=quick, write=args.write_readme,
                start=README_START, end=README_END)
        return 0
    torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else Settings()
    if args.iters:
        settings = replace(settings, iters=args.iters, iters_50=None, iters_100=None)
    if args.rnn_iters:
        settings = replace(settings, rnn_iters=args.rnn_iters)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    n_spirals = args.spirals or (250 if args.quick else 1000)
    if args.write_readme and sorted(set(args.counts)) != list(COUNTS):
        print("reproduce_spirals: --write-readme needs every count; run the others and --merge", file=sys.stderr)
        return 1
    runs = plan(seeds, args.counts)
    # a plain SIGTERM would end this process and leave the workers running their runs to the end
    previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm) if args.jobs > 1 else None
    results: dict = {name: {n: [] for n in COUNTS} for name in PAPER}
    started = time.perf_counter()
    try:
        for (seed, name, n_obs), row in execute(runs, settings, n_spirals, jobs=args.jobs, threads=args.threads):
            results[name][n_obs].append((seed, row))
            print(f"seed {seed} {name:10s} {n_obs:3d} obs: RMSE noisy {row['noisy']:.4f} clean {row['clean']:.4f}"
                  f" (final loss {row['final_loss']:.3f}, {row['seconds']:.1f} s)", flush=True)
            if args.rows:
                record = {"seed": seed, "model": name, "n_obs": n_obs, "n_spirals": n_spirals,
                          "quick": args.quick, "settings": asdict(settings), "result": row}
                # one write of one whole line per run, flushed: a killed process loses at most the runs it was in
                with args.rows.open("a") as stream:
                    stream.write(json.dumps(record) + "\n")
                    stream.flush()
                    os.fsync(stream.fileno())
    except RunFailed as error:
        print(f"reproduce_spirals: {error}", file=sys.stderr)
        return 1
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    wall = time.perf_counter() - started
    # runs finish in any order; the table lists each cell's runs by seed, as a serial run appends them
    results = {name: {n: [row for _, row in sorted(cell, key=lambda pair: pair[0])] for n, cell in by_count.items()}
               for name, by_count in results.items()}
    print(f"wall time {wall:.0f} s ({wall / 60:.1f} min) for {len(runs)} runs as {args.jobs} process(es)", flush=True)
    if sorted(set(args.counts)) != list(COUNTS):
        return 0  # part of a table: --merge makes it
    text = table(results, seeds, settings, n_spirals) + "\n\n" + timing(wall, args.jobs, args.threads, results)
    print()
    publish(text, quick=args.quick, write=args.write_readme, start=README_START, end=README_END)
    return 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def merge(paths: list[Path]) -> tuple[dict, list[int], Settings, int, bool]:
    """The results of the runs recorded in ``paths`` by ``--rows``; they must share settings and spirals."""
    records = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line written by --rows ({error})") from None
    if not records:
        raise ValueError(f"no runs recorded in {', '.join(map(str, paths))}")
    first = records[0]
    for record in records[1:]:
        for key in ("settings", "n_spirals", "quick"):
            if record[key] != first[key]:
                raise ValueError(f"runs with different {key}: {record[key]!r} and {first[key]!r}; merge one setting")
    seeds = sorted({r["seed"] for r in records})
    results: dict = {name: {n: [] for n in COUNTS} for name in PAPER}
    for record in sorted(records, key=lambda r: r["seed"]):
        results[record["model"]][record["n_obs"]].append(record["result"])
    missing = [f"{name} {n} obs" for name in PAPER for n in COUNTS if len(results[name][n]) != len(seeds)]
    if missing:
        raise ValueError(f"not every run has every seed {seeds}: {', '.join(missing)}")
    # JSON has no tuples: a range setting comes back as a list
    settings = Settings(**{key: tuple(value) if isinstance(value, list) else value
                           for key, value in first["settings"].items()})
    return results, seeds, settings, first["n_spirals"], first["quick"]


if __name__ == "__main__":
    sys.exit(main())
