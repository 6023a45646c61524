"""Splits by trajectory (disjoint, seeded, ids kept) and by time (observed prefix, forecast suffix)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import neurode
from neurode.datasets.errors import DataError
from neurode.datasets.examples import irregular_example
from neurode.datasets.io import write_zarr
from neurode.datasets.schema import is_lazy, validate
from neurode.datasets.splits import split_by_time, split_by_trajectory, trajectory_split_indices


def test_trajectory_splits_are_disjoint_cover_everything_and_are_seeded():
    parts = trajectory_split_indices(101, (0.7, 0.2, 0.1), seed=3)
    assert [len(p) for p in parts.values()] == [71, 20, 10]
    assert sorted(np.concatenate(list(parts.values()))) == list(range(101))
    again = trajectory_split_indices(101, (0.7, 0.2, 0.1), seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = trajectory_split_indices(101, (0.7, 0.2, 0.1), seed=4)
    assert not np.array_equal(parts["test"], other["test"])


@pytest.mark.parametrize(
    ("fractions", "message"),
    [((0.5, 0.5), "2 fractions for 3 split names"), ((0.8, 0.3, -0.1), "non-negative and sum to 1"),
     (("0.8", "0.1", "0.1"), "split fractions must be numbers"), ("abc", "must be a sequence of numbers"),
     ((0.8, float("nan"), 0.1), "must be finite")],
)
def test_bad_fractions(fractions, message):
    with pytest.raises(DataError, match=message):
        trajectory_split_indices(10, fractions)


def test_split_by_trajectory_keeps_ids_and_stays_lazy(tmp_path):
    example = irregular_example(n_trajectories=30)
    ds = neurode.load(write_zarr(example, tmp_path / "e.zarr"))
    parts = split_by_trajectory(ds, seed=1)
    assert all(is_lazy(part) for part in parts.values())
    ids = {name: part.trajectory.values for name, part in parts.items()}
    assert sorted(np.concatenate(list(ids.values()))) == list(range(30))
    for name, part in parts.items():
        assert part.attrs["neurode_split"] == name
        xr.testing.assert_identical(part.x.compute(), example.x.sel(trajectory=ids[name]))


def test_split_by_time_cuts_each_trajectory_at_t_split(example):
    observed, forecast = split_by_time(example, t_split=5.0)
    validate(observed)
    validate(forecast)
    np.testing.assert_array_equal(observed.trajectory.values, forecast.trajectory.values)
    for k, i in enumerate(observed.trajectory.values):
        t = example.time.values[i]
        t = t[np.isfinite(t)]
        before, after = t[t < 5.0], t[t >= 5.0]
        np.testing.assert_array_equal(observed.time.values[k][np.isfinite(observed.time.values[k])], before)
        np.testing.assert_array_equal(forecast.time.values[k][: len(after)], after)
        x = example.x.values[i][: len(t)]
        np.testing.assert_array_equal(observed.x.values[k][: len(before)], x[: len(before)])
        np.testing.assert_array_equal(forecast.x.values[k][: len(after)], x[len(before):])
        np.testing.assert_array_equal(forecast.v.values[k][: len(after)], example.v.values[i][len(before): len(t)])
    np.testing.assert_array_equal(forecast.damping.values, example.damping.sel(trajectory=observed.trajectory).values)
    assert observed.attrs["neurode_time_part"] == "observed" and forecast.attrs["neurode_time_split"] == 5.0


def test_split_by_time_drops_trajectories_with_an_empty_side_unless_asked(example):
    t = example.time.values
    both_sides = [i for i in range(len(t)) if np.nanmin(t[i]) < 5.0 <= np.nanmax(t[i])]
    observed, _ = split_by_time(example, t_split=5.0)
    assert observed.trajectory.values.tolist() == both_sides
    kept, _ = split_by_time(example, t_split=5.0, drop_empty=False)
    assert kept.sizes["trajectory"] == example.sizes["trajectory"]


def test_split_by_time_with_a_fraction_of_the_span_and_lazily(example, tmp_path):
    ds = neurode.load(write_zarr(example, tmp_path / "e.zarr", chunk_trajectories=5))
    observed, forecast = split_by_time(ds, fraction=0.5)
    t_split = float(np.nanmin(example.time) + 0.5 * (np.nanmax(example.time) - np.nanmin(example.time)))
    assert forecast.attrs["neurode_time_split"] == pytest.approx(t_split)
    assert is_lazy(observed) and is_lazy(forecast)
    eager_observed, eager_forecast = split_by_time(example, t_split=t_split)
    xr.testing.assert_identical(forecast.compute(), eager_forecast)
    xr.testing.assert_identical(observed.compute(), eager_observed)


def test_split_by_time_needs_exactly_one_cut(example):
    with pytest.raises(DataError, match="exactly one of t_split or fraction"):
        split_by_time(example)
    with pytest.raises(DataError, match="no trajectory has observations both before and after t_split=100.0"):
        split_by_time(example, t_split=100.0)


def test_splitting_one_trajectory_warns_and_points_to_split_by_time(example):
    from neurode.datasets.splits import split_by_time, split_by_trajectory

    expected = r"1 trajectory cannot fill every part; 'val', 'test' are empty.*split_by_time"
    with pytest.warns(UserWarning, match=expected):
        parts = split_by_trajectory(example.isel(trajectory=[0]))
    assert parts["train"].sizes["trajectory"] == 1 and parts["val"].sizes["trajectory"] == 0
    observed, forecast = split_by_time(example.isel(trajectory=[0]), fraction=0.8)
    assert observed.sizes["trajectory"] == forecast.sizes["trajectory"] == 1


def test_a_split_that_fills_every_part_does_not_warn(example):
    import warnings

    from neurode.datasets.splits import split_by_trajectory

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_by_trajectory(example)


@pytest.mark.parametrize("seed", ["a", -1, 1.5, None])
def test_bad_seed_is_a_data_error_naming_it(seed):
    with pytest.raises(DataError, match=f"seed must be a non-negative integer, got {seed!r}"):
        split_by_trajectory(irregular_example(), seed=seed)
