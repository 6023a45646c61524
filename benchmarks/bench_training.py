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

``--model latent_ode`` instead times Latent ODE training on the spirals in the
setting of torchdiffeq's own ``examples/latent_ode.py`` (Chen et al. 2018,
sec. 5.1): 1000 noisy spirals (``reproduce_spirals.spirals``), each window of
100 observations at the same times, full batch, dopri5 at the example's
tolerances (torchdiffeq's defaults, rtol 1e-7, atol 1e-9), Adam at lr 0.01,
latent dimension 4, dynamics MLP of width 20 with ELU, recognition network of
25 units, decoder of width 20, observation noise 0.3 in the likelihood; the
loss is the negative ELBO with the analytic KL, averaged over spirals.

* ``torchdiffeq``: the example's RecognitionRNN (a tanh RNN over the
  observations read backwards), LatentODEfunc, Decoder and loss, written here
  against plain ``torchdiffeq.odeint``, one solve of the batch on the shared
  times.
* ``neurode``: the ``latent_ode`` model plugin with the same sizes and
  ``encoder_cell="tanh"``: the example's recognition cell (a tanh RNN of 25
  units), fed ``[values * mask, mask, time gap]`` as neurode's recognition
  networks are (5 inputs against the example's 2), read by the whole-sequence
  tanh RNN of ``elman_sequence.py``; per-sample solves; once with tangent
  control (the default of a training solve) and once without: the two
  like-for-like rows. Also there, labelled not like for like: neurode's default
  ``rnn`` encoder, a GRU (three gates: three times the recognition network's
  weights and work, read by ``gru_sequence.py``), and with ``--defaults-row``
  the tanh model at neurode's own default tolerances (rtol 1e-3, atol 1e-4)
  while torchdiffeq stays at the example's.

Same data, same seed, same process, for each of ``--seeds`` (the seed draws
the spirals, the initial weights and the posterior samples); the loops'
steps interleaved, so that all meet the same load (``_time_interleaved``).
Reported per seed: steps per second (median wall time of a step), the
median CPU time of a step (what this process used: on a shared machine it
moves much less with the load than wall time), each as a ratio to
torchdiffeq, NFE per sample,
and the loss after the last step; over several seeds, the median ratios and
the mean ± sd of the loss. Then, on the last seed's trained weights, the
recognition network and the solve with the decoder timed apart in CPU time
(each loop's own vector field, from its own posterior means; neurode's also
with tangent control off), and neurode's tanh recognition network also
through the generic step-by-step scan that its whole-sequence reader
replaces.

    python benchmarks/bench_training.py --model latent_ode --steps 30 --seeds 0 1 2

Measured (30 steps, seeds 0 1 2, one thread, the loops' steps interleaved,
on quiet cores: CPU-time ratios of the same run): neurode with the tanh
encoder took 1.65x and 1.66x torchdiffeq's steps per second with tangent
control off in two runs (by seed 2.03x, 1.57x, 1.66x), and 1.47x-1.50x with
it on, the training default, at a lower loss after 30 steps at every seed
(3282 +- 454 against 3713 +- 297). Earlier, on 2 cores shared by four
engineers (load average 4-5): 1.53x off (1.77x, 1.43x, 1.53x), 1.40x on. neurode's GRU encoder,
not like for like: 0.83x. Per part on trained weights: recognition network
24 ms (tanh) and 101 ms (GRU) against 62 ms; solve and decoder 91 ms with
tangent control and 79 ms without, against 118 ms. README, "Latent ODE
training", has the tables and where the time goes.

``--tangent-stacking`` times one stage's two evaluations under tangent
control (``f(Y)`` recorded, ``f(Y + eps V)`` without autograd) as two calls
and as one call on the stacked rows, forward and backward apart: the
measurement behind not stacking them.
"""

from __future__ import annotations

import argparse
import dataclasses
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


class _RecognitionRNN(torch.nn.Module):
    """The example's recognition network: h <- tanh(W [x, h] + b), read backwards; (mu, log var) from the last h."""

    def __init__(self, latent_dim: int, obs_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.i2h = torch.nn.Linear(obs_dim + hidden, hidden)
        self.h2o = torch.nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], self.hidden)
        for j in reversed(range(x.shape[1])):
            h = torch.tanh(self.i2h(torch.cat([x[:, j], h], dim=1)))
        return self.h2o(h).chunk(2, dim=-1)


