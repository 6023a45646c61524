"""Each simulator, solved with neurode's own dopri5, reproduces its known solution or invariant."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

from neurode.datasets.schema import validate
from neurode.datasets.simulation import simulate
from neurode.datasets.systems import (
    HEAT_GRID,
    SPIRAL_MATRIX,
    SYSTEMS,
    heat_amplitudes,
    heat_eigenvalues,
    heat_modes,
)


def _regular(name, n=8, n_obs=41, **kwargs):
    return simulate(name, n_trajectories=n, n_obs=n_obs, seed=11, **kwargs)


def _rows(ds, *names):
    return [ds[name].values for name in names]


def _assert_constant(quantity, rtol=2e-6):
    """Each trajectory's row stays at its initial value.

    The default solver tolerance is rtol=1e-8 per step; over a whole span the
    global error, and so the drift of an invariant, stays below 2e-6.
    """
    np.testing.assert_allclose(quantity, np.broadcast_to(quantity[:, :1], quantity.shape), rtol=rtol)


#: Systems whose whole state is stored (``periodic`` hides its second coordinate).
FULLY_OBSERVED = [
    name
    for name, system in SYSTEMS.items()
    if sorted(i for v in system.variables for i in v.indices) == list(range(system.state_dim))
]


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_every_system_yields_a_valid_dataset_with_parameters_as_variables(name):
    system = SYSTEMS[name]
    ds = simulate(name, n_trajectories=5, n_obs=12, sampling="irregular", missing=0.2, noise=0.01, seed=1)
    validate(ds)
    for parameter in system.parameters:
        assert ds[parameter.name].dims == ("trajectory",)
        assert ds[parameter.name].attrs["units"] == parameter.units
        values = ds[parameter.name].values
        assert np.all((parameter.low <= values) & (values <= parameter.high))
    for variable in system.variables:
        assert ds[variable.name].attrs["units"] == variable.units
    assert ds.attrs["neurode_system"] == name


def _numpy_field(system, params, i):
    p = {name: torch.tensor([value[i]], dtype=torch.float64) for name, value in params.items()}

    def f(t, y):
        return system.vector_field(torch.tensor(t), torch.as_tensor(y)[None], p)[0].numpy()

    return f


@pytest.mark.parametrize("name", FULLY_OBSERVED)
def test_every_system_agrees_with_scipy_dop853(name):
    """An independent solver on the same equations (scipy's Radau for a stiff system): trajectories agree to
    1e-6."""
    system = SYSTEMS[name]
    t_span = (system.t_span[0], min(system.t_span[1], 2.0)) if name == "lorenz" else system.t_span  # chaos
    ds = _regular(name, n=3, n_obs=21, t_span=t_span)
    params = {p.name: ds[p.name].values for p in system.parameters}
    state = np.zeros((3, 21, system.state_dim))
    for variable in system.variables:
        value = ds[variable.name].values
        state[:, :, list(variable.indices)] = value if value.ndim == 3 else value[..., None]
    for i in range(3):
        reference = scipy.integrate.solve_ivp(
            _numpy_field(system, params, i), t_span, state[i, 0], t_eval=ds.time.values[i], rtol=1e-12, atol=1e-12,
            method="DOP853" if system.solver == "dopri5" else "Radau",  # a stiff system: an implicit reference
        )
        np.testing.assert_allclose(state[i], reference.y.T, atol=1e-6 * max(1.0, np.abs(reference.y).max()))


def test_linear_spiral_is_the_matrix_exponential():
    ds = _regular("spiral_linear", sampling="irregular")
    A = np.asarray(SPIRAL_MATRIX)
    for i in range(ds.sizes["trajectory"]):
        t = ds.time.values[i]
        n = int(np.isfinite(t).sum())
        z = ds.z.values[i, :n]
        for j in range(n):
            expected = scipy.linalg.expm(A * (t[j] - t[0])) @ z[0]
            np.testing.assert_allclose(z[j], expected, rtol=0, atol=1e-7)


def test_undamped_oscillator_conserves_energy():
    ds = _regular("oscillator", parameters={"damping": 0.0})
    x, v, m, k = _rows(ds, "position", "velocity", "mass", "stiffness")
    energy = 0.5 * m[:, None] * v**2 + 0.5 * k[:, None] * x**2
    _assert_constant(energy)


def test_damped_oscillator_loses_energy_monotonically():
    ds = _regular("oscillator", parameters={"damping": (0.2, 0.3)})
    x, v, m, k = _rows(ds, "position", "velocity", "mass", "stiffness")
    energy = 0.5 * m[:, None] * v**2 + 0.5 * k[:, None] * x**2
    assert np.all(np.diff(energy, axis=1) < 0)


def test_undamped_pendulum_conserves_energy():
    ds = _regular("pendulum", parameters={"damping": 0.0})
    theta, omega, length, g = _rows(ds, "angle", "angular_velocity", "length", "gravity")
    energy = 0.5 * length[:, None] ** 2 * omega**2 + g[:, None] * length[:, None] * (1 - np.cos(theta))
    _assert_constant(energy)


def test_lotka_volterra_conserves_its_first_integral():
    ds = _regular("lotka_volterra")
    x, y, alpha, beta, gamma, delta = _rows(ds, "prey", "predator", "alpha", "beta", "gamma", "delta")
    V = delta[:, None] * x - gamma[:, None] * np.log(x) + beta[:, None] * y - alpha[:, None] * np.log(y)
    _assert_constant(V)


def test_kepler_conserves_energy_and_angular_momentum():
    ds = _regular("kepler")
    r, v, gm = _rows(ds, "position", "velocity", "gm")
    energy = 0.5 * (v**2).sum(-1) - gm[:, None] / np.linalg.norm(r, axis=-1)
    momentum = r[..., 0] * v[..., 1] - r[..., 1] * v[..., 0]
    _assert_constant(energy)
    _assert_constant(momentum)
    # Started at periapsis |r| = 1, the orbit's eccentricity is the drawn parameter.
    e = ds.eccentricity.values
    np.testing.assert_allclose(momentum[:, 0] ** 2 / gm, 1 + e, rtol=1e-12)


def test_periodic_signal_is_a_sinusoid_of_its_frequency_and_amplitude():
    ds = _regular("periodic", sampling="irregular")
    for i in range(ds.sizes["trajectory"]):
        t = ds.time.values[i]
        keep = np.isfinite(t)
        s, omega = ds.signal.values[i, keep], ds.frequency.values[i]
        # s(t) = a cos(omega t) + b sin(omega t): fit a, b and check the fit is exact.
        basis = np.stack([np.cos(omega * t[keep]), np.sin(omega * t[keep])], axis=-1)
        (a, b), *_ = np.linalg.lstsq(basis, s, rcond=None)
        np.testing.assert_allclose(basis @ [a, b], s, atol=1e-7)
        assert np.hypot(a, b) == pytest.approx(ds.amplitude.values[i], abs=1e-7)


def test_heat_equation_decays_each_sine_mode_at_its_discrete_rate():
    ds = _regular("heat", n_obs=11)
    u, kappa, t = ds.u.values, ds.diffusivity.values, ds.time.values
    np.testing.assert_array_equal(ds.x.values, HEAT_GRID)
    modes, rates = heat_modes(), heat_eigenvalues()
    for i in range(ds.sizes["trajectory"]):
        amplitudes = heat_amplitudes(u[i, 0])
        expected = (amplitudes[None, :] * np.exp(kappa[i] * rates[None, :] * t[i][:, None])) @ modes
        np.testing.assert_allclose(u[i], expected, atol=1e-7)


def test_bistable_spiral_settles_into_both_wells():
    ds = simulate(
        "spiral_bistable", n_trajectories=16, n_obs=5, t_span=(0.0, 80.0), parameters={"damping": 0.3}, seed=2
    )
    final = ds.z.values[:, -1]
    np.testing.assert_allclose(np.abs(final[:, 0]), 1.0, atol=1e-4)
    np.testing.assert_allclose(final[:, 1], 0.0, atol=1e-4)
    assert {-1.0, 1.0} == set(np.sign(final[:, 0]))


def test_van_der_pol_reaches_its_limit_cycle_of_amplitude_two():
    ds = simulate("van_der_pol", n_trajectories=6, n_obs=601, t_span=(0.0, 30.0), parameters={"mu": 1.0}, seed=3)
    late = ds.x.values[:, 400:]
    np.testing.assert_allclose(np.abs(late).max(axis=1), 2.0086, atol=2e-3)  # mu = 1: amplitude 2.00861...


def test_lorenz_stays_on_its_attractor():
    ds = _regular("lorenz")
    assert np.all(np.abs(ds.x.values) < 25) and np.all((ds.z.values > 0) & (ds.z.values < 55))


def test_robertson_conserves_the_total_concentration_and_is_solved_as_stiff():
    ds = _regular("robertson")
    a, b, c = _rows(ds, "a", "b", "c")
    np.testing.assert_allclose(a + b + c, 1.0, rtol=0, atol=1e-12)  # A + B + C is invariant: (1, 1, 1)·f = 0
    assert ds.attrs["neurode_solver"] == "rodas5p" and 0 < np.nanmax(b) < 1e-4  # B stays tiny: the stiffness
    assert simulate("robertson", n_trajectories=2, n_obs=5, method="rodas4").attrs["neurode_solver"] == "rodas4"
