"""Physical systems that generate stored simulation datasets.

A table, not a registry: each :class:`System` is plain data (state size, the
variables stored, parameters with default ranges and units, a default time
span) plus two functions, the vector field and a sampler of initial states.
``neurode.datasets.simulation`` solves them with neurode's own solvers.

Vector fields are batched torch functions ``f(t, y, p)`` with ``y`` of shape
``[n_trajectories, state_dim]`` and ``p`` a mapping from parameter name to a
tensor ``[n_trajectories]``: one solve advances a whole block of
trajectories, each with its own parameters.

The systems and where they come from:

- ``spiral_linear``: dz/dt = A z, A = [[-0.1, -1], [1, -0.1]]: the linear
  spiral of Chen et al. (2018), "Neural Ordinary Differential Equations";
  exact solution z(t) = expm(A t) z0.
- ``spiral_bistable``: the nonlinear, bistable spiral: a damped double-well
  (Duffing) oscillator x'' = x - x^3 - delta x', whose two stable spiral foci at
  (+-1, 0) split the plane into two basins (Guckenheimer & Holmes 1983, sec. 2.2).
- ``oscillator``: damped harmonic oscillator m x'' + c x' + k x = 0; with c = 0
  the energy m v^2/2 + k x^2/2 is conserved.
- ``pendulum``: nonlinear pendulum theta'' = -(g/L) sin(theta) - b theta'; with
  b = 0 the energy L^2 omega^2/2 + g L (1 - cos theta) (per unit mass) is conserved.
- ``lotka_volterra``: x' = alpha x - beta x y, y' = delta x y - gamma y; conserves
  V = delta x - gamma ln x + beta y - alpha ln y (Lotka 1925, Volterra 1926).
- ``van_der_pol``: x'' - mu (1 - x^2) x' + x = 0, a limit cycle (van der Pol 1926).
- ``lorenz``: the Lorenz (1963) system; chaotic, so stored trajectories are
  accurate only to the solver tolerance's horizon.
- ``kepler``: the two-body problem in relative coordinates, r'' = -GM r/|r|^3,
  started at periapsis with a given eccentricity; conserves energy and angular
  momentum.
- ``periodic``: the 1-d periodic toy signal of Rubanova et al. (2019), "Latent
  ODEs for irregularly-sampled time series", sec. 4.1: a shared amplitude,
  a per-trajectory frequency and a random phase. Generated as the first
  coordinate of a rotation in the plane (the hidden second coordinate is not
  stored), so s(t) = s0 cos(omega t) + c0 sin(omega t) exactly.
- ``heat``: the 1-d heat equation u_t = kappa u_xx on [0, 1] with u = 0 at both
  ends, by the method of lines: second-order central differences on 32
  interior points. Its sine modes are exact eigenvectors of the discrete
  Laplacian, so the semi-discrete solution is known in closed form.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from neurode.datasets.errors import UnknownSystemError

VectorField = Callable[[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
InitialState = Callable[[np.random.Generator, int, Mapping[str, np.ndarray]], np.ndarray]


REAL, POSITIVE, NONNEGATIVE = "real", "positive", "non-negative"


@dataclass(frozen=True)
class Parameter:
    """A physical parameter, drawn per trajectory uniformly from ``[low, high]``.

    ``low == high`` fixes it. Stored as a per-trajectory variable.
    """

    name: str
    low: float
    high: float
    units: str
    long_name: str
    #: Values that make physical sense: a mass is positive, a damping
    #: coefficient non-negative. Ranges outside it are refused up front.
    domain: str = "real"

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def admits(self, value: float) -> bool:
        """Whether ``value`` lies in the parameter's :attr:`domain`."""
        if self.domain == POSITIVE:
            return value > 0
        if self.domain == NONNEGATIVE:
            return value >= 0
        return True


@dataclass(frozen=True)
class Variable:
    """A stored state variable: which entries of the state vector it holds.

    One index gives a ``(trajectory, obs)`` variable; several give a
    ``(trajectory, obs, component)`` one.
    """

    name: str
    indices: tuple[int, ...]
    units: str
    long_name: str

    @property
    def is_vector(self) -> bool:
        return len(self.indices) > 1


@dataclass(frozen=True)
class ComponentAxis:
    """A coordinate along the ``component`` dimension (e.g. grid positions of a PDE)."""

    name: str
    values: tuple[float, ...]
    units: str
    long_name: str