def _mlp(sizes, activation):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [torch.nn.Linear(a, b)] + ([activation()] if i < len(sizes) - 2 else [])
    return torch.nn.Sequential(*layers)


def torchdiffeq_latent_loop(times, observed, seed: int, sizes: dict) -> dict:
    """The example's model and training step against plain ``torchdiffeq.odeint`` (not yet run)."""
    import math

    import torchdiffeq

    torch.manual_seed(seed)
    latent, width = sizes["latent_dim"], sizes["width"]
    recognition = _RecognitionRNN(latent, observed.shape[-1], sizes["encoder_hidden"])
    field_net = _mlp([latent, width, width, latent], torch.nn.ELU)  # the example's LatentODEfunc
    decoder = _mlp([latent, sizes["decoder_width"], observed.shape[-1]], torch.nn.ReLU)
    params = [*recognition.parameters(), *field_net.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=sizes["lr"])
    times = times.to(observed.dtype)
    log_std = math.log(sizes["noise_std"])
    rows = {"n": 0}

    def field(t, z):
        rows["n"] += z.shape[0]
        return field_net(z)

    def step():
        optimizer.zero_grad()
        mean, log_var = recognition(observed)
        z0 = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        pred = decoder(torchdiffeq.odeint(field, z0, times, method="dopri5", rtol=sizes["rtol"],
                                          atol=sizes["atol"]).transpose(0, 1))
        log_px = (-0.5 * (math.log(2 * math.pi) + 2 * log_std + (observed - pred) ** 2 / math.exp(2 * log_std)))
        kl = 0.5 * (mean**2 + log_var.exp() - 1.0 - log_var).sum(-1)  # KL(q || N(0, I)), closed form
        loss = -(log_px.sum((-1, -2)) - kl).mean()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    # the RNG stream its steps draw from (its posterior samples), as if it ran now
    return {"step": step, "rows": rows, "trained": (recognition, field_net, decoder), "rng": torch.get_rng_state()}


def _spiral_batch(times, observed):
    from neurode.datasets.batch import PADDED, TrajectoryBatch

    n, length, _ = observed.shape
    return TrajectoryBatch(PADDED, times.expand(n, -1).clone(), observed, torch.ones_like(observed, dtype=torch.bool),
                           torch.ones(n, length, dtype=torch.bool), torch.zeros(n, 0), torch.arange(n))


def _neurode_latent_model(features: int, sizes: dict, rtol: float, atol: float, tangent: bool | None, cell: str):
    from neurode.framework.model import SolveSettings, build_model

    return build_model(
        "latent_ode", n_features=features,
        solve=SolveSettings(solver="dopri5", rtol=rtol, atol=atol, tangent_control=tangent),
        dynamics="mlp", dynamics_options={"width": sizes["width"], "depth": 2, "activation": "elu"},
        options={"latent_dim": sizes["latent_dim"], "encoder": "rnn", "encoder_cell": cell,
                 "encoder_hidden": sizes["encoder_hidden"], "decoder_width": sizes["decoder_width"],
                 "noise_std": sizes["noise_std"]})


def neurode_latent_loop(times, observed, seed: int, sizes: dict, tangent: bool | None, cell: str,
                        tolerances: tuple[float, float] | None = None) -> dict:
    """neurode's ``latent_ode`` and its training step (not yet run)."""
    n, _, features = observed.shape
    batch = _spiral_batch(times, observed)
    torch.manual_seed(seed)
    rtol, atol = tolerances or (sizes["rtol"], sizes["atol"])
    model = _neurode_latent_model(features, sizes, rtol, atol, tangent, cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=sizes["lr"])
    rows = {"n": 0}

    def step():
        optimizer.zero_grad()
        loss, metrics = model.loss(batch)
        loss.backward()
        optimizer.step()
        rows["n"] += metrics["nfe_per_sample"] * n
        return float(loss.detach())

    return {"step": step, "rows": rows, "trained": model, "rng": torch.get_rng_state()}


