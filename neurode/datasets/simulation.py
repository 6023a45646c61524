"""Simulating stored datasets: solve a physical system, observe it, describe it.

:func:`simulate` draws per-trajectory parameters and initial states, draws the
observation times (regular or irregular), solves the system with neurode's
own solver (``neurode.odeint``, dopri5 in float64 by default), then masks
observations per variable and adds Gaussian noise. The result is a canonical
trajectory dataset (``neurode.datasets.schema``) with CF attributes and the
provenance needed to regenerate it: system, parameter ranges, seed,
sampling options, solver and tolerances, neurode version.

Irregular times differ per trajectory; a block of trajectories is solved in
one batched call on the sorted union of its times, and each trajectory then
takes its own times from that. Outputs at requested times are exact to the
solver's tolerance, and batching keeps the union (and memory) small.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

import neurode
from neurode.datasets.errors import DataError, SimulationConfigError
from neurode.datasets.sampling import (
    IRREGULAR,
    REGULAR,
    SAMPLING_MODES,
    gaussian_noise,
    irregular_times,
    observation_mask,
    regular_times,
)
from neurode.datasets.schema import COMPONENT, DATASET_ATTRS, OBS, TIME, TRAJECTORY, TRAJECTORY_ID_ATTRS, cf_attrs
from neurode.datasets.systems import System, get_system
from neurode.framework.errors import NeurodeError

Progress = Callable[[int, int], None]
ParameterRanges = Mapping[str, float | tuple[float, float]]


class SimulationError(DataError):
    """The solver failed on a block of trajectories."""


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated dataset (stored as provenance)."""

    system: str
    n_trajectories: int
    n_obs: int
    t_span: tuple[float, float]
    sampling: str
    missing: float
    noise: float
    parameters: dict[str, tuple[float, float]]
    seed: int
    method: str
    rtol: float
    atol: float


def resolve_parameter_ranges(system: System, overrides: ParameterRanges | None) -> dict[str, tuple[float, float]]:
    """The system's default ranges with ``overrides`` applied (a value fixes a parameter).

    Raises:
        SimulationConfigError: unknown parameter names, or ranges that are not
            finite with ``low <= high``.
    """
    ranges = {p.name: (p.low, p.high) for p in system.parameters}
    problems = []
    for name, value in (overrides or {}).items():
        if name not in ranges:
            known = ", ".join(ranges) or "(none)"
            problems.append(f"system {system.name!r} has no parameter {name!r}; its parameters: {known}")
            continue
        low, high = (value, value) if isinstance(value, (int, float)) else tuple(value)
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            problems.append(f"parameter {name!r} range {low:g}:{high:g} is not a finite range with low <= high")
            continue
        parameter = system.parameter(name)
        if not (parameter.admits(low) and parameter.admits(high)):
            problems.append(f"parameter {name!r} must be {parameter.domain}, got range {low:g}:{high:g}")
            continue
        ranges[name] = (float(low), float(high))
    if problems:
        raise SimulationConfigError("; ".join(problems))
    return ranges