@dataclass(frozen=True)
class System:
    """A physical system to simulate: its equations, variables and parameters."""

    name: str
    summary: str
    reference: str
    state_dim: int
    variables: tuple[Variable, ...]
    parameters: tuple[Parameter, ...]
    t_span: tuple[float, float]
    time_units: str
    vector_field: VectorField = field(repr=False)
    initial_state: InitialState = field(repr=False)
    component_axis: ComponentAxis | None = None
    #: the solver :func:`neurode.datasets.simulate` uses unless told otherwise: a stiff system names a stiff
    #: (implicit) method, with which it takes tens of steps where an explicit one would take millions
    solver: str = "dopri5"

    def parameter(self, name: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)

    @property
    def n_components(self) -> int | None:
        """Size of the ``component`` dimension, ``None`` if no variable is a vector."""
        sizes = {len(v.indices) for v in self.variables if v.is_vector}
        return sizes.pop() if sizes else None


def _stack(*columns: torch.Tensor) -> torch.Tensor:
    return torch.stack(columns, dim=-1)


# --------------------------------------------------------------------------- spirals

SPIRAL_MATRIX = ((-0.1, -1.0), (1.0, -0.1))


def _spiral_linear(t, y, p):
    matrix = torch.tensor(SPIRAL_MATRIX, dtype=y.dtype, device=y.device)
    return y @ matrix.T


def _spiral_linear_init(rng, n, p):
    radius = rng.uniform(0.5, 2.0, n)
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _spiral_bistable(t, y, p):
    x, v = y[..., 0], y[..., 1]
    return _stack(v, x - x**3 - p["damping"] * v)


def _uniform_box(low: float, high: float, dim: int) -> InitialState:
    def init(rng, n, p):
        return rng.uniform(low, high, (n, dim))

    return init


# --------------------------------------------------------------------------- mechanics


def _oscillator(t, y, p):
    x, v = y[..., 0], y[..., 1]
    return _stack(v, -(p["stiffness"] * x + p["damping"] * v) / p["mass"])


def _pendulum(t, y, p):
    theta, omega = y[..., 0], y[..., 1]
    return _stack(omega, -(p["gravity"] / p["length"]) * torch.sin(theta) - p["damping"] * omega)


def _pendulum_init(rng, n, p):
    return np.stack([rng.uniform(-2.0, 2.0, n), rng.uniform(-1.0, 1.0, n)], axis=-1)


def _kepler(t, y, p):
    position, velocity = y[..., :2], y[..., 2:]
    distance = torch.linalg.vector_norm(position, dim=-1, keepdim=True)
    return torch.cat([velocity, -p["gm"][..., None] * position / distance**3], dim=-1)


def _kepler_init(rng, n, p):
    # Periapsis at distance 1 in a random direction; the vis-viva equation
    # gives the speed there for eccentricity e: v^2 = GM (1 + e) / r_p.
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    speed = np.sqrt(p["gm"] * (1.0 + p["eccentricity"]))
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    normal = np.stack([-np.sin(angle), np.cos(angle)], axis=-1)
    return np.concatenate([direction, speed[:, None] * normal], axis=-1)


# --------------------------------------------------------------------------- populations, oscillators, chaos


def _lotka_volterra(t, y, p):
    prey, predator = y[..., 0], y[..., 1]
    return _stack(
        p["alpha"] * prey - p["beta"] * prey * predator,
        p["delta"] * prey * predator - p["gamma"] * predator,
    )


def _lotka_volterra_init(rng, n, p):
    return np.stack([rng.uniform(1.0, 5.0, n), rng.uniform(0.5, 2.5, n)], axis=-1)


def _van_der_pol(t, y, p):
    x, v = y[..., 0], y[..., 1]
    return _stack(v, p["mu"] * (1.0 - x**2) * v - x)


def _robertson(t, y, p):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    slow, fast, recombination = p["k1"] * y1, p["k2"] * y2 * y3, p["k3"] * y2 * y2
    return _stack(-slow + fast, slow - fast - recombination, recombination)


def _robertson_init(rng, n, p):
    y1 = rng.uniform(0.5, 1.0, n)  # a mixture of A and C, no B: the total concentration is 1
    return np.stack([y1, np.zeros(n), 1.0 - y1], axis=-1)


def _lorenz(t, y, p):
    x, yy, z = y[..., 0], y[..., 1], y[..., 2]
    return _stack(p["sigma"] * (yy - x), x * (p["rho"] - z) - yy, x * yy - p["beta"] * z)


