"""The fit loop: batches, steps, validation, checkpoints, exact resume, clean stops.

Exactness. A run's randomness is (a) the model's initialisation, drawn from
``torch.manual_seed(seed)``, (b) the order of training batches, a permutation
fixed by (seed, epoch) alone (:func:`~neurode.training.data.epoch_order`), and
(c) torch's global RNG for models that sample, saved with every checkpoint.
A checkpoint records the epoch and the position in it, so a resumed run draws
exactly the batches the uninterrupted one would have, and ends with the same
weights bit for bit on the CPU.

Checkpoints. One file, ``state/checkpoint.safetensors``, holds the weights,
the optimiser's tensors, the RNG states and (as JSON in its metadata) the
trainer position, optimiser hyper-parameters and scheduler state: one atomic
``os.replace`` commits a whole checkpoint, so a kill at any instant leaves
either the previous checkpoint or the new one. ``model.safetensors``,
``metrics.jsonl``, ``run.json`` and the plots follow it.

Stops. A non-finite loss or gradient, or a solver failure, stops the run
before the optimiser step, leaving the last checkpoint untouched, with a
:class:`TrainingStopped` naming the step and that checkpoint. SIGINT and
SIGTERM finish the current step, write a checkpoint and return with status
``interrupted``.
"""

from __future__ import annotations

import datetime
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from neurode.framework.errors import NeurodeError, SolverError
from neurode.framework.model import SolveSettings, build_model, rebuild_model
from neurode.training import rundir as rd
from neurode.training.config import BUDGET_KEYS, TrainConfig, changed_keys, validate_config
from neurode.training.data import RunData, epoch_order, fingerprint
from neurode.training.devices import DTYPES, resolve_device, set_threads
from neurode.training.metrics import ErrorSums, first_observation

CHECKPOINT = "checkpoint.safetensors"
RUNNING, COMPLETED, INTERRUPTED, FAILED = "running", "completed", "interrupted", "failed"


class TrainingStopped(NeurodeError):
    """Training stopped on a non-finite loss or gradient, or a solver failure."""

    def __init__(self, message: str, run_dir: Path) -> None:
        super().__init__(message)
        self.run_dir = run_dir


class ResumeError(NeurodeError):
    """A run cannot be resumed as asked (changed config, no checkpoint)."""


class Reporter:
    """Receives progress; the CLI's rich progress bar is one. Every method is optional to override."""

    def start(self, *, total_steps: int, step: int, run_dir: Path) -> None: ...

    def step(self, row: dict[str, Any]) -> None: ...

    def validation(self, row: dict[str, Any]) -> None: ...

    def end(self, summary: dict[str, Any]) -> None: ...


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _versions(config: TrainConfig, loader: str | None) -> dict[str, Any]:
    import neurode
    from neurode.framework.registry import get_registry

    registry = get_registry()
    plugins = {}
    for kind, name in (("model", config.model.name), ("dynamics", config.dynamics.name),
                       ("solver", config.solver.name), ("adjoint", config.solver.adjoint)):
        source = registry.get(kind, name).source
        plugins[kind] = {"name": name, "distribution": source.distribution, "version": source.version}
    return {"neurode": neurode.__version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "plugins": plugins}


def default_run_dir(config: TrainConfig) -> Path:
    if config.output.dir:
        return Path(config.output.dir)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / (config.output.name or f"{config.model.name}-{stamp}")