def _time_interleaved(loops: dict[str, dict], steps: int, n: int) -> dict[str, dict]:
    """Each loop's median wall and CPU time per step, NFE per sample and last loss, the loops' steps interleaved.

    Round ``i`` takes step ``i`` of every loop, in an order rotated every
    round: on a shared machine the load changes over seconds, and a loop run
    after another would meet a different load; interleaved, all meet the same.
    Each loop keeps its own stream of torch's global RNG (its posterior
    samples), from where its construction left it, swapped in around its
    steps: it draws exactly what it would running alone. CPU time is what
    this process used: on a shared machine it moves much less with the load
    than wall time.
    """
    names = list(loops)
    rng = {name: loops[name]["rng"] for name in names}
    wall, cpu, nfe, loss = ({name: [] for name in names} for _ in range(4))
    for i in range(steps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            loop = loops[name]
            loop["rows"]["n"] = 0
            torch.set_rng_state(rng[name])
            tick, tock = time.perf_counter(), time.process_time()
            loss[name].append(loop["step"]())
            wall[name].append(time.perf_counter() - tick)
            cpu[name].append(time.process_time() - tock)
            rng[name] = torch.get_rng_state()
            nfe[name].append(loop["rows"]["n"] / n)
    return {name: {"step_s": statistics.median(wall[name]), "cpu_s": statistics.median(cpu[name]),
                   "nfe_per_sample": statistics.mean(nfe[name]), "loss": loss[name][-1],
                   "trained": loops[name]["trained"]} for name in names}


TORCHDIFFEQ = "torchdiffeq (example's model)"
NEURODE = "neurode latent_ode, encoder_cell=tanh (the example's RNN): like for like"
NEURODE_NO_TANGENT = "neurode latent_ode, encoder_cell=tanh, tangent_control off: like for like"
NEURODE_GRU = "neurode latent_ode, GRU encoder (its default): not like for like, 3x the encoder's work"
NEURODE_DEFAULTS = ("neurode latent_ode, encoder_cell=tanh, at its own defaults (rtol 1e-3, atol 1e-4): "
                    "not like for like")


def latent_ode_comparison(steps: int, seeds: list[int], defaults_row: bool) -> None:
    """Latent ODE training on the spirals: torchdiffeq's example setting against neurode (module docstring)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reproduce_spirals import spirals

    from neurode.framework.model import SolveSettings

    sizes = {"latent_dim": 4, "width": 20, "encoder_hidden": 25, "decoder_width": 20, "noise_std": 0.3, "lr": 0.01,
             "rtol": 1e-7, "atol": 1e-9}
    defaults = (SolveSettings().rtol, SolveSettings().atol)
    runs = []
    for seed in seeds:
        rel_times, noisy, _, _ = spirals(1000, seed)
        times = torch.tensor(rel_times[:100], dtype=torch.float64)
        observed = torch.tensor(noisy[:, :100], dtype=torch.float32)
        loops = {
            TORCHDIFFEQ: torchdiffeq_latent_loop(times, observed, seed, sizes),
            NEURODE: neurode_latent_loop(times, observed, seed, sizes, None, "tanh"),
            NEURODE_NO_TANGENT: neurode_latent_loop(times, observed, seed, sizes, False, "tanh"),
            NEURODE_GRU: neurode_latent_loop(times, observed, seed, sizes, None, "gru"),
        }
        if defaults_row:
            loops[NEURODE_DEFAULTS] = neurode_latent_loop(times, observed, seed, sizes, None, "tanh", defaults)
        result = _time_interleaved(loops, steps, observed.shape[0])
        runs.append(result)
        print(f"seed {seed}: " + ", ".join(f"{name} {r['step_s'] * 1e3:.0f} ms (CPU {r['cpu_s'] * 1e3:.0f} ms), "
                                           f"loss {r['loss']:.1f}" for name, r in result.items()), flush=True)
    print(f"\nLatent ODE on 1000 spirals, 100 observations each, full batch, dopri5 rtol 1e-7 atol 1e-9 (unless "
          f"labelled), {steps} Adam steps, seeds {' '.join(map(str, seeds))}, {torch.get_num_threads()} thread(s)")
    print(f"| seed | loop | steps per second (wall) | vs torchdiffeq (wall) | CPU ms per step | vs torchdiffeq (CPU) "
          f"| NFE per sample | loss after {steps} steps |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed, result in zip(seeds, runs):
        base = result[TORCHDIFFEQ]
        for name, r in result.items():
            print(f"| {seed if name == TORCHDIFFEQ else ''} | {name} | {1 / r['step_s']:.2f} | "
                  f"{base['step_s'] / r['step_s']:.2f}x | {r['cpu_s'] * 1e3:.0f} | {base['cpu_s'] / r['cpu_s']:.2f}x | "
                  f"{r['nfe_per_sample']:.1f} | {r['loss']:.1f} |")
    if len(runs) > 1:
        for name in runs[0]:
            wall = statistics.median(r[TORCHDIFFEQ]["step_s"] / r[name]["step_s"] for r in runs)
            cpu = statistics.median(r[TORCHDIFFEQ]["cpu_s"] / r[name]["cpu_s"] for r in runs)
            loss = [r[name]["loss"] for r in runs]
            lower = sum(r[name]["loss"] <= r[TORCHDIFFEQ]["loss"] for r in runs)
            print(f"| all | {name} | | median {wall:.2f}x | | median {cpu:.2f}x | | {_mean_spread(loss)} "
                  f"(<= torchdiffeq's at {lower} of {len(runs)} seeds) |")
    print()
    print(f"Where a step goes (seed {seeds[-1]}, each loop's weights after its {steps} steps, forward + backward, CPU "
          "time, median of 5; each solve from its own posterior means with its own vector field, neurode's with "
          "tangent control as in training):")
    print("| part | torchdiffeq | neurode (tanh) | neurode (GRU) |")
    print("| --- | --- | --- | --- |")
    last = runs[-1]
    parts = latent_ode_parts(times, observed, sizes, last[TORCHDIFFEQ]["trained"], last[NEURODE]["trained"],
                             last[NEURODE_GRU]["trained"])
    for part, values in parts.items():
        print(f"| {part} | " + " | ".join("" if v is None else f"{v * 1e3:.0f} ms" for v in values) + " |")


def latent_ode_parts(times, observed, sizes: dict, theirs: tuple, ours, ours_gru) -> dict:
    """Recognition network and solve + decoder timed apart (CPU time): ``{part: (torchdiffeq, tanh, GRU)}``.

    ``theirs``: the example's trained ``(recognition, field, decoder)``;
    ``ours``, ``ours_gru``: the trained ``latent_ode`` models. neurode's tanh
    recognition network is also timed through the generic step-by-step
    ``scan`` that its whole-sequence reader (``elman_sequence.py``) replaces.
    """
    import torchdiffeq

    batch = _spiral_batch(times, observed)
    recognition, field_net, decoder = theirs

    def median_time(work):
        durations = []
        for _ in range(5):
            tick = time.process_time()
            work()
            durations.append(time.process_time() - tick)
        return statistics.median(durations)

    def encode(encoder):
        return lambda: sum(x.sum() for x in encoder()).backward()

    def stepwise():
        ours.encoder.reads_sequences = False  # the generic scan, one slot at a time
        try:
            return ours.posterior_parameters(batch)
        finally:
            del ours.encoder.reads_sequences

    with torch.no_grad():
        z0_theirs = recognition(observed)[0]

    def solve_torchdiffeq():
        ys = torchdiffeq.odeint(lambda t, z: field_net(z), z0_theirs.clone().requires_grad_(),
                                times.to(observed.dtype), method="dopri5", rtol=sizes["rtol"], atol=sizes["atol"])
        decoder(ys).sum().backward()

    def solve_neurode(model):
        with torch.no_grad():
            z0 = model.posterior_parameters(batch)[0]
        return lambda: model.decode(z0.requires_grad_()[None], batch.solve_times()).sum().backward()

    def without_tangent(work):
        settings = ours.settings
        ours.settings = dataclasses.replace(settings, tangent_control=False)
        try:
            return median_time(work)
        finally:
            ours.settings = settings

    return {
        "recognition network": (median_time(encode(lambda: recognition(observed))),
                                median_time(encode(lambda: ours.posterior_parameters(batch))),
                                median_time(encode(lambda: ours_gru.posterior_parameters(batch)))),
        "tanh recognition network through the step-by-step scan (reference, not in the step)": (
            None, median_time(encode(stepwise)), None),
        "solve and decoder": (median_time(solve_torchdiffeq), median_time(solve_neurode(ours)),
                              median_time(solve_neurode(ours_gru))),
        "solve and decoder, neurode with tangent control off (what tangent control costs: the difference)": (
            None, without_tangent(solve_neurode(ours)), None),
    }


def tangent_stacking_costs(repeats: int = 7, calls: int = 400) -> None:
    """Per stage of a training solve with tangent control: ``f(Y)`` with autograd and ``f(Y + eps V)`` without, as
    two calls or as one call on the stacked rows ``[Y; Y + eps V]``; forward and backward timed apart (CPU time).

    The measurement behind not stacking (README, "Latent ODE training"): under
    ``direct`` backpropagation the stacked call's backward runs over both
    halves (the weight gradients' products and the activations' backward see
    2N rows, half of them zero), which costs more than the one dispatch the
    forward saves, except on small batches.
    """
    def median_us(work):
        for _ in range(30):
            work()
        runs = []
        for _ in range(repeats):
            tick = time.process_time()
            for _ in range(calls):
                work()
            runs.append((time.process_time() - tick) / calls * 1e6)
        return statistics.median(runs)

    fields = {"4-20-20-4 ELU (the spirals' latent field)": (4, 20, 2, torch.nn.ELU),
              "2-64-2 tanh": (2, 64, 1, torch.nn.Tanh)}
    print("| field | rows N | forward: two calls | forward: stacked | backward after two calls "
          "| backward after stacked | stacked - two, forward + backward |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (dim, width, depth, activation) in fields.items():
        net = _mlp([dim] + [width] * depth + [dim], activation)
        for n in (16, 128, 1000):
            y = torch.randn(n, dim, requires_grad=True)
            v = torch.randn(n, dim)

            def two():
                plain = net(y)
                with torch.no_grad():
                    return plain, net(y.detach() + 1e-3 * v)

            def stacked():
                both = net(torch.cat([y, y.detach() + 1e-3 * v]))
                return both[:n], both[n:].detach()

            forward_two, forward_stacked = median_us(two), median_us(stacked)
            backward_two = median_us(lambda: two()[0].sum().backward()) - forward_two
            backward_stacked = median_us(lambda: stacked()[0].sum().backward()) - forward_stacked
            change = forward_stacked + backward_stacked - forward_two - backward_two
            print(f"| {name} | {n} | {forward_two:.0f} us | {forward_stacked:.0f} us | {backward_two:.0f} us | "
                  f"{backward_stacked:.0f} us | {change:+.0f} us |", flush=True)


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
    parser.add_argument("--model", choices=("neural_ode", "latent_ode"), default="neural_ode",
                        help="neural_ode: the trainer on the built-in data; latent_ode: the spirals (see above)")
    parser.add_argument("--steps", type=int, default=20, help="latent_ode: full-batch training steps of each loop")
    parser.add_argument("--tangent-stacking", action="store_true",
                        help="only time one stage's two evaluations under tangent control, apart or stacked")
    parser.add_argument("--defaults-row", action="store_true",
                        help="latent_ode: also a row with neurode at its own default tolerances (not like for like)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tangent_stacking:
        tangent_stacking_costs()
        return
    if args.model == "latent_ode":
        latent_ode_comparison(args.steps, args.seeds, args.defaults_row)
        return
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
