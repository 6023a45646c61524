"""Normalisation statistics: observed values of the training split only, JSON round trip, applied per column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurode.datasets.errors import DataError
from neurode.datasets.examples import irregular_example
from neurode.datasets.features import FeatureLayout
from neurode.datasets.normalization import NormalizationStats
from neurode.datasets.splits import split_by_trajectory
from neurode.datasets.trajectory_dataset import TrajectoryDataset


@pytest.fixture
def parts():
    return split_by_trajectory(irregular_example(n_trajectories=40, seed=9), seed=2)


def test_statistics_come_from_the_training_split_alone(parts):
    train = parts["train"]
    stats = NormalizationStats.compute(train)
    assert stats.feature_names == ("v[0]", "v[1]", "x") and stats.static_names == ("damping",)
    v = train.v.values.reshape(-1, 2)
    np.testing.assert_allclose(stats.mean, [*np.nanmean(v, axis=0), np.nanmean(train.x.values)])
    np.testing.assert_allclose(stats.std, [*np.nanstd(v, axis=0), np.nanstd(train.x.values)])
    np.testing.assert_allclose(stats.static_mean, [train.damping.values.mean()])
    everything = NormalizationStats.compute(irregular_example(n_trajectories=40, seed=9))
    assert not np.allclose(everything.mean, stats.mean), "train-only statistics must differ from whole-dataset ones"


def test_validation_items_are_normalised_with_training_statistics(parts):
    stats = NormalizationStats.compute(parts["train"])
    val = parts["val"]
    item = TrajectoryDataset(val, normalization=stats, dtype=torch.float64)[0]
    n = item.times.shape[0]
    raw = np.concatenate([val.v.values[0, :n], val.x.values[0, :n, None]], axis=-1)
    expected = (raw - np.asarray(stats.mean)) / np.asarray(stats.std)
    np.testing.assert_allclose(item.values.numpy()[item.mask.numpy()], expected[~np.isnan(expected)])
    np.testing.assert_allclose(
        item.static.numpy(), (val.damping.values[0] - stats.static_mean[0]) / stats.static_std[0]
    )
    np.testing.assert_allclose(stats.denormalize(stats.normalize(raw)), raw)


def test_json_round_trip_and_atomic_save(parts, tmp_path):
    stats = NormalizationStats.compute(parts["train"])
    path = stats.save(tmp_path / "normalization.json")
    assert NormalizationStats.load(path) == stats
    assert [p.name for p in tmp_path.iterdir()] == ["normalization.json"]
    with pytest.raises(DataError, match="no normalisation statistics file"):
        NormalizationStats.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        NormalizationStats.load(tmp_path / "bad.json")


def test_constant_or_unobserved_columns_are_left_unscaled(parts):
    train = parts["train"].copy()
    train["x"] = train.x * 0 + 3.0
    stats = NormalizationStats.compute(train)
    assert stats.mean[-1] == 3.0 and stats.std[-1] == 1.0


def test_statistics_refuse_other_columns(parts):
    stats = NormalizationStats.compute(parts["train"])
    with pytest.raises(
        DataError, match=r"statistics are for features \['v\[0\]', 'v\[1\]', 'x'\].*data has features \['x'\]"
    ):
        TrajectoryDataset(parts["val"], variables=["x"], normalization=stats)
    layout = FeatureLayout.from_dataset(parts["train"], variables=["x"], static=[])
    assert NormalizationStats.compute(parts["train"], layout).feature_names == ("x",)