class Trainer:
    """One run: set up (new or resumed), then :meth:`fit`."""

    def __init__(self, config: TrainConfig, run_dir: Path, *, resume: bool = False,
                 reporter: Reporter | None = None) -> None:
        self.config = config
        self.dir = rd.RunDirectory(run_dir)
        self.resume = resume
        self.reporter = reporter or Reporter()
        self._signal: str | None = None
        self._validated_at: int | None = None
        self._checkpointed_at = 0

    # ------------------------------------------------------------------ set-up

    def _setup(self) -> None:
        config = self.config
        if not self.resume and self.dir.path.exists() and any(self.dir.path.iterdir()):
            # refused before any data is read
            raise rd.RunDirectoryError(f"{self.dir.path}: already exists and is not empty; resume it with "
                                       f"`neurode train --resume {self.dir.path}` or choose another --out")
        self.threads = set_threads(config.runtime.threads)
        self.device = resolve_device(config.runtime.device)
        self.dtype = DTYPES[config.runtime.dtype]
        if config.data.path is None:
            from neurode.training.builtin_data import builtin_dataset_path

            data_path = builtin_dataset_path()
        else:
            data_path = Path(config.data.path)
        normalization = None
        if self.resume:
            from neurode.datasets.normalization import NormalizationStats

            normalization = NormalizationStats.load(self.dir / rd.NORMALIZATION)
        self.data = RunData.open(data_path, variables=config.data.variables, static=config.data.static,
                                 split=config.data.split, split_seed=config.data.split_seed,
                                 normalization=normalization, dtype=self.dtype)
        torch.manual_seed(config.training.seed)
        solve = SolveSettings(solver=config.solver.name, adjoint=config.solver.adjoint, rtol=config.solver.rtol,
                              atol=config.solver.atol, controller=config.solver.controller,
                              max_num_steps=config.solver.max_num_steps,
                              adjoint_options=dict(config.solver.adjoint_options),
                              tangent_control=config.solver.tangent_control)
        try:
            self.model = build_model(config.model.name, n_features=self.data.n_features,
                                     n_static=self.data.n_static, options=config.model.options, solve=solve,
                                     dynamics=config.dynamics.name, dynamics_options=config.dynamics.options)
        except (TypeError, ValueError) as exc:
            raise NeurodeError(f"model {config.model.name!r} with options {config.model.options} and dynamics "
                               f"{config.dynamics.name!r} {config.dynamics.options}: {exc}") from exc
        self.model.to(device=self.device, dtype=self.dtype)
        self.batch_mode = getattr(self.model, "batch_mode", "padded")
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = config.optimizer
        cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
        self.optimizer = cls(params, lr=opt.lr, weight_decay=opt.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.data.splits["train"]) / config.training.batch_size)
        self.total_steps = self.steps_per_epoch * config.training.epochs
        if config.training.max_steps is not None:
            self.total_steps = min(self.total_steps, config.training.max_steps)
        schedule = config.schedule
        if schedule.name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=max(self.total_steps, 1), eta_min=schedule.min_lr)
        elif schedule.name == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr)
        else:
            self.scheduler = None
        self.position = {"epoch": 0, "batch": 0, "step": 0, "best_val_rmse": None, "best_step": None,
                         "bad_validations": 0, "last_val_rmse": None}
        self.metrics: list[dict[str, Any]] = []
        if self.resume:
            self._load_checkpoint()
        else:
            self._create()
        from neurode.training.tensorboard import EventLog

        # a resumed run replays the steps after its checkpoint: hide the interrupted run's copies of them
        self.events = EventLog(self.dir.path, config.output.tensorboard,
                               purge_step=self.position["step"] + 1 if self.resume else None)
        self.dir.update_run_json(tensorboard=self.events.status)

    def _create(self) -> None:
        self.dir.path.mkdir(parents=True, exist_ok=True)
        rd.atomic_write(self.dir / rd.CONFIG, self.config.to_toml())
        self.data.normalization.save(self.dir / rd.NORMALIZATION)
        baseline = self._baseline()
        self.dir.update_run_json(
            status=RUNNING, started=_now(), finished=None, versions=_versions(self.config, None),
            dataset={"path": str(self.data.path.resolve()), "fingerprint": fingerprint(self.data.path),
                     "n_trajectories": {k: len(v) for k, v in self.data.splits.items()},
                     "features": list(self.data.layout.feature_names), "static": list(self.data.layout.static),
                     "units": self.data.units, "train_time_range": list(self.data.train_time_range)},
            model={"name": self.config.model.name, "config": self.model.config()},
            device=str(self.device), dtype=self.config.runtime.dtype, threads=self.threads,
            baseline_val_rmse=baseline, step=0, best_val_rmse=None)

    def _baseline(self) -> float:
        sums = ErrorSums()
        for batch in self.data.batches("val" if len(self.data.splits["val"]) else "train",
                                       self.config.training.batch_size):
            sums.add(first_observation(batch), batch)
        return sums.rmse()

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_rest = rd.optimizer_state_to_files(self.optimizer.state_dict())
        tensors.update({f"optimizer.{k}": v for k, v in optim_tensors.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
        metadata = {
            "position": json.dumps(self.position),
            "optimizer": json.dumps(optim_rest),
            "scheduler": json.dumps(self.scheduler.state_dict() if self.scheduler is not None else None),
            "config": json.dumps(self.config.to_dict()),
        }
        rd.save_tensors(self.dir.state / CHECKPOINT, tensors, metadata)
        self._checkpointed_at = self.position["step"]
        rd.save_tensors(self.dir / rd.MODEL, self.model.state_dict())
        self.dir.write_metrics(self.metrics)
        self.events.flush()
        self.dir.update_run_json(step=self.position["step"], best_val_rmse=self.position["best_val_rmse"],
                                 best_step=self.position["best_step"], checkpoint_step=self.position["step"])
        self._plot()

    def _load_checkpoint(self) -> None:
        from safetensors import safe_open

        path = self.dir.state / CHECKPOINT
        if not path.is_file():
            raise ResumeError(f"{self.dir.path}: no checkpoint to resume from ({path} is missing)")
        tensors = rd.load_tensors(path)
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state)
        optim = {k[len("optimizer."):]: v.to(self.device) for k, v in tensors.items() if k.startswith("optimizer.")}
        state = rd.optimizer_state_from_files(optim, json.loads(metadata["optimizer"]))
        self.optimizer.load_state_dict(state)
        scheduler_state = json.loads(metadata["scheduler"])
        if self.scheduler is not None and scheduler_state is not None:
            self.scheduler.load_state_dict(scheduler_state)
            if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                self.scheduler.T_max = max(self.total_steps, 1)  # the budget may have changed
        self.position = json.loads(metadata["position"])
        self._checkpointed_at = self.position["step"]
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(cuda)
        # metrics logged after the checkpoint are replayed by the resumed run
        self.metrics = [row for row in self.dir.read_metrics() if row.get("step", 0) <= self.position["step"]]
        rd.atomic_write(self.dir / rd.CONFIG, self.config.to_toml())
        self.dir.update_run_json(status=RUNNING, resumed=_now(), finished=None)

    def _plot(self) -> None:
        from neurode.training.plots import plot_loss, plot_predictions

        plot_loss(self.dir.path / rd.LOSS_PLOT, self.metrics)
        split = "val" if len(self.data.splits["val"]) else "train"
        batch = self.data.batch(split, range(min(4, len(self.data.splits[split]))), self.device, self.dtype)
        plot_predictions(self.dir.path / rd.PREDICTIONS_PLOT, self.model, batch, self.data)

    # ------------------------------------------------------------------ signals

    def _handle(self, signum, frame) -> None:
        self._signal = signal.Signals(signum).name

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    # ------------------------------------------------------------------ the loop

    def validate(self) -> dict[str, Any]:
        self.model.eval()
        sums = ErrorSums()
        nfe = 0.0
        with torch.no_grad():
            for batch in self.data.batches("val", self.config.training.batch_size, self.device, self.dtype):
                sums.add(self.model.predict(batch), batch)
                nfe += self.model.solve_stats().get("nfe_per_sample", 0.0) * batch.batch_size
        self.model.train()
        n = max(len(self.data.splits["val"]), 1)
        return {"val_rmse": sums.rmse(), "val_nfe_per_sample": nfe / n}

    def _stop(self, reason: str) -> None:
        last = self.position["step"]
        checkpoint = self.dir.state / CHECKPOINT
        where = (f"the last good checkpoint (step {last}) is {checkpoint}, untouched"
                 if checkpoint.is_file() else "no checkpoint had been written yet")
        message = f"training stopped at step {self.position['step'] + 1}: {reason}; {where}"
        self.dir.update_run_json(status=FAILED, finished=_now(), error=message)
        raise TrainingStopped(message, self.dir.path)

    def fit(self) -> dict[str, Any]:
        self._setup()
        config, position = self.config, self.position
        training = config.training
        n_train = len(self.data.splits["train"])
        self.reporter.start(total_steps=self.total_steps, step=position["step"], run_dir=self.dir.path)
        previous = self._install_signals()
        started = time.perf_counter()
        status = COMPLETED
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            self.model.train()
            while position["epoch"] < training.epochs and position["step"] < self.total_steps:
                epoch = position["epoch"]
                order = epoch_order(n_train, training.seed, epoch).split(training.batch_size)
                while position["batch"] < len(order) and position["step"] < self.total_steps:
                    if self._signal:
                        break
                    tick = time.perf_counter()
                    batch = self.data.batch("train", order[position["batch"]].tolist(), self.device, self.dtype)
                    self.optimizer.zero_grad(set_to_none=True)
                    try:
                        loss, metrics = self.model.loss(batch)
                        if not bool(torch.isfinite(loss)):
                            self._stop(f"the loss is {float(loss.detach())} (epoch {epoch}, batch {position['batch']})")
                        loss.backward()
                    except SolverError as exc:
                        ids = batch.index.tolist()
                        self._stop(f"the solver failed on the batch of training trajectories {ids}: {exc}")
                    clip = training.grad_clip if training.grad_clip > 0 else float("inf")
                    norm = torch.nn.utils.clip_grad_norm_(params, clip)
                    if not bool(torch.isfinite(norm)):
                        self._stop(f"the gradient norm is {float(norm)} (epoch {epoch}, batch {position['batch']})")
                    self.optimizer.step()
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                        self.scheduler.step()
                    position["step"] += 1
                    position["batch"] += 1
                    step = position["step"]
                    row = {"step": step, "epoch": epoch, "loss": float(loss.detach()),
                           "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": float(norm),
                           **self.model.solve_stats(),
                           "samples_per_s": batch.batch_size / max(time.perf_counter() - tick, 1e-9)}
                    # what the model reports of its loss (an ELBO's nll, kl, kl_weight; a masked mse) is logged
                    # too, under its own names, never over the trainer's
                    row.update({k: float(v) for k, v in metrics.items()
                                if k not in row and isinstance(v, (int, float)) and not isinstance(v, bool)})
                    if step % training.log_every == 0 or step == 1:
                        self.metrics.append(row)
                        self.events.row(row)
                    self.reporter.step(row)
                    if step - self._checkpointed_at >= training.checkpoint_every:
                        self._save_checkpoint()
                if self._signal:
                    status = INTERRUPTED
                    break
                if position["batch"] >= len(order):
                    if (epoch + 1) % training.val_every == 0 and len(self.data.splits["val"]):
                        if self._after_validation(epoch):
                            position["epoch"], position["batch"] = epoch + 1, 0
                            break
                    position["epoch"], position["batch"] = epoch + 1, 0
                    if position["step"] - self._checkpointed_at >= training.checkpoint_every:
                        self._save_checkpoint()
            if status == COMPLETED and self._validated_at != position["step"] and len(self.data.splits["val"]):
                self._after_validation(position["epoch"])  # a step budget ended mid-epoch
            self._save_checkpoint()
        except TrainingStopped:
            raise  # run.json already says why
        except Exception as exc:
            # anything else that ends the run (a model or option refused mid-run, a bug) is recorded too: a run
            # directory never claims to be running after its process has stopped
            self.dir.update_run_json(status=FAILED, finished=_now(),
                                     error=f"training stopped at step {position['step'] + 1}: "
                                           f"{type(exc).__name__}: {exc}")
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.events.close()
        return self._finish(status, time.perf_counter() - started)

    def _after_validation(self, epoch: int) -> bool:
        """Validate, keep the best weights, step the plateau schedule; True to stop early."""
        position = self.position
        result = self.validate()
        self._validated_at = position["step"]
        row = {"step": position["step"], "epoch": epoch, **result}
        self.metrics.append(row)
        self.events.row(row)
        self.reporter.validation(row)
        rmse = result["val_rmse"]
        position["last_val_rmse"] = rmse
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(rmse)
        if position["best_val_rmse"] is None or rmse < position["best_val_rmse"]:
            position["best_val_rmse"], position["best_step"], position["bad_validations"] = rmse, position["step"], 0
            rd.save_tensors(self.dir / rd.BEST, self.model.state_dict())
        else:
            position["bad_validations"] += 1
        patience = self.config.training.early_stopping
        return patience is not None and position["bad_validations"] >= patience

    def _finish(self, status: str, seconds: float) -> dict[str, Any]:
        info = self.dir.read_run_json()
        baseline = info.get("baseline_val_rmse")
        best = self.position["best_val_rmse"]
        summary = {
            "run_dir": str(self.dir.path),
            "status": status,
            "step": self.position["step"],
            "epoch": self.position["epoch"],
            "best_val_rmse": best,
            "best_step": self.position["best_step"],
            "baseline_val_rmse": baseline,
            "best_to_baseline": (best / baseline) if best is not None and baseline else None,
            "seconds": round(seconds, 3),
        }
        if status == INTERRUPTED:
            summary["signal"] = self._signal
            summary["resume"] = f"neurode train --resume {self.dir.path}"
        self.dir.update_run_json(status=status, finished=_now(), summary=summary)
        self.reporter.end(summary)
        return summary


def prepare_resume(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The stored config of ``run_dir`` with ``overrides`` applied; refused unless only the budget changed."""
    from neurode.training.config import load_toml, merge

    directory = rd.RunDirectory(run_dir)
    directory.require()
    stored = load_toml(directory / rd.CONFIG)
    config = validate_config(merge(stored, overrides or {}))
    changed = [key for key in changed_keys(validate_config(stored).to_dict(), config.to_dict())
               if key not in BUDGET_KEYS]
    if changed:
        raise ResumeError(f"cannot resume {directory.path} with a changed configuration ({', '.join(changed)}); "
                          f"only {', '.join(BUDGET_KEYS)} may change on resume. Start a new run instead.")
    return config


def load_model(run_dir: str | Path, weights: str = rd.BEST, device="cpu", dtype=None):
    """The model of a run, rebuilt from ``run.json`` and loaded with ``weights`` (best, else latest)."""
    directory = rd.RunDirectory(run_dir)
    directory.require()
    info = directory.read_run_json()
    model = rebuild_model(info["model"]["name"], info["model"]["config"])
    path = directory / weights
    if not path.is_file():
        path = directory / rd.MODEL
    if not path.is_file():
        raise rd.RunDirectoryError(f"{directory.path}: no weights yet ({rd.BEST} and {rd.MODEL} are missing)")
    model.load_state_dict(rd.load_tensors(path))
    dtype = dtype or DTYPES[info.get("dtype", "float32")]
    return model.to(device=device, dtype=dtype).eval()