def _lorenz_init(rng, n, p):
    return np.stack([rng.uniform(-15, 15, n), rng.uniform(-15, 15, n), rng.uniform(5, 40, n)], axis=-1)


# --------------------------------------------------------------------------- signals


def _periodic(t, y, p):
    s, c = y[..., 0], y[..., 1]
    return _stack(p["frequency"] * c, -p["frequency"] * s)


def _periodic_init(rng, n, p):
    phase = rng.uniform(0.0, 2.0 * math.pi, n)
    return np.stack([p["amplitude"] * np.sin(phase), p["amplitude"] * np.cos(phase)], axis=-1)


# --------------------------------------------------------------------------- PDE by the method of lines

HEAT_POINTS = 32
HEAT_SPACING = 1.0 / (HEAT_POINTS + 1)
HEAT_GRID = tuple((j + 1) * HEAT_SPACING for j in range(HEAT_POINTS))
#: Sine modes in the initial condition.
HEAT_MODES = 4


def _heat(t, y, p):
    # Dirichlet ends: pad with the boundary value 0, then the 3-point stencil.
    padded = torch.nn.functional.pad(y, (1, 1))
    laplacian = (padded[..., 2:] - 2.0 * y + padded[..., :-2]) / HEAT_SPACING**2
    return p["diffusivity"][..., None] * laplacian


def heat_modes(n_modes: int = HEAT_MODES) -> np.ndarray:
    """``[n_modes, HEAT_POINTS]``: sin(k pi x_j), the discrete Laplacian's eigenvectors."""
    k = np.arange(1, n_modes + 1)[:, None]
    return np.sin(k * math.pi * np.asarray(HEAT_GRID)[None, :])


def heat_eigenvalues(n_modes: int = HEAT_MODES) -> np.ndarray:
    """Eigenvalues of the discrete Laplacian for the sine modes: -(4/h^2) sin^2(k pi h / 2)."""
    k = np.arange(1, n_modes + 1)
    return -(4.0 / HEAT_SPACING**2) * np.sin(k * math.pi * HEAT_SPACING / 2.0) ** 2


def _heat_init(rng, n, p):
    # Random amplitudes, smaller for finer modes: a smooth initial profile.
    amplitudes = rng.normal(size=(n, HEAT_MODES)) / np.arange(1, HEAT_MODES + 1)
    return amplitudes @ heat_modes()


def heat_amplitudes(u0: np.ndarray) -> np.ndarray:
    """Sine-mode amplitudes of an initial profile built from :func:`heat_modes` (least squares)."""
    return np.linalg.lstsq(heat_modes().T, np.asarray(u0).T, rcond=None)[0].T


# --------------------------------------------------------------------------- the table

_DIMENSIONLESS = "1"

