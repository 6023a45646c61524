"""The Python face of the trainer: ``neurode.train(config) -> Run``, ``neurode.load_run(path) -> Run``.

A :class:`Run` is a run directory opened: its resolved config, the model
(rebuilt from the registry, best weights loaded), the normalisation
statistics and the metrics. It evaluates (:meth:`Run.evaluate`) and predicts
(:meth:`Run.predict`) on any dataset with the run's variables, in physical
units, with the same machinery the ``neurode evaluate`` / ``predict``
commands call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from neurode.datasets.batch import PADDED
from neurode.datasets.normalization import NormalizationStats
from neurode.datasets.schema import COMPONENT, DATASET_ATTRS, OBS, SAMPLE, TIME, TRAJECTORY
from neurode.datasets.trajectory_dataset import TrajectoryDataset
from neurode.framework.model import _accepts
from neurode.training import rundir as rd
from neurode.training.config import TrainConfig, load_toml, validate_config
from neurode.training.data import RunData
from neurode.training.devices import DTYPES, resolve_device
from neurode.training.metrics import ErrorSums, first_observation
from neurode.training.rundir import RunDirectoryError
from neurode.training.trainer import Reporter, Trainer, default_run_dir, load_model, prepare_resume

SPLIT_CHOICES = ("train", "val", "test", "all")


@dataclass
class Run:
    """An opened run directory."""

    path: Path
    config: TrainConfig
    info: dict[str, Any]
    normalization: NormalizationStats
    model: torch.nn.Module
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return rd.RunDirectory(self.path).read_metrics()

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.split("[")[0] for name in self.normalization.feature_names))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _dataset(self, ds: xr.Dataset) -> TrajectoryDataset:
        return TrajectoryDataset(ds, variables=self.variables, static=self.normalization.static_names,
                                 normalization=self.normalization, mode=PADDED, dtype=self.dtype)

    def _open_data(self, data: str | os.PathLike | None) -> RunData:
        path = data if data is not None else self.info["dataset"]["path"]
        return RunData.open(path, variables=self.variables, static=self.normalization.static_names,
                            split=self.config.data.split, split_seed=self.config.data.split_seed,
                            normalization=self.normalization, dtype=self.dtype)

    # ------------------------------------------------------------------ evaluate

    def fitted_until(self) -> float | None:
        """The latest observation time of the run's training split: past it, a prediction extrapolates.

        Recorded in ``run.json`` (``dataset.train_time_range``); for runs written
        before it was, recomputed from the run's dataset when that is still there.
        """
        recorded = self.info.get("dataset", {}).get("train_time_range")
        if recorded is not None:
            return float(recorded[1])
        path = self.info.get("dataset", {}).get("path")
        if path is None or not Path(path).exists():
            return None
        time_range = self._open_data(path).train_time_range
        return None if time_range is None else time_range[1]

    def evaluate(self, data: str | os.PathLike | None = None, *, split: str = "test",
                 t_split: float | None = None, batch_size: int | None = None) -> dict[str, Any]:
        """RMSE and MAE per variable in physical units, the first-observation baseline, NFE per sample.

        ``data`` defaults to the run's dataset; ``split`` picks the part
        (by the run's fractions and seed) or ``"all"``.

        Interpolation vs extrapolation. The model was fitted on observations
        up to the last time of the training split (:meth:`fitted_until`);
        observations after it are a held-out tail, and predicting them is
        extrapolation in time. When the evaluated data has any, errors are
        reported for both parts automatically (``t_split_source``:
        ``"training times"``): interpolation up to and at that time,
        extrapolation after it. With ``t_split`` the boundary is given instead
        and always reported (``"given"``): interpolation before it,
        extrapolation from it on.
        """
        if split not in SPLIT_CHOICES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
        run_data = self._open_data(data)
        names = ("train", "val", "test") if split == "all" else (split,)
        scale = torch.as_tensor(self.normalization.std, dtype=self.dtype, device=self.device)
        if t_split is not None:
            boundary, source = t_split, "given"

            def extrapolating(times):
                return times >= boundary
        else:
            boundary, source = self.fitted_until(), "training times"

            def extrapolating(times):
                return times > boundary
        sums = {"all": ErrorSums(), "baseline": ErrorSums(), "interpolation": ErrorSums(),
                "extrapolation": ErrorSums()}
        nfe, count = 0.0, 0
        size = batch_size or self.config.training.batch_size
        with torch.no_grad():
            for name in names:
                for batch in run_data.batches(name, size, self.device, self.dtype):
                    pred = self.model.predict(batch)
                    sums["all"].add(pred, batch, scale)
                    sums["baseline"].add(first_observation(batch), batch, scale)
                    if boundary is not None:
                        beyond = extrapolating(batch.times)
                        sums["interpolation"].add(pred, batch, scale, ~beyond)
                        sums["extrapolation"].add(pred, batch, scale, beyond)
                    stats = getattr(self.model, "solve_stats", dict)()
                    nfe += stats.get("nfe_per_sample", float("nan")) * batch.batch_size
                    count += batch.batch_size
        if count == 0:
            raise ValueError(f"the {split!r} split of {run_data.path} holds no trajectories")
        features = list(self.normalization.feature_names)
        result: dict[str, Any] = {"run_dir": str(self.path), "data": str(run_data.path), "split": split,
                                  "n_trajectories": count, "variables": {},
                                  # None for a model that solves no ODE (strict JSON has no NaN)
                                  "nfe_per_sample": None if math.isnan(nfe) else nfe / count}
        rmse, mae, n = sums["all"].per_feature()
        base_rmse, _, _ = sums["baseline"].per_feature()
        for i, feature in enumerate(features):
            variable = feature.split("[")[0]
            result["variables"][feature] = {"units": run_data.units.get(variable, ""), "rmse": rmse[i],
                                            "mae": mae[i], "baseline_rmse": base_rmse[i], "n_observations": n[i]}
        held_out = sums["extrapolation"].count is not None and float(sums["extrapolation"].count.sum()) > 0
        if source == "given" or (boundary is not None and held_out):
            result["t_split"], result["t_split_source"] = boundary, source
            for part in ("interpolation", "extrapolation"):
                part_rmse, part_mae, part_n = sums[part].per_feature()
                for i, feature in enumerate(features):
                    # None where a part has no observation of the feature (strict JSON has no NaN)
                    result["variables"][feature][part] = {"rmse": None if part_n[i] == 0 else part_rmse[i],
                                                          "mae": None if part_n[i] == 0 else part_mae[i],
                                                          "n_observations": part_n[i]}
        return result

    # ------------------------------------------------------------------ predict

    def predict(self, ds: xr.Dataset | str | os.PathLike, times: Sequence[float] | np.ndarray | None = None,
                *, batch_size: int = 64, samples: int = 0) -> xr.Dataset:
        """Predictions for every trajectory of ``ds`` as a canonical dataset.

        At each trajectory's own observation times (``times=None``), or at
        ``times`` (``[T]``, shared; each must be at or after that trajectory's
        first observation). Variables keep the input's names, units and
        trajectory ids, so predictions and observations line up in xarray.

        ``samples=K`` (a model whose ``predict`` takes ``samples``, such as
        ``latent_ode``): also ``K`` draws from the posterior predictive, as
        variables ``<name>_samples`` with a leading ``sample`` dimension, beside
        the posterior-mean prediction under the input's names.
        """
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise RunDirectoryError(f"samples must be a non-negative integer, got {samples!r}")
        if samples and not _accepts(self.model.predict, "samples"):
            raise RunDirectoryError(
                f"model {type(self.model).__name__!r} of {self.path} draws no posterior samples (its predict takes "
                f"no samples=); predict without --samples")
        if not isinstance(ds, xr.Dataset):
            from neurode.datasets.io import load

            ds = load(ds)
        dataset = self._dataset(ds)
        n = len(dataset)
        request = None if times is None else torch.as_tensor(np.asarray(times, dtype=np.float64),
                                                              dtype=self.dtype, device=self.device)
        chunks, sample_chunks, time_chunks = [], [], []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                items = dataset.__getitems__(list(range(start, min(start + batch_size, n))))
                batch = dataset.collate_fn(items).to(self.device, self.dtype)
                pred = self.model.predict(batch, times=request)
                draws = self.model.predict(batch, times=request, samples=samples) if samples else None
                if request is None:
                    pred = torch.where(batch.time_mask.unsqueeze(-1), pred, torch.nan)
                    if draws is not None:
                        draws = torch.where(batch.time_mask.unsqueeze(-1), draws, torch.nan)
                    t = torch.where(batch.time_mask, batch.times, torch.nan)
                else:
                    t = request.expand(batch.batch_size, -1)
                chunks.append(pred.double().cpu().numpy())
                if draws is not None:
                    sample_chunks.append(draws.double().cpu().numpy())
                time_chunks.append(t.double().cpu().numpy())
        width = max(c.shape[1] for c in chunks)

        def padded(parts, axis):  # pad the obs axis of each chunk to the widest, then join the trajectories
            pad = [(0, 0)] * parts[0].ndim
            joined = []
            for part in parts:
                pad[axis + 1] = (0, width - part.shape[axis + 1])
                joined.append(np.pad(part, pad, constant_values=np.nan))
            return np.concatenate(joined, axis=axis)

        values = self.normalization.denormalize(padded(chunks, 0))
        time = padded([t[..., None] for t in time_chunks], 0)[..., 0]
        draws = self.normalization.denormalize(padded(sample_chunks, 1)) if samples else None
        return self._as_dataset(ds, dataset, time, values, times, draws)

    def _as_dataset(self, ds, dataset, time, values, times, draws=None) -> xr.Dataset:
        layout = dataset.layout
        data_vars = {TIME: ((TRAJECTORY, OBS), time, dict(ds[TIME].attrs))}
        column = 0
        for name, width, is_vector in zip(layout.variables, layout.widths, layout.vector, strict=True):
            block = values[..., column:column + width]
            column += width
            attrs = dict(ds[name].attrs)
            if is_vector:
                data_vars[name] = ((TRAJECTORY, OBS, COMPONENT), block, attrs)
            else:
                data_vars[name] = ((TRAJECTORY, OBS), block[..., 0], attrs)
            if draws is not None:
                drawn = draws[..., column - width:column]
                sample_attrs = {**attrs, "long_name": f"posterior predictive samples of {attrs.get('long_name', name)}"}
                data_vars[f"{name}_samples"] = (
                    ((SAMPLE, TRAJECTORY, OBS, COMPONENT), drawn, sample_attrs) if is_vector
                    else ((SAMPLE, TRAJECTORY, OBS), drawn[..., 0], sample_attrs))
        for name in layout.static:
            data_vars[name] = ((TRAJECTORY,), ds[name].values, dict(ds[name].attrs))
        coords = {name: coord for name, coord in ds.coords.items()
                  if set(coord.dims) <= {TRAJECTORY, COMPONENT}}
        attrs = {**DATASET_ATTRS, **{k: v for k, v in ds.attrs.items() if k in ("title", "institution")},
                 "source": f"predicted by neurode run {self.path}",
                 "neurode_run": str(self.path), "neurode_prediction_times": "observed" if times is None else "given"}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def load_run(path: str | os.PathLike, *, weights: str = "best", device: str = "cpu") -> Run:
    """Open the run directory ``path`` (``weights``: ``"best"`` or ``"latest"``)."""
    directory = rd.RunDirectory(path)
    directory.require()
    config = validate_config(load_toml(directory / rd.CONFIG))
    info = directory.read_run_json()
    normalization = NormalizationStats.load(directory / rd.NORMALIZATION)
    file = rd.BEST if weights == "best" else rd.MODEL
    model = load_model(directory.path, file, device=resolve_device(device),
                       dtype=DTYPES[info.get("dtype", "float32")])
    return Run(Path(path), config, info, normalization, model, info.get("summary", {}))


def train(config: dict[str, Any] | TrainConfig | str | os.PathLike | None = None, *,
          resume: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
          reporter: Reporter | None = None) -> Run:
    """Train as ``neurode train`` does and return the opened :class:`Run`.

    ``config`` is a dict, a :class:`TrainConfig` or a TOML path;
    ``overrides`` are dotted keys applied on top. With ``resume``, the run
    directory's stored config is used (only the epoch/step budget may change).
    """
    from neurode.training.config import merge

    if resume is not None:
        resolved = prepare_resume(resume, overrides)
        run_dir = Path(resume)
    else:
        if config is None:
            data: dict[str, Any] = {}
        elif isinstance(config, TrainConfig):
            data = config.to_dict()
        elif isinstance(config, dict):
            data = config
        else:
            data = load_toml(config)
        resolved = validate_config(merge(data, overrides or {}))
        run_dir = default_run_dir(resolved)
    summary = Trainer(resolved, run_dir, resume=resume is not None, reporter=reporter).fit()
    run = load_run(run_dir)
    run.summary = summary
    return run
