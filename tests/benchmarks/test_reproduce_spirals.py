"""benchmarks/reproduce_spirals.py: the data split never lets training read a scored point."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
reproduce_spirals = pytest.importorskip("reproduce_spirals")


def test_training_windows_reach_the_last_point_and_their_futures_are_nan():
    rel_times, noisy, clean, _, starts, rotation = reproduce_spirals.spiral_windows(400, 0, n_train=300,
                                                                                    train_start_max=899)
    assert rel_times.shape == (200,) and noisy.shape == clean.shape == (400, 200, 2)
    # training windows as the torchdiffeq example draws them (last start 899: the window ends on point 999),
    # test windows leave room for their 100 scored points
    assert starts.min() >= 100 and 799 < starts[:300].max() <= 899 and starts[300:].max() <= 799
    assert np.isnan(noisy[:300, 100:]).all() and np.isnan(clean[:300, 100:]).all()
    assert np.isfinite(noisy[:, :100]).all() and np.isfinite(clean[300:]).all()
    assert sorted(np.bincount(rotation)) == [200, 200]


def test_the_windows_of_spirals_keep_their_shared_draws():
    """``spirals`` (bench_training's data) draws every window from points 100 to 899 with a future, as before."""
    rel_times, noisy, clean, rng = reproduce_spirals.spirals(50, 3)
    again = reproduce_spirals.spiral_windows(50, 3)
    np.testing.assert_array_equal(noisy, again[1])
    assert np.isfinite(clean).all() and again[4].max() <= 799
    # the clean points lie on the two Archimedean spirals: radius b * t about x = +5 (counter-clockwise)
    # and b * 50 / (6 pi + 1 - t) about x = -5 (clockwise)
    centre = np.where(again[5][:, None, None] == 1, [5.0, 0.0], [-5.0, 0.0])
    t = np.linspace(0, 6 * np.pi, 1000)[again[4][:, None] + np.arange(200)]
    radius = np.where(again[5][:, None] == 1, 0.3 * t, 15.0 / (6 * np.pi + 1 - t))
    np.testing.assert_allclose(np.linalg.norm(clean - centre, axis=-1), radius, rtol=1e-12)


def test_futures_past_every_training_window_are_found():
    starts = np.array([100, 500, 150, 450, 699, 700, 600, 700])
    rotation = np.array([0, 1, 0, 1, 0, 0, 1, 1])
    # training windows end by point 249 (clockwise) and 599 (counter-clockwise); a future ends at start + 199
    assert reproduce_spirals.beyond_training(starts, rotation, 4).tolist() == [True, True, True, True]
    starts[:4] = [800, 750, 820, 760]  # now by points 919 and 859
    assert reproduce_spirals.beyond_training(starts, rotation, 4).tolist() == [False, False, False, True]
