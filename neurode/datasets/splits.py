"""Splitting trajectory datasets: by trajectory (train/val/test) and by time.

By trajectory
    A seeded permutation of whole trajectories into named parts, so no
    trajectory contributes to two of them. The parts keep the ``trajectory``
    coordinate (the original ids), so which trajectory went where stays
    visible in every part and can be recorded with a run.
By time
    Each trajectory cut at a time ``t_split`` into the observed prefix
    (``time < t_split``) and the forecast suffix (``time >= t_split``): the
    extrapolation task of Rubanova et al. (2019), sec. 4. Both parts are
    canonical datasets with the same trajectories in the same order; the
    suffix is shifted left so its padding stays trailing.

Both stay lazy except for the small arrays they must read (the time variable
for splitting by time).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import xarray as xr

from neurode.datasets.errors import DataError
from neurode.datasets.layouts import gather_padded
from neurode.datasets.schema import OBS, TIME, TRAJECTORY, TRAJECTORY_ID_ATTRS

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
DEFAULT_NAMES = ("train", "val", "test")


def trajectory_split_indices(
    n_trajectories: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int = 0,
    names: Sequence[str] = DEFAULT_NAMES,
) -> dict[str, np.ndarray]:
    """Disjoint, sorted trajectory positions per part, covering all of them.

    Part sizes are the rounded cumulative fractions, so they sum to
    ``n_trajectories`` exactly. The same seed gives the same split.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise DataError(f"fractions must be a sequence of numbers, got {fractions!r}")
    if len(fractions) != len(names):
        raise DataError(f"{len(fractions)} fractions for {len(names)} split names {list(names)}")
    if not all(isinstance(f, (int, float, np.integer, np.floating)) and not isinstance(f, bool) for f in fractions):
        raise DataError(f"split fractions must be numbers, got {list(fractions)!r}")
    fractions = np.asarray(fractions, dtype=np.float64)
    if not np.isfinite(fractions).all():
        raise DataError(f"split fractions must be finite, got {fractions.tolist()}")
    if (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise DataError(f"split fractions must be non-negative and sum to 1, got {fractions.tolist()}")
    order = np.random.default_rng(seed).permutation(n_trajectories)
    bounds = np.rint(np.cumsum(fractions) * n_trajectories).astype(int)
    bounds[-1] = n_trajectories
    parts = np.split(order, bounds[:-1])
    return {name: np.sort(part) for name, part in zip(names, parts, strict=True)}


def _with_ids(ds: xr.Dataset) -> xr.Dataset:
    if TRAJECTORY in ds.coords:
        return ds
    return ds.assign_coords({TRAJECTORY: (TRAJECTORY, np.arange(ds.sizes[TRAJECTORY]), TRAJECTORY_ID_ATTRS)})


def split_by_trajectory(
    ds: xr.Dataset,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int = 0,
    names: Sequence[str] = DEFAULT_NAMES,
) -> dict[str, xr.Dataset]:
    """Split ``ds`` into parts of whole trajectories (lazy selections of ``ds``).

    Each part carries ``attrs["neurode_split"]`` (its name) and the original
    trajectory ids as its ``trajectory`` coordinate.

    Warns when a part asked for (a positive fraction) gets no trajectory, as
    with one long recorded series: then :func:`split_by_time` is the split.
    """
    ds = _with_ids(ds)
    indices = trajectory_split_indices(ds.sizes[TRAJECTORY], fractions, seed=seed, names=names)
    asked = dict(zip(names, fractions, strict=True))
    empty = [name for name, index in indices.items() if asked[name] > 0 and not len(index)]
    if empty:
        n = ds.sizes[TRAJECTORY]
        warnings.warn(
            f"split_by_trajectory: {n} trajector{'y' if n == 1 else 'ies'} cannot fill every part; "
            f"{', '.join(repr(name) for name in empty)} {'is' if len(empty) == 1 else 'are'} empty. "
            "To hold out the later part of each trajectory instead, use split_by_time(ds, fraction=0.8)",
            UserWarning,
            stacklevel=2,
        )
    parts = {}
    for name, index in indices.items():
        part = ds.isel({TRAJECTORY: index})
        part.attrs = {**ds.attrs, "neurode_split": name, "neurode_split_seed": seed}
        parts[name] = part
    return parts


def split_by_time(
    ds: xr.Dataset,
    *,
    t_split: float | None = None,
    fraction: float | None = None,
    drop_empty: bool = True,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Cut every trajectory at ``t_split`` into (observed prefix, forecast suffix).

    Args:
        t_split: the cut time. Observations with ``time < t_split`` are
            observed, the rest are to be forecast.
        fraction: alternatively, the cut as a fraction of the dataset's time
            span: ``t_split = t_min + fraction * (t_max - t_min)``.
        drop_empty: drop trajectories with nothing before or nothing after the
            cut (from both parts, keeping them aligned); with ``False`` such
            trajectories stay, with empty rows.

    Returns:
        ``(observed, forecast)``: canonical datasets with the same
        trajectories in the same order. Per-trajectory variables are in both.
    """
    if (t_split is None) == (fraction is None):
        raise DataError("give exactly one of t_split or fraction")
    ds = _with_ids(ds)
    times = np.asarray(ds[TIME].values, dtype=np.float64)
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise DataError(f"fraction must be in (0, 1), got {fraction}")
        low, high = np.nanmin(times), np.nanmax(times)
        t_split = float(low + fraction * (high - low))
    present = np.isfinite(times)
    before = present & (times < t_split)
    after = present & ~before
    n_before = before.sum(axis=1)
    n_after = after.sum(axis=1)

    if drop_empty:
        keep = (n_before > 0) & (n_after > 0)
        if not keep.any():
            raise DataError(f"no trajectory has observations both before and after t_split={t_split}")
        ds = ds.isel({TRAJECTORY: np.flatnonzero(keep)})
        times, before, after = times[keep], before[keep], after[keep]
        n_before, n_after = n_before[keep], n_after[keep]

    prefix_width = max(1, int(n_before.max()))
    prefix = xr.DataArray(before[:, :prefix_width], dims=(TRAJECTORY, OBS))
    observed = ds.isel({OBS: slice(0, prefix_width)})
    for name in [name for name, var in observed.data_vars.items() if OBS in var.dims]:
        observed[name] = observed[name].where(prefix).assign_attrs(observed[name].attrs)

    # The suffix starts at column n_before[i] of row i: shift it to column 0.
    suffix_width = max(1, int(n_after.max()))
    rows = np.arange(times.shape[0])
    columns = np.arange(suffix_width)
    valid = columns[None, :] < n_after[:, None]
    index_rows = np.broadcast_to(rows[:, None], valid.shape)
    index_cols = np.where(valid, n_before[:, None] + columns[None, :], 0)
    forecast = ds.drop_vars([name for name, var in ds.data_vars.items() if OBS in var.dims])
    for name, var in ds.data_vars.items():
        if OBS in var.dims:
            shifted = gather_padded(var, {TRAJECTORY: index_rows, OBS: index_cols}, valid)
            forecast[name] = shifted.drop_vars(TRAJECTORY, errors="ignore").assign_attrs(var.attrs)
    forecast = forecast[list(ds.data_vars)]
    observed.attrs = {**ds.attrs, "neurode_time_split": t_split, "neurode_time_part": "observed"}
    forecast.attrs = {**ds.attrs, "neurode_time_split": t_split, "neurode_time_part": "forecast"}
    return observed, forecast

