"""Reproduce the spirals table of Chen et al. (2018, sec. 5.1, table 2) with neurode's model plugins.

Data, as in the authors' released example (torchdiffeq ``examples/latent_ode.py``):
1000 two-dimensional Archimedean spirals (a = 0, b = 0.3), half clockwise
(centre x = -5, r = b * 50 / (6 pi + 1 - t)) and half counter-clockwise (centre
x = +5, r = b * t), each on 1000 points over t in [0, 6 pi]; a window of 100
consecutive points starts at a random offset (between points 100 and 799),
with Gaussian observation noise sigma = 0.3; window times restart at 0 (the
example's ``samp_ts``). From each window, 30, 50 or 100 observations are drawn
at random (irregular times, a different draw per spiral). The models are
scored on the 100 points that follow the window (extrapolation), by RMSE
against the noisy points (as the observations) and against the clean spiral.

Settings the paper leaves open, stated here: 800 spirals train, 200 test
(one generated set per seed); full-batch Adam, learning rate 0.01 (the
example's), ``--iters`` steps (default 300, sized so that the 18 runs fit about
45 minutes on 2 CPU cores at the step rates of the quick run; the example
runs 2000); latent_ode: latent dimension 4,
GRU recognition network of 25 units read backwards, ``mlp`` dynamics of width
20 and depth 2 with ELU (the example's LatentODEfunc), decoder of width 20,
fixed observation noise 0.3 in the likelihood, one posterior sample, no KL
annealing, dopri5 with rtol 1e-3 and atol 1e-4, predictions decoded from the
posterior mean of z0. RNN baseline: ``rnn_delta_t`` (GRU of 25 units fed
values, mask and time gap), trained on the one-step-ahead squared error of
the same observations, extrapolating by advancing its state with empty
observations. Seeds 0, 1, 2 (data and initialisation); mean and spread
(sample standard deviation) over seeds.

Usage::

    python benchmarks/reproduce_spirals.py --quick          # about 1 minute, a smoke run, writes nothing
    python benchmarks/reproduce_spirals.py --write-readme   # the full table (estimated 45 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from neurode.datasets.batch import Trajectory, collate_padded
from neurode.framework.model import SolveSettings, build_model

#: Chen et al. (2018), table 2: predictive RMSE on the spirals, by number of training observations
PAPER = {"RNN": {30: 0.3937, 50: 0.3202, 100: 0.1813}, "Latent ODE": {30: 0.1642, 50: 0.1502, 100: 0.1346}}
COUNTS = (30, 50, 100)
README_START, README_END = "<!-- spirals-table:start -->", "<!-- spirals-table:end -->"


def spirals(n_spirals: int, seed: int, *, n_total=1000, window=100, horizon=100, stop=6 * math.pi, a=0.0, b=0.3,
            noise_std=0.3):
    """Windows of noisy spirals and the ``horizon`` points after each: times, observed, noisy and clean futures."""
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, stop, n_total)
    angle_cw = stop + 1.0 - ts
    radius_cw = a + b * 50.0 / angle_cw
    clockwise = np.stack([radius_cw * np.cos(angle_cw) - 5.0, radius_cw * np.sin(angle_cw)], axis=1)
    radius_cc = a + b * ts
    counter = np.stack([radius_cc * np.cos(ts) + 5.0, radius_cc * np.sin(ts)], axis=1)
    rotation = rng.permutation(np.arange(n_spirals) % 2)  # exactly half each way
    starts = rng.integers(window, n_total - 2 * window, n_spirals)
    clean = np.stack([(counter if r else clockwise)[s:s + window + horizon] for r, s in zip(rotation, starts,
                                                                                            strict=True)])
    noisy = clean + rng.normal(scale=noise_std, size=clean.shape)
    rel_times = ts[: window + horizon]  # each window's clock starts at 0, as the example's samp_ts
    return rel_times, noisy, clean, rng


def observed_batch(rel_times, noisy, rng, n_obs: int, window=100):
    """A padded batch of ``n_obs`` observations drawn at random from each window."""
    items = []
    for i in range(noisy.shape[0]):
        picks = np.sort(rng.choice(window, size=n_obs, replace=False))
        values = torch.tensor(noisy[i, picks], dtype=torch.float32)
        items.append(Trajectory(index=i, times=torch.tensor(rel_times[picks], dtype=torch.float64), values=values,
                                mask=torch.ones_like(values, dtype=torch.bool), static=torch.zeros(0)))
    return collate_padded(items, feature_names=("x", "y"))


def build(name: str):
    if name == "Latent ODE":
        return build_model("latent_ode", n_features=2, solve=SolveSettings(solver="dopri5", rtol=1e-3, atol=1e-4),
                           dynamics="mlp", dynamics_options={"width": 20, "depth": 2, "activation": "elu"},
                           options={"latent_dim": 4, "encoder": "rnn", "encoder_hidden": 25, "decoder_width": 20,
                                    "noise_std": 0.3})
    return build_model("rnn_delta_t", n_features=2, options={"hidden_size": 25, "decoder_width": 20})


def run_one(name: str, n_obs: int, seed: int, iters: int, n_spirals: int) -> dict:
    rel_times, noisy, clean, rng = spirals(n_spirals, seed)
    n_train = int(0.8 * n_spirals)
    batch = observed_batch(rel_times, noisy, rng, n_obs)
    train = _rows(batch, slice(0, n_train))
    test = _rows(batch, slice(n_train, n_spirals))
    torch.manual_seed(seed)
    model = build(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    started = time.perf_counter()
    for _ in range(iters):
        optimizer.zero_grad()
        loss, _ = model.loss(train)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    future = torch.tensor(rel_times[100:], dtype=torch.float64)
    with torch.no_grad():
        pred = model.predict(test, times=future).double().numpy()
    return {"noisy": float(np.sqrt(np.mean((pred - noisy[n_train:, 100:]) ** 2))),
            "clean": float(np.sqrt(np.mean((pred - clean[n_train:, 100:]) ** 2))),
            "seconds": seconds, "final_loss": float(loss.detach())}


def _rows(batch, rows: slice):
    from dataclasses import fields, replace

    return replace(batch, **{f.name: getattr(batch, f.name)[rows] for f in fields(batch)
                             if isinstance(getattr(batch, f.name), torch.Tensor)},
                   ids=batch.ids[rows])


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(results: dict, seeds: list[int], iters: int, n_spirals: int) -> str:
    lines = [f"Predictive RMSE on the 100 points after each window ({n_spirals} spirals, 80/20 split, {iters} "
             f"full-batch Adam steps, seeds {', '.join(map(str, seeds))}; mean ± sample std over seeds):", "",
             "| model | target | 30 obs | 50 obs | 100 obs |", "| --- | --- | --- | --- | --- |"]
    for name, paper in PAPER.items():
        lines.append(f"| {name} (Chen et al. 2018, table 2) | not stated | "
                     + " | ".join(f"{paper[n]:.4f}" for n in COUNTS) + " |")
    for name in PAPER:
        for target in ("noisy", "clean"):
            cells = [_cell([r[target] for r in results[name][n]]) for n in COUNTS]
            lines.append(f"| {name} (neurode) | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(text: str, readme: Path) -> None:
    content = readme.read_text()
    if README_START not in content or README_END not in content:
        raise SystemExit(f"{readme}: markers {README_START} / {README_END} not found; nothing written")
    head, rest = content.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + README_START + "\n" + text + "\n" + README_END + tail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run under 3 minutes (fewer spirals and steps)")
    parser.add_argument("--iters", type=int, default=None, help="optimiser steps per run (default 300; quick 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; quick 0)")
    parser.add_argument("--spirals", type=int, default=None, help="number of spirals (default 1000; quick 250)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    iters = args.iters or (100 if args.quick else 300)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    n_spirals = args.spirals or (250 if args.quick else 1000)
    results: dict = {name: {n: [] for n in COUNTS} for name in PAPER}
    for seed in seeds:
        for n_obs in COUNTS:
            for name in PAPER:
                row = run_one(name, n_obs, seed, iters, n_spirals)
                results[name][n_obs].append(row)
                print(f"seed {seed} {name:10s} {n_obs:3d} obs: RMSE noisy {row['noisy']:.4f} clean {row['clean']:.4f}"
                      f" (final loss {row['final_loss']:.3f}, {row['seconds']:.1f} s)", flush=True)
    text = table(results, seeds, iters, n_spirals)
    print()
    print(text)
    if args.write_readme:
        if args.quick:
            print("--quick results are a smoke run; the README is not written", file=sys.stderr)
        else:
            write_readme(text, Path(__file__).resolve().parents[1] / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
