"""How simulated trajectories are observed: time grids, missingness, noise.

Real measurements are irregular, so simulated ones should be too. Each
function takes its own ``numpy.random.Generator`` so that one seed fixes a
whole dataset while each aspect draws from its own stream: raising the noise
level leaves the sampling times and the trajectories unchanged.

Arrays follow the schema's padded form: ``[trajectory, obs]`` with NaN after
each trajectory's last time.
"""

from __future__ import annotations

import numpy as np

REGULAR = "regular"
IRREGULAR = "irregular"
SAMPLING_MODES: tuple[str, ...] = (REGULAR, IRREGULAR)


def regular_times(n_trajectories: int, n_obs: int, t_span: tuple[float, float]) -> np.ndarray:
    """The same evenly spaced grid, both ends included, for every trajectory."""
    grid = np.linspace(t_span[0], t_span[1], n_obs)
    return np.broadcast_to(grid, (n_trajectories, n_obs)).copy()


def irregular_times(
    rng: np.random.Generator,
    n_trajectories: int,
    n_obs: int,
    t_span: tuple[float, float],
    *,
    min_obs: int | None = None,
) -> np.ndarray:
    """Per-trajectory random times: counts uniform in ``[min_obs, n_obs]``, times uniform in ``t_span``.

    Each trajectory gets its own number of observations (default at least
    half of ``n_obs``) at its own sorted times, NaN-padded to ``n_obs``.
    """
    if min_obs is None:
        min_obs = max(1, n_obs // 2)
    min_obs = min(max(1, min_obs), n_obs)
    counts = rng.integers(min_obs, n_obs + 1, size=n_trajectories)
    times = np.full((n_trajectories, n_obs), np.nan)
    for i, count in enumerate(counts):
        times[i, :count] = np.sort(rng.uniform(t_span[0], t_span[1], size=count))
    return times


def observation_mask(rng: np.random.Generator, valid: np.ndarray, missing: float, *, n_variables: int) -> np.ndarray:
    """``[n_variables, trajectory, obs]`` booleans: True where a variable is observed.

    ``valid`` marks the sampling times (False in padding). Each variable
    misses each of them independently with probability ``missing``, so
    variables end up observed at different times. Where this would leave a
    trajectory with nothing observed at all, one observation of one variable
    is kept: a trajectory nobody ever looked at is not data.
    """
    observed = (rng.random((n_variables, *valid.shape)) >= missing) & valid[None]
    for i in np.flatnonzero(~observed.any(axis=(0, 2)) & valid.any(axis=1)):
        slots = np.flatnonzero(valid[i])
        observed[rng.integers(n_variables), i, slots[rng.integers(slots.size)]] = True
    return observed


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Independent zero-mean Gaussian noise of standard deviation ``std``."""
    if std == 0:
        return np.zeros(shape)
    return rng.normal(0.0, std, size=shape)
