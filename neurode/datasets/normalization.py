"""Normalisation statistics, computed on the training split only.

Per-feature mean and standard deviation over the *observed* values (NaN is
"not observed", never a zero), and the same for the static per-trajectory
vector. Computed from the training split alone so that nothing about the
validation or test trajectories leaks into training; stored with the run as
JSON, so a resumed or evaluated run normalises exactly as training did.

Computed with dask reductions: a larger-than-memory training split streams
through once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from neurode.datasets.errors import DataError
from neurode.datasets.features import FeatureLayout
from neurode.datasets.schema import OBS, TRAJECTORY


def _safe_std(std: np.ndarray) -> np.ndarray:
    # A constant (or never observed) column would divide by zero; leave it unscaled.
    std = np.asarray(std, dtype=np.float64)
    return np.where(np.isfinite(std) & (std > 0), std, 1.0)


def _safe_mean(mean: np.ndarray) -> np.ndarray:
    mean = np.asarray(mean, dtype=np.float64)
    return np.where(np.isfinite(mean), mean, 0.0)


@dataclass(frozen=True)
class NormalizationStats:
    """Per-column shift and scale: ``(x - mean) / std``.

    Columns follow :class:`~neurode.datasets.features.FeatureLayout`; the names
    are stored so that stats cannot silently be applied to other columns.
    """

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    static_names: tuple[str, ...] = ()
    static_mean: tuple[float, ...] = ()
    static_std: tuple[float, ...] = ()

    @classmethod
    def compute(cls, train: xr.Dataset, layout: FeatureLayout | None = None) -> NormalizationStats:
        """Statistics of ``train`` (the training split) over observed values.

        Standard deviations are population ones (``ddof=0``); a column that is
        constant or never observed gets mean 0 (if unobserved) and std 1.
        """
        layout = layout or FeatureLayout.from_dataset(train)
        means, stds = [], []
        for name in layout.variables:
            var = train[name]
            along = [d for d in (TRAJECTORY, OBS) if d in var.dims]
            means.append(var.mean(along, skipna=True).data)
            stds.append(var.std(along, skipna=True).data)
        static_means = [train[name].astype(np.float64).mean(skipna=True).data for name in layout.static]
        static_stds = [train[name].astype(np.float64).std(skipna=True).data for name in layout.static]
        means, stds, static_means, static_stds = dask.compute(means, stds, static_means, static_stds)
        flat_mean = np.concatenate([np.atleast_1d(m) for m in means]) if means else np.zeros(0)
        flat_std = np.concatenate([np.atleast_1d(s) for s in stds]) if stds else np.zeros(0)
        return cls(
            feature_names=layout.feature_names,
            mean=tuple(float(v) for v in _safe_mean(flat_mean)),
            std=tuple(float(v) for v in _safe_std(flat_std)),
            static_names=layout.static,
            static_mean=tuple(float(v) for v in _safe_mean(np.asarray(static_means, dtype=np.float64))),
            static_std=tuple(float(v) for v in _safe_std(np.asarray(static_stds, dtype=np.float64))),
        )

    def check_layout(self, layout: FeatureLayout) -> None:
        """Raise unless these stats were computed for exactly ``layout``'s columns."""
        if tuple(layout.feature_names) != tuple(self.feature_names) or tuple(layout.static) != tuple(self.static_names):
            raise DataError(
                f"normalisation statistics are for features {list(self.feature_names)} and static "
                f"{list(self.static_names)}, but the data has features {list(layout.feature_names)} and static "
                f"{list(layout.static)}"
            )

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """``(values - mean) / std`` over the last axis (features)."""
        return (values - np.asarray(self.mean)) / np.asarray(self.std)

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`normalize`."""
        return values * np.asarray(self.std) + np.asarray(self.mean)

    def normalize_static(self, values: np.ndarray) -> np.ndarray:
        return (values - np.asarray(self.static_mean)) / np.asarray(self.static_std)

    # ------------------------------------------------------------------ storage

    def to_dict(self) -> dict[str, list]:
        return {key: list(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> NormalizationStats:
        try:
            stats = cls(**{key: tuple(value) for key, value in data.items()})
        except TypeError as exc:
            raise DataError(f"not normalisation statistics: {exc}") from exc
        if not len(stats.feature_names) == len(stats.mean) == len(stats.std):
            raise DataError("normalisation statistics have feature_names, mean and std of different lengths")
        return stats

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> NormalizationStats:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON atomically (temporary file in the same directory, then rename)."""
        path = Path(os.fspath(path))
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("w") as handle:
            handle.write(self.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> NormalizationStats:
        path = Path(os.fspath(path))
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: no normalisation statistics file") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None

