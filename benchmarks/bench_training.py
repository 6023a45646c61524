"""Training throughput: neurode's trainer against a plain torchdiffeq training loop.

Same data (the built-in irregular oscillator dataset that bare ``neurode
train`` uses: its training split, normalised with its statistics), same model
(``neural_ode``: an MLP vector field conditioned on the static parameters,
z0 from the first observation), same initial weights, same optimiser (Adam,
lr 1e-2, cosine schedule, gradient clipping at 1), same batches in the same
order, same solver and tolerances (dopri5, rtol 1e-2, atol 1e-3), in the same
process, one thread.

* ``neurode``: ``neurode.train`` itself. Each trajectory is solved on its own
  observation times by the batch-parallel loop (``batch.solve_times()``).
* ``torchdiffeq``: the loop a torchdiffeq user writes. Trajectories cannot
  each have their own grid, so every trajectory's times are shifted to start
  at 0 (exact for this autonomous field) and the batch is solved on the
  sorted union of its times with ``torchdiffeq.odeint``; each trajectory's
  predictions are read from the union grid (Chen et al. 2018 and Rubanova et
  al. 2019 batch irregular data this way).

Reported: median wall time per epoch, NFE per sample per training batch
(rows the vector field evaluated / batch size), and the validation RMSE
(normalised units) of each trained model, evaluated identically.

    python benchmarks/bench_training.py --epochs 30 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import neurode
from neurode.training.builtin_data import builtin_dataset_path
from neurode.training.data import RunData, epoch_order
from neurode.training.metrics import ErrorSums
from neurode.training.trainer import Reporter


class EpochClock(Reporter):
    def __init__(self):
        self.ends: dict[int, float] = {}
        self.nfe: list[float] = []

    def start(self, **kwargs):
        self.t0 = time.perf_counter()

    def step(self, row):
        self.ends[row["epoch"]] = time.perf_counter()
        self.nfe.append(row["nfe_per_sample"])


def epoch_times(start: float, ends: dict[int, float]) -> list[float]:
    marks = [start, *[ends[e] for e in sorted(ends)]]
    return [b - a for a, b in zip(marks, marks[1:])]


def validation_rmse(model, data: RunData, batch_size: int) -> float:
    sums = ErrorSums()
    with torch.no_grad():
        for batch in data.batches("val", batch_size):
            sums.add(model.predict(batch), batch)
    return sums.rmse()


def run_neurode(config: dict) -> dict:
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as root:
        run = neurode.train({**config, "output": {**config["output"], "dir": f"{root}/run"}}, reporter=clock)
        times = epoch_times(clock.t0, clock.ends)
        data = RunData.open(builtin_dataset_path(), normalization=run.normalization)
        model = neurode.load_run(run.path, weights="latest").model
        return {"epoch_s": statistics.median(times), "nfe_per_sample": statistics.mean(clock.nfe),
                "val_rmse": validation_rmse(model, data, 64)}


def run_torchdiffeq(config: dict) -> dict:
    import torchdiffeq

    from neurode.framework.model import SolveSettings, build_model

    data = RunData.open(builtin_dataset_path())
    training = config["training"]
    torch.manual_seed(training.get("seed", 0))
    settings = SolveSettings(rtol=config["solver"]["rtol"], atol=config["solver"]["atol"])
    model = build_model("neural_ode", n_features=data.n_features, n_static=data.n_static, solve=settings,
                        dynamics="mlp")
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2)
    seed = training.get("seed", 0)
    n_train = len(data.splits["train"])
    batch_size, epochs = training["batch_size"], training["epochs"]
    steps = epochs * -(-n_train // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    rows = {"n": 0}
    times, nfe = [], []
    for epoch in range(epochs):
        tick = time.perf_counter()
        for indices in epoch_order(n_train, seed, epoch).split(batch_size):
            batch = data.batch("train", indices.tolist())
            static = batch.static
            shifted = batch.times - batch.times[:, :1]
            union = torch.unique(shifted[batch.time_mask], sorted=True)
            where = torch.searchsorted(union, shifted)

            def field(t, z):
                rows["n"] += z.shape[0]
                return model.dynamics(t, z, static)

            rows["n"] = 0
            optimizer.zero_grad()
            z0 = model.initial_latent(batch)
            ys = torchdiffeq.odeint(field, z0, union, rtol=settings.rtol, atol=settings.atol, method="dopri5")
            pred = ys.gather(0, where.T.unsqueeze(-1).expand(-1, -1, ys.shape[-1])).transpose(0, 1)
            pred = pred[..., : data.n_features]
            observed = batch.mask & batch.time_mask.unsqueeze(-1)
            loss = torch.where(observed, (pred - batch.values) ** 2, 0.0).sum() / observed.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            nfe.append(rows["n"] / batch.batch_size)
        times.append(time.perf_counter() - tick)
    return {"epoch_s": statistics.median(times), "nfe_per_sample": statistics.mean(nfe),
            "val_rmse": validation_rmse(model, data, 64)}


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="initialisation and batch order of both loops; several seeds add a mean ± spread row")
    parser.add_argument("--rtol", type=float, default=1e-2, help="both loops' relative tolerance")
    parser.add_argument("--atol", type=float, default=1e-3, help="both loops' absolute tolerance")
    parser.add_argument("--tangent-control", choices=("auto", "on", "off"), default="auto",
                        help="neurode's solver.tangent_control (auto: the trainer's default, on in training)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tangent = {"auto": None, "on": True, "off": False}[args.tangent_control]
    solver = {"rtol": args.rtol, "atol": args.atol, **({} if tangent is None else {"tangent_control": tangent})}
    rows = []
    for seed in args.seeds:
        # no event files: the torchdiffeq loop logs nothing either
        config = {"training": {"epochs": args.epochs, "batch_size": 32, "seed": seed, "val_every": args.epochs,
                               "checkpoint_every": 10**6},
                  "solver": solver, "runtime": {"threads": args.threads, "device": "cpu"},
                  "output": {"tensorboard": False}}
        result = {"neurode": run_neurode(config), "torchdiffeq": run_torchdiffeq(config)}
        rows.append(result)
        print(f"seed {seed}: " + ", ".join(f"{name} {r['epoch_s']:.3f} s/epoch, val RMSE {r['val_rmse']:.4f}"
                                           for name, r in result.items()), flush=True)
    print(f"\n{args.epochs} epochs, built-in dataset, dopri5 rtol {args.rtol:g} atol {args.atol:g}, "
          f"{args.threads} thread(s), neurode tangent_control {args.tangent_control}\n")
    print("| seed | loop | time per epoch | NFE per sample | validation RMSE |")
    print("| --- | --- | --- | --- | --- |")
    for seed, result in zip(args.seeds, rows):
        base = result["neurode"]["epoch_s"]
        for name, r in result.items():
            print(f"| {seed if name == 'neurode' else ''} | {name} | {r['epoch_s']:.3f} s ({r['epoch_s'] / base:.2f}x) "
                  f"| {r['nfe_per_sample']:.1f} | {r['val_rmse']:.4f} |")
    if len(rows) > 1:
        speedups = [r["torchdiffeq"]["epoch_s"] / r["neurode"]["epoch_s"] for r in rows]
        for name in ("neurode", "torchdiffeq"):
            rmse = [r[name]["val_rmse"] for r in rows]
            speed = f"median speed-up {statistics.median(speedups):.2f}x" if name == "torchdiffeq" else ""
            print(f"| mean ± sd | {name} | {speed} | {statistics.mean(r[name]['nfe_per_sample'] for r in rows):.1f} "
                  f"| {_mean_spread(rmse)} |")
        wins = sum(r["neurode"]["val_rmse"] <= r["torchdiffeq"]["val_rmse"] for r in rows)
        print(f"\nneurode's validation RMSE is lower or equal at {wins} of {len(rows)} seeds")


if __name__ == "__main__":
    main()
