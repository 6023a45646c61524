"""simulate(): sampling modes, per-variable missingness, noise, seeding, options and provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import neurode
from neurode.datasets.errors import SimulationConfigError, UnknownSystemError
from neurode.datasets.sampling import irregular_times, observation_mask, regular_times
from neurode.datasets.simulation import SimulationError, simulate

DATA_VARS = ["time", "position", "velocity", "mass", "stiffness", "damping"]


def _oscillator(**kwargs):
    options = {"n_trajectories": 40, "n_obs": 30, "seed": 5}
    return simulate("oscillator", **(options | kwargs))


def test_regular_sampling_is_one_shared_grid_with_both_ends():
    ds = _oscillator(t_span=(1.0, 4.0))
    np.testing.assert_array_equal(ds.time.values, np.broadcast_to(np.linspace(1.0, 4.0, 30), (40, 30)))


def test_irregular_sampling_gives_each_trajectory_its_own_count_and_times():
    ds = _oscillator(sampling="irregular", t_span=(0.0, 2.0))
    t = ds.time.values
    counts = np.isfinite(t).sum(axis=1)
    assert counts.min() >= 15 and counts.max() <= 30 and len(set(counts)) > 5
    assert np.all((t[np.isfinite(t)] >= 0.0) & (t[np.isfinite(t)] <= 2.0))
    assert len(np.unique(t[np.isfinite(t)])) == counts.sum(), "times are not shared between trajectories"


def test_irregular_times_are_sorted_and_trailing_padded():
    times = irregular_times(np.random.default_rng(0), 50, 12, (0.0, 1.0), min_obs=3)
    for row in times:
        n = int(np.isfinite(row).sum())
        assert 3 <= n <= 12 and np.all(np.isnan(row[n:])) and np.all(np.diff(row[:n]) > 0)
    assert regular_times(2, 3, (0.0, 1.0)).tolist() == [[0.0, 0.5, 1.0]] * 2


def test_missingness_is_per_variable_and_leaves_no_empty_times():
    ds = _oscillator(missing=0.4, n_trajectories=200)
    present = ds.time.notnull().values
    seen_x = ds.position.notnull().values
    seen_v = ds.velocity.notnull().values
    assert not np.any((seen_x | seen_v) != present), "a time with nothing observed was kept, or a value sits in padding"
    assert np.any(seen_x & ~seen_v) and np.any(seen_v & ~seen_x), "variables must be observed at their own times"
    # Each variable misses a sampled time with p = 0.4; times where both missed are
    # dropped, so among kept times a variable is missing with (0.4 - 0.16) / 0.84.
    expected = (0.4 - 0.4**2) / (1 - 0.4**2)
    assert (~seen_x)[present].mean() == pytest.approx(expected, abs=0.02)


def test_observation_mask_keeps_one_observation_of_an_otherwise_unseen_trajectory():
    valid = np.ones((30, 2), dtype=bool)
    mask = observation_mask(np.random.default_rng(0), valid, 0.95, n_variables=2)
    assert mask.any(axis=(0, 2)).all()


def test_noise_is_gaussian_with_the_requested_std_and_moves_nothing_else():
    clean = _oscillator(sampling="irregular", missing=0.3, n_trajectories=300)
    noisy = _oscillator(sampling="irregular", missing=0.3, n_trajectories=300, noise=0.05)
    xr.testing.assert_identical(clean.time, noisy.time)
    xr.testing.assert_identical(clean.mass, noisy.mass)
    residual = (noisy.position - clean.position).values
    assert np.array_equal(np.isnan(residual), np.isnan(clean.position.values))
    assert np.nanstd(residual) == pytest.approx(0.05, rel=0.03)
    assert abs(np.nanmean(residual)) < 0.002


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (
        _oscillator(sampling="irregular"),
        _oscillator(sampling="irregular"),
        _oscillator(sampling="irregular", seed=6),
    )
    xr.testing.assert_equal(a, b)
    assert not a.position.equals(c.position)


def test_parameter_ranges_and_fixed_values():
    ds = _oscillator(parameters={"damping": (0.1, 0.5), "mass": 2.0})
    assert np.all(ds.mass.values == 2.0)
    assert np.all((ds.damping.values >= 0.1) & (ds.damping.values <= 0.5)) and ds.damping.values.std() > 0.05
    assert json.loads(ds.attrs["neurode_parameters"]) == {
        "mass": [2.0, 2.0],
        "stiffness": [1.0, 4.0],
        "damping": [0.1, 0.5],
    }


def test_provenance_attributes_say_how_to_regenerate_the_data():
    ds = _oscillator(sampling="irregular", missing=0.1, noise=0.01, t_span=(0.0, 3.0))
    attrs = ds.attrs
    assert attrs["featureType"] == "trajectory" and attrs["Conventions"].startswith("CF-")
    assert attrs["neurode_system"] == "oscillator" and attrs["neurode_seed"] == 5
    assert attrs["neurode_version"] == neurode.__version__
    assert attrs["neurode_sampling"] == "irregular" and attrs["neurode_t_span"] == [0.0, 3.0]
    assert attrs["neurode_missing_fraction"] == 0.1 and attrs["neurode_noise_std"] == 0.01
    assert attrs["neurode_solver"] == "dopri5" and attrs["neurode_rtol"] == 1e-8
    assert ds.trajectory.attrs["cf_role"] == "trajectory_id"
    assert ds.time.attrs == {"units": "s", "long_name": "time", "standard_name": "time", "axis": "T"}
    assert list(ds.data_vars) == DATA_VARS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_trajectories": 0}, "count must be at least 1, got 0"),
        ({"n_obs": 0}, "observations per trajectory must be at least 1"),
        ({"t_span": (2.0, 1.0)}, "time span must be two finite times t0 < t1, got 2:1"),
        ({"t_span": (np.float64(9.97), np.float64(1.0))}, "time span must be two finite times t0 < t1, got 9.97:1"),
        ({"sampling": "random"}, "sampling must be one of regular, irregular, got 'random'"),
        ({"missing": 1.0}, r"missing fraction must be in [0, 1), got 1.0"),
        ({"noise": -1.0}, "noise standard deviation must be finite and >= 0, got -1.0"),
        (
            {"parameters": {"spring": 1.0}},
            "system 'oscillator' has no parameter 'spring'; its parameters: mass, stiffness, damping",
        ),
        ({"parameters": {"mass": (0.0, 1.0)}}, "parameter 'mass' must be positive, got range 0:1"),
        ({"parameters": {"damping": (0.5, 0.1)}}, "parameter 'damping' range 0.5:0.1 is not a finite range"),
    ],
)
def test_bad_options_are_refused_before_any_work(kwargs, message):
    with pytest.raises(SimulationConfigError) as info:
        _oscillator(**kwargs)
    assert message in str(info.value)


def test_every_bad_option_is_named_at_once():
    with pytest.raises(SimulationConfigError, match="count must be.*; sampling must be.*; missing fraction must be"):
        _oscillator(n_trajectories=0, sampling="x", missing=2.0)


def test_unknown_system_suggests_the_closest_name():
    with pytest.raises(UnknownSystemError, match="unknown system 'osccilator'; did you mean 'oscillator'"):
        simulate("osccilator")


def test_a_solver_failure_names_the_system_and_trajectories():
    with pytest.raises(SimulationError, match=r"solving oscillator for trajectories 0\.\.39 failed: unknown solver"):
        _oscillator(method="no_such_solver")


def test_progress_is_reported_per_block():
    calls = []
    _oscillator(n_trajectories=10, block_size=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_blocks_change_the_result_only_within_solver_tolerance():
    # One error norm covers a whole block, so other blocks take other steps.
    xr.testing.assert_allclose(
        _oscillator(sampling="irregular", block_size=7), _oscillator(sampling="irregular"), rtol=0, atol=1e-6
    )