SYSTEMS: dict[str, System] = {
    system.name: system
    for system in (
        System(
            name="spiral_linear",
            summary="linear spiral dz/dt = [[-0.1, -1], [1, -0.1]] z",
            reference="Chen, Rubanova, Bettencourt, Duvenaud (2018), Neural Ordinary Differential Equations",
            state_dim=2,
            variables=(Variable("z", (0, 1), _DIMENSIONLESS, "spiral state"),),
            parameters=(),
            t_span=(0.0, 20.0),
            time_units=_DIMENSIONLESS,
            vector_field=_spiral_linear,
            initial_state=_spiral_linear_init,
        ),
        System(
            name="spiral_bistable",
            summary="bistable nonlinear spiral x'' = x - x^3 - delta x' (damped double well)",
            reference="Guckenheimer & Holmes (1983), Nonlinear Oscillations, Dynamical Systems, sec. 2.2",
            state_dim=2,
            variables=(Variable("z", (0, 1), _DIMENSIONLESS, "spiral state"),),
            parameters=(
                Parameter("damping", 0.1, 0.3, _DIMENSIONLESS, "damping coefficient delta", domain=NONNEGATIVE),
            ),
            t_span=(0.0, 30.0),
            time_units=_DIMENSIONLESS,
            vector_field=_spiral_bistable,
            initial_state=_uniform_box(-2.0, 2.0, 2),
        ),
        System(
            name="oscillator",
            summary="damped harmonic oscillator m x'' + c x' + k x = 0",
            reference="e.g. Goldstein, Classical Mechanics, ch. 6",
            state_dim=2,
            variables=(
                Variable("position", (0,), "m", "displacement from equilibrium"),
                Variable("velocity", (1,), "m s-1", "velocity"),
            ),
            parameters=(
                Parameter("mass", 0.5, 2.0, "kg", "mass", domain=POSITIVE),
                Parameter("stiffness", 1.0, 4.0, "N m-1", "spring constant", domain=POSITIVE),
                Parameter("damping", 0.0, 0.3, "kg s-1", "viscous damping coefficient", domain=NONNEGATIVE),
            ),
            t_span=(0.0, 10.0),
            time_units="s",
            vector_field=_oscillator,
            initial_state=_uniform_box(-1.0, 1.0, 2),
        ),
        System(
            name="pendulum",
            summary="nonlinear pendulum theta'' = -(g/L) sin(theta) - b theta'",
            reference="e.g. Strogatz, Nonlinear Dynamics and Chaos, sec. 6.7",
            state_dim=2,
            variables=(
                Variable("angle", (0,), "rad", "angle from the downward vertical"),
                Variable("angular_velocity", (1,), "rad s-1", "angular velocity"),
            ),
            parameters=(
                Parameter("length", 0.5, 2.0, "m", "pendulum length", domain=POSITIVE),
                Parameter("gravity", 9.81, 9.81, "m s-2", "gravitational acceleration", domain=POSITIVE),
                Parameter("damping", 0.0, 0.2, "s-1", "damping rate", domain=NONNEGATIVE),
            ),
            t_span=(0.0, 10.0),
            time_units="s",
            vector_field=_pendulum,
            initial_state=_pendulum_init,
        ),
        System(
            name="lotka_volterra",
            summary="predator-prey x' = alpha x - beta x y, y' = delta x y - gamma y",
            reference="Lotka (1925), Elements of Physical Biology; Volterra (1926)",
            state_dim=2,
            variables=(
                Variable("prey", (0,), _DIMENSIONLESS, "prey population density"),
                Variable("predator", (1,), _DIMENSIONLESS, "predator population density"),
            ),
            parameters=(
                Parameter("alpha", 1.0, 1.5, "1", "prey growth rate", domain=POSITIVE),
                Parameter("beta", 0.8, 1.2, "1", "predation rate", domain=POSITIVE),
                Parameter("gamma", 2.5, 3.5, "1", "predator death rate", domain=POSITIVE),
                Parameter("delta", 0.8, 1.2, "1", "predator growth per prey eaten", domain=POSITIVE),
            ),
            t_span=(0.0, 15.0),
            time_units=_DIMENSIONLESS,
            vector_field=_lotka_volterra,
            initial_state=_lotka_volterra_init,
        ),
        System(
            name="van_der_pol",
            summary="van der Pol oscillator x'' - mu (1 - x^2) x' + x = 0",
            reference="van der Pol (1926), On relaxation-oscillations, Phil. Mag. 2(11)",
            state_dim=2,
            variables=(
                Variable("x", (0,), _DIMENSIONLESS, "position"),
                Variable("v", (1,), _DIMENSIONLESS, "velocity"),
            ),
            parameters=(Parameter("mu", 0.5, 2.0, _DIMENSIONLESS, "nonlinear damping strength", domain=NONNEGATIVE),),
            t_span=(0.0, 20.0),
            time_units=_DIMENSIONLESS,
            vector_field=_van_der_pol,
            initial_state=_uniform_box(-3.0, 3.0, 2),
        ),
        System(
            name="robertson",
            summary="Robertson's stiff chemical kinetics A -> B, B + C -> A + C, 2B -> B + C (stiff: rodas5p)",
            reference="Robertson (1966), The solution of a set of reaction rate equations; Hairer & Wanner (1996), "
                      "Solving Ordinary Differential Equations II, sec. IV.1, eq. (1.4)",
            state_dim=3,
            variables=(
                Variable("a", (0,), _DIMENSIONLESS, "concentration of A"),
                Variable("b", (1,), _DIMENSIONLESS, "concentration of B (about 1e-5 of the others)"),
                Variable("c", (2,), _DIMENSIONLESS, "concentration of C"),
            ),
            parameters=(
                Parameter("k1", 0.02, 0.08, _DIMENSIONLESS, "rate constant of A -> B", domain=POSITIVE),
                Parameter("k2", 5e3, 2e4, _DIMENSIONLESS, "rate constant of B + C -> A + C", domain=POSITIVE),
                Parameter("k3", 1.5e7, 6e7, _DIMENSIONLESS, "rate constant of 2B -> B + C", domain=POSITIVE),
            ),
            t_span=(0.0, 40.0),
            time_units=_DIMENSIONLESS,
            vector_field=_robertson,
            initial_state=_robertson_init,
            solver="rodas5p",
        ),
        System(
            name="lorenz",
            summary="Lorenz system x' = sigma (y - x), y' = x (rho - z) - y, z' = x y - beta z",
            reference="Lorenz (1963), Deterministic Nonperiodic Flow, J. Atmos. Sci. 20",
            state_dim=3,
            variables=(
                Variable("x", (0,), _DIMENSIONLESS, "convection intensity"),
                Variable("y", (1,), _DIMENSIONLESS, "horizontal temperature difference"),
                Variable("z", (2,), _DIMENSIONLESS, "vertical temperature profile deviation"),
            ),
            parameters=(
                Parameter("sigma", 10.0, 10.0, _DIMENSIONLESS, "Prandtl number", domain=POSITIVE),
                Parameter("rho", 28.0, 28.0, _DIMENSIONLESS, "Rayleigh number ratio", domain=POSITIVE),
                Parameter("beta", 8.0 / 3.0, 8.0 / 3.0, _DIMENSIONLESS, "geometric factor", domain=POSITIVE),
            ),
            t_span=(0.0, 5.0),
            time_units=_DIMENSIONLESS,
            vector_field=_lorenz,
            initial_state=_lorenz_init,
        ),
        System(
            name="kepler",
            summary="Kepler two-body problem r'' = -GM r / |r|^3 (relative coordinates)",
            reference="e.g. Goldstein, Classical Mechanics, ch. 3",
            state_dim=4,
            variables=(
                Variable("position", (0, 1), _DIMENSIONLESS, "relative position"),
                Variable("velocity", (2, 3), _DIMENSIONLESS, "relative velocity"),
            ),
            parameters=(
                Parameter("gm", 1.0, 1.0, _DIMENSIONLESS, "gravitational parameter G (m1 + m2)", domain=POSITIVE),
                Parameter("eccentricity", 0.0, 0.5, _DIMENSIONLESS, "orbital eccentricity", domain=NONNEGATIVE),
            ),
            t_span=(0.0, 20.0),
            time_units=_DIMENSIONLESS,
            vector_field=_kepler,
            initial_state=_kepler_init,
        ),
        System(
            name="periodic",
            summary="periodic 1-d signal of random frequency and phase, shared amplitude",
            reference="Rubanova, Chen, Duvenaud (2019), Latent ODEs for Irregularly-Sampled Time Series, sec. 4.1",
            state_dim=2,
            variables=(Variable("signal", (0,), _DIMENSIONLESS, "periodic signal"),),
            parameters=(
                Parameter("frequency", 1.0, 4.0, "rad s-1", "angular frequency", domain=POSITIVE),
                Parameter("amplitude", 1.0, 1.0, _DIMENSIONLESS, "amplitude", domain=POSITIVE),
            ),
            t_span=(0.0, 5.0),
            time_units="s",
            vector_field=_periodic,
            initial_state=_periodic_init,
        ),
        System(
            name="heat",
            summary=f"1-d heat equation u_t = kappa u_xx, u(0) = u(1) = 0, method of lines on {HEAT_POINTS} points",
            reference="e.g. LeVeque (2007), Finite Difference Methods for ODEs and PDEs, ch. 9",
            state_dim=HEAT_POINTS,
            variables=(Variable("u", tuple(range(HEAT_POINTS)), _DIMENSIONLESS, "temperature"),),
            parameters=(
                Parameter("diffusivity", 0.01, 0.1, _DIMENSIONLESS, "thermal diffusivity kappa", domain=POSITIVE),
            ),
            t_span=(0.0, 1.0),
            time_units=_DIMENSIONLESS,
            vector_field=_heat,
            initial_state=_heat_init,
            component_axis=ComponentAxis("x", HEAT_GRID, _DIMENSIONLESS, "position along the rod"),
        ),
    )
}


def get_system(name: str) -> System:
    """The system called ``name``.

    Raises:
        UnknownSystemError: listing the known systems (and the closest name).
    """
    try:
        return SYSTEMS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(SYSTEMS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise UnknownSystemError(f"unknown system {name!r}{hint} Known systems: {', '.join(SYSTEMS)}") from None