def check_options(n_trajectories, n_obs, t_span, sampling, missing, noise, rtol, atol) -> None:
    """Raise :class:`SimulationConfigError` naming every option :func:`simulate` cannot honour."""
    problems = []
    if n_trajectories < 1:
        problems.append(f"count must be at least 1, got {n_trajectories}")
    if n_obs < 1:
        problems.append(f"observations per trajectory must be at least 1, got {n_obs}")
    if len(t_span) != 2 or not all(math.isfinite(t) for t in t_span) or not t_span[0] < t_span[1]:
        problems.append(f"time span must be two finite times t0 < t1, got {':'.join(f'{float(t):g}' for t in t_span)}")
    if sampling not in SAMPLING_MODES:
        problems.append(f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
    if not 0.0 <= missing < 1.0:
        problems.append(f"missing fraction must be in [0, 1), got {missing}")
    if not (noise >= 0.0 and math.isfinite(noise)):
        problems.append(f"noise standard deviation must be finite and >= 0, got {noise}")
    if not (rtol > 0 and atol > 0):
        problems.append(f"tolerances must be positive, got rtol={rtol}, atol={atol}")
    if problems:
        raise SimulationConfigError("; ".join(problems))


def solve_on_times(
    system: System,
    y0: np.ndarray,
    parameters: Mapping[str, np.ndarray],
    times: np.ndarray,
    *,
    t0: float,
    method: str = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> np.ndarray:
    """States ``[trajectory, obs, state_dim]`` at each trajectory's own ``times`` (NaN where times are).

    One batched ``neurode.odeint`` call from ``t0`` over the sorted union of
    all the block's times; each trajectory then reads its own.
    """
    finite = np.isfinite(times)
    grid = np.unique(np.concatenate([[t0], times[finite]]))
    y = torch.as_tensor(y0, dtype=torch.float64)
    p = {name: torch.as_tensor(value, dtype=torch.float64) for name, value in parameters.items()}

    def vector_field(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return system.vector_field(t, state, p)

    with torch.no_grad():
        if grid.size == 1:
            solution = y[None]
        else:
            solution = neurode.odeint(
                vector_field, y, torch.as_tensor(grid, dtype=torch.float64), rtol=rtol, atol=atol, method=method
            )
    solution = solution.numpy()  # [len(grid), trajectory, state_dim]
    position = np.searchsorted(grid, np.where(finite, times, t0))
    states = solution[position, np.arange(times.shape[0])[:, None], :]
    states[~finite] = np.nan
    return states


def _compact(times: np.ndarray, values: list[np.ndarray], keep: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Drop slots where nothing is kept, moving the rest left: padding stays trailing."""
    order = np.argsort(~keep, axis=1, kind="stable")
    rows = np.arange(times.shape[0])[:, None]
    kept = keep[rows, order]
    times = np.where(kept, times[rows, order], np.nan)
    out = []
    for value in values:
        moved = value[rows, order]
        mask = kept if moved.ndim == 2 else kept[..., None]
        out.append(np.where(mask, moved, np.nan))
    width = max(1, int(kept.sum(axis=1).max()))
    return times[:, :width], [v[:, :width] for v in out]


def simulate(
    system: str | System,
    *,
    n_trajectories: int = 100,
    n_obs: int = 100,
    t_span: tuple[float, float] | None = None,
    sampling: str = REGULAR,
    missing: float = 0.0,
    noise: float = 0.0,
    parameters: ParameterRanges | None = None,
    seed: int = 0,
    method: str | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    block_size: int = 256,
    progress: Progress | None = None,
) -> xr.Dataset:
    """Simulate ``n_trajectories`` observed trajectories of ``system``.

    Args:
        system: a name from ``neurode.datasets.systems.SYSTEMS`` or a :class:`System`.
        n_trajectories: how many trajectories.
        n_obs: observations per trajectory (the maximum, for irregular sampling).
        t_span: ``(t0, t1)``; the system's default when ``None``. Trajectories
            start at ``t0``; observation times lie in ``[t0, t1]``.
        sampling: ``"regular"`` (one shared grid, both ends included) or
            ``"irregular"`` (per-trajectory counts and uniform random times).
        missing: probability that a variable is unobserved at a time, drawn
            independently per variable. Times with nothing observed are dropped.
        noise: standard deviation of Gaussian noise added to every observed
            value, in each variable's own units.
        parameters: overrides of the default parameter ranges, ``name -> (low,
            high)`` or ``name -> value``.
        seed: fixes everything drawn; the same arguments give the same data.
        method, rtol, atol: the solver (by default the system's own: ``dopri5``, or a stiff method for a
            stiff system) and its tolerances (float64 throughout).
        block_size: trajectories solved per batched call.
        progress: called as ``progress(done, total)`` after each block.

    Returns:
        A canonical trajectory dataset, in memory, with CF and provenance attributes.
    """
    system = get_system(system) if isinstance(system, str) else system
    t_span = tuple(float(t) for t in (t_span if t_span is not None else system.t_span))
    check_options(n_trajectories, n_obs, t_span, sampling, missing, noise, rtol, atol)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationConfigError(f"seed must be a non-negative integer, got {seed!r}")
    ranges = resolve_parameter_ranges(system, parameters)
    method = system.solver if method is None else method
    config = SimulationConfig(
        system.name, n_trajectories, n_obs, t_span, sampling, missing, noise, ranges, seed, method, rtol, atol
    )

    # One stream per aspect: changing the noise does not move the times.
    param_rng, init_rng, time_rng, mask_rng, noise_rng = np.random.default_rng(seed).spawn(5)
    drawn = {name: param_rng.uniform(low, high, n_trajectories) for name, (low, high) in ranges.items()}
    y0 = np.asarray(system.initial_state(init_rng, n_trajectories, drawn), dtype=np.float64)
    if sampling == IRREGULAR:
        times = irregular_times(time_rng, n_trajectories, n_obs, t_span)
    else:
        times = regular_times(n_trajectories, n_obs, t_span)

    states = np.empty((n_trajectories, n_obs, system.state_dim))
    for start in range(0, n_trajectories, block_size):
        block = slice(start, min(start + block_size, n_trajectories))
        try:
            states[block] = solve_on_times(
                system,
                y0[block],
                {name: value[block] for name, value in drawn.items()},
                times[block],
                t0=t_span[0],
                method=method,
                rtol=rtol,
                atol=atol,
            )
        except NeurodeError as exc:
            raise SimulationError(
                f"solving {system.name} for trajectories {block.start}..{block.stop - 1} failed: {exc}"
            ) from exc
        if progress is not None:
            progress(block.stop, n_trajectories)

    valid = np.isfinite(times)
    observed = observation_mask(mask_rng, valid, missing, n_variables=len(system.variables))
    values = []
    for k, variable in enumerate(system.variables):
        value = states[:, :, list(variable.indices)]
        value = value + gaussian_noise(noise_rng, value.shape, noise)
        value = np.where(observed[k][..., None], value, np.nan)
        values.append(value if variable.is_vector else value[..., 0])
    times, values = _compact(times, values, observed.any(axis=0))
    return _to_dataset(system, config, times, values, drawn)


def _to_dataset(
    system: System,
    config: SimulationConfig,
    times: np.ndarray,
    values: list[np.ndarray],
    drawn: Mapping[str, np.ndarray],
) -> xr.Dataset:
    data_vars = {TIME: ((TRAJECTORY, OBS), times, cf_attrs(system.time_units, "time", standard_name="time", axis="T"))}
    for variable, value in zip(system.variables, values, strict=True):
        dims = (TRAJECTORY, OBS, COMPONENT) if variable.is_vector else (TRAJECTORY, OBS)
        data_vars[variable.name] = (dims, value, cf_attrs(variable.units, variable.long_name))
    for parameter in system.parameters:
        data_vars[parameter.name] = (
            (TRAJECTORY,),
            drawn[parameter.name],
            cf_attrs(parameter.units, parameter.long_name, neurode_role="parameter"),
        )
    coords = {TRAJECTORY: (TRAJECTORY, np.arange(times.shape[0]), TRAJECTORY_ID_ATTRS)}
    if system.component_axis is not None:
        axis = system.component_axis
        coords[axis.name] = (COMPONENT, np.asarray(axis.values), cf_attrs(axis.units, axis.long_name))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    attrs = {
        **DATASET_ATTRS,
        "title": f"{system.name}: {system.summary}",
        "source": f"simulated by neurode {neurode.__version__}",
        "references": system.reference,
        "history": f"{now} neurode simulate {system.name} (seed {config.seed})",
        "neurode_system": system.name,
        "neurode_version": neurode.__version__,
        "neurode_seed": config.seed,
        # JSON text rather than nested attributes: netCDF cannot store a mapping.
        "neurode_parameters": json.dumps({name: list(r) for name, r in config.parameters.items()}),
        "neurode_t_span": list(config.t_span),
        "neurode_n_obs": config.n_obs,
        "neurode_sampling": config.sampling,
        "neurode_missing_fraction": config.missing,
        "neurode_noise_std": config.noise,
        "neurode_solver": config.method,
        "neurode_rtol": config.rtol,
        "neurode_atol": config.atol,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
