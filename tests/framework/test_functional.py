"""The functional API is a drop-in for torchdiffeq: same calls, same numbers.

Every test runs the same call through ``torchdiffeq`` and through ``neurode``
(changing only the import) and compares. Where neurode deliberately differs
(typed errors, time kept in float64) the test says so.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchdiffeq

import neurode
from neurode.framework.registry import get_registry

#: The Adams–Moulton corrector warns (as torchdiffeq's does) when it does not converge at the step sizes used
#: here; that is expected, and the values are what is compared.
pytestmark = pytest.mark.filterwarnings("ignore:Functional iteration did not converge:UserWarning")

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")
#: every torchdiffeq method that neurode implements natively (fixed_adams is torchdiffeq's old name)
SHARED = tuple(m for m in ADAPTIVE + FIXED
               if m in get_registry().names("solver") or (m == "fixed_adams" and "implicit_adams" in
                                                           get_registry().names("solver")))

#: dopri8's error estimate is a difference of terms ~1e7 times larger than itself, so the summation order
#: (torchdiffeq: one matmul; neurode: chained adds) moves its step sizes by ~1e-7 relative, and the outputs
#: (interpolated by a 4th-order polynomial between steps) by a fraction of the tolerance.
TOLERANCE = {"dopri8": 1e-7}


def pendulum(t, y):
    """A driven, damped pendulum on a batch of states ``(..., 2)``: nonlinear and non-autonomous."""
    return torch.stack([y[..., 1], -torch.sin(y[..., 0]) - 0.1 * y[..., 1] + 0.3 * torch.cos(t)], dim=-1)


Y0 = torch.tensor([[1.0, 0.0], [0.3, -0.5]], dtype=torch.float64)
T = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)


#: looser tolerances for the low-order pairs, which would otherwise take thousands of steps (and seconds)
LOW_ORDER_TOLERANCES = {"adaptive_heun": (1e-4, 1e-6), "fehlberg2": (1e-4, 1e-6), "bosh3": (1e-5, 1e-7)}


def _options(method: str, **extra) -> dict:
    # explicit_adams: torchdiffeq's default max_order=12 is unstable at h=0.1 here (its result is off by ~200,
    # where neurode raises); both get the stable order that is neurode's default
    adams = {"max_order": 5} if method == "explicit_adams" else {}
    return ({} if method in ADAPTIVE else {"step_size": 0.1}) | adams | extra


def _both(*args, **kwargs):
    method = kwargs.get("method")
    if method in LOW_ORDER_TOLERANCES and "rtol" not in kwargs:
        kwargs["rtol"], kwargs["atol"] = LOW_ORDER_TOLERANCES[method]
    return neurode.odeint(*args, **kwargs), torchdiffeq.odeint(*args, **kwargs)


def _close(a, b, tol=1e-12):
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            _close(x, y, tol)
        return
    assert a.shape == b.shape and a.dtype == b.dtype
    diff = float((a - b).abs().max())
    assert diff <= tol, f"neurode and torchdiffeq differ by {diff:.3g} (allowed {tol:g})"


# --------------------------------------------------------------------------- every method, same numbers


@pytest.mark.parametrize("method", SHARED)
def test_odeint_matches_torchdiffeq(method):
    _close(*_both(pendulum, Y0, T, method=method, options=_options(method)), TOLERANCE.get(method, 1e-12))


@pytest.mark.parametrize("method", SHARED)
def test_odeint_matches_torchdiffeq_with_decreasing_t(method):
    _close(*_both(pendulum, Y0, T.flip(0), method=method, options=_options(method)), TOLERANCE.get(method, 1e-12))


@pytest.mark.parametrize("method", SHARED)
def test_odeint_matches_torchdiffeq_in_float32(method):
    # neurode keeps time in float64 where torchdiffeq's fixed grid is in t's dtype: agreement to float32 accuracy
    options = _options(method)
    a, b = _both(pendulum, Y0.float(), T.float(), method=method, options=options, rtol=1e-5, atol=1e-6)
    assert a.dtype == torch.float32
    _close(a, b, 1e-3 if method == "dopri8" else 1e-5)


def test_odeint_matches_torchdiffeq_default_method_and_tolerances():
    _close(*_both(pendulum, Y0, T))


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_tuple_states_match_torchdiffeq(method):
    def func(t, state):
        x, v = state  # shapes (2,) and (2, 1)
        return v[:, 0], (-torch.sin(x) + 0.3 * torch.cos(t))[:, None]

    state = (torch.tensor([1.0, 0.3], dtype=torch.float64), torch.tensor([[0.0], [-0.5]], dtype=torch.float64))
    kwargs = {"rtol": (1e-7, 1e-6), "atol": (1e-9, 1e-8)} if method == "dopri5" else {}
    a, b = _both(func, state, T, method=method, options=_options(method), **kwargs)
    assert isinstance(a, tuple) and [x.shape for x in a] == [(7, 2), (7, 2, 1)]
    _close(a, b)


# --------------------------------------------------------------------------- options


def _forced(t, y):
    # a forcing that jumps at t = 1.3: a discontinuity the solver must be told about (jump_t)
    return pendulum(t, y) + 0.5 * (t > 1.3).to(y.dtype)


ADAPTIVE_OPTIONS = {
    "step_t": (pendulum, {"step_t": torch.tensor([0.25, 1.7, 2.2], dtype=torch.float64)}),
    "jump_t": (_forced, {"jump_t": torch.tensor([1.3], dtype=torch.float64)}),
    "max_step": (pendulum, {"max_step": 0.05}),
    "first_step": (pendulum, {"first_step": 0.01}),
    "safety/ifactor/dfactor": (pendulum, {"safety": 0.8, "ifactor": 5.0, "dfactor": 0.3}),
    "norm": (pendulum, {"norm": lambda x: x.abs().max()}),
}


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
@pytest.mark.parametrize("option", sorted(ADAPTIVE_OPTIONS))
@pytest.mark.parametrize("reverse", [False, True], ids=["increasing", "decreasing"])
def test_adaptive_options_match_torchdiffeq(method, option, reverse):
    func, options = ADAPTIVE_OPTIONS[option]
    t = T.flip(0) if reverse else T
    _close(*_both(func, Y0, t, method=method, options=options), 1e-12)


@pytest.mark.parametrize("reverse", [False, True], ids=["increasing", "decreasing"])
def test_min_step_matches_torchdiffeq(reverse):
    t = T.flip(0) if reverse else T
    # max_num_steps only makes the failure quick; torchdiffeq needs a handful of steps per output interval
    _close(*_both(pendulum, Y0, t, method="dopri5", options={"min_step": 0.3, "max_num_steps": 1000}))


def test_max_num_steps_counts_per_output_interval_as_torchdiffeq():
    # dopri5 takes 4 or 5 steps per output interval here, about 25 in all
    options = {"max_num_steps": 10}
    b = torchdiffeq.odeint(pendulum, Y0, T, method="dopri5", options=options)
    _close(neurode.odeint(pendulum, Y0, T, method="dopri5", options=options), b, 1e-12)


@pytest.mark.parametrize("method", [m for m in FIXED if m in SHARED])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("perturb", [False, True], ids=["", "perturb"])
def test_fixed_step_interp_and_perturb_match_torchdiffeq(method, interp, perturb):
    # step_size 0.07 does not divide the output times, so outputs are interpolated inside steps
    options = {"step_size": 0.07, "interp": interp, "perturb": perturb} | _options(method, step_size=0.07)
    _close(*_both(_forced, Y0, T, method=method, options=options), 1e-12)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_fixed_step_without_step_size_steps_on_the_output_times_as_torchdiffeq(method):
    _close(*_both(pendulum, Y0, T, method=method))


def test_grid_constructor_matches_torchdiffeq():
    def grid(func, y0, t):
        return torch.cat([torch.linspace(0.0, 1.0, 21, dtype=t.dtype), torch.linspace(1.0, 3.0, 11, dtype=t.dtype)[1:]])

    _close(*_both(pendulum, Y0, T, method="rk4", options={"grid_constructor": grid}))


def test_unknown_options_are_warned_about_and_ignored_as_torchdiffeq_does():
    with pytest.warns(UserWarning, match="Unexpected arguments \\{'bogus': 1\\}"):
        ys = neurode.odeint(pendulum, Y0, T, options={"bogus": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _close(ys, torchdiffeq.odeint(pendulum, Y0, T, options={"bogus": 1}))


# --------------------------------------------------------------------------- gradients


G = 9.81


def _falling(g):
    def func(t, y):
        return torch.stack([y[..., 1], -g * torch.sin(y[..., 0])], dim=-1)

    return func


@pytest.mark.parametrize("method", SHARED)
def test_gradients_through_odeint_match_torchdiffeq_given_the_first_step(method):
    # torchdiffeq differentiates through its initial step-size heuristic (_select_initial_step runs with grad);
    # neurode treats every step size as a constant. With first_step given, both differentiate the same steps.
    options = _options(method) | ({"first_step": 0.05} if method in ADAPTIVE else {})
    grads = []
    for library in (neurode, torchdiffeq):
        g = torch.tensor(G, dtype=torch.float64, requires_grad=True)
        y0 = Y0.clone().requires_grad_(True)
        rtol, atol = LOW_ORDER_TOLERANCES.get(method, (1e-7, 1e-9))
        ys = library.odeint(_falling(g), y0, T[:4], method=method, options=options, rtol=rtol, atol=atol)
        grads.append(torch.autograd.grad((ys * torch.arange(1.0, 3.0, dtype=torch.float64)).sum(), (y0, g)))
    for a, b in zip(*grads):
        _close(a, b, 1e-6 if method == "dopri8" else 1e-11)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_odeint_adjoint_matches_torchdiffeq(method):
    class Damped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor([1.3, 0.2], dtype=torch.float64))

        def forward(self, t, y):
            return torch.stack([y[..., 1], -self.k[0] * torch.sin(y[..., 0]) - self.k[1] * y[..., 1]], dim=-1)

    results = []
    for library in (neurode, torchdiffeq):
        func = Damped()
        y0 = Y0.clone().requires_grad_(True)
        ys = library.odeint_adjoint(func, y0, T[:5], method=method, options=_options(method, step_size=0.05)
                                    if method == "rk4" else {}, adjoint_options={"norm": "seminorm"})
        results.append((ys.detach(), *torch.autograd.grad(ys.sum(), (y0, func.k))))
    # the backward solves are adaptive and take their own steps: agreement to about the tolerance
    for a, b in zip(*results):
        _close(a, b, 1e-6 if method == "dopri5" else 1e-12)


def test_odeint_adjoint_needs_a_module_or_adjoint_params_as_torchdiffeq():
    for library in (neurode, torchdiffeq):
        with pytest.raises(ValueError, match="func must be an instance of nn.Module"):
            library.odeint_adjoint(pendulum, Y0, T)


# --------------------------------------------------------------------------- events


def _ground(t, y):
    return y[..., 0]


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4", "euler"])
def test_odeint_with_event_fn_matches_torchdiffeq(method):
    options = {} if method in ADAPTIVE else {"step_size": 0.01}
    y0 = torch.tensor([2.0, -0.5], dtype=torch.float64)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)
    (ta, ya), (tb, yb) = _both(_falling(G), y0, t, method=method, options=options, event_fn=_ground,
                               rtol=1e-7, atol=1e-9)
    # both locate the event by bisection on the interpolant down to atol, in their own arithmetic
    _close(ta, tb, 1e-9)
    _close(ya, yb, 1e-8)
    assert abs(float(ya[-1, 0])) <= 1e-7  # the state at the event is on the event surface (|dy/dt| ~ 7)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_odeint_event_time_and_its_gradient_match_torchdiffeq(method):
    options = {} if method in ADAPTIVE else {"step_size": 0.01}
    results = []
    for library in (neurode, torchdiffeq):
        g = torch.tensor(G, dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([2.0, -0.5], dtype=torch.float64, requires_grad=True)
        event_t, ys = library.odeint_event(_falling(g), y0, torch.tensor(0.0, dtype=torch.float64),
                                           event_fn=_ground, method=method, options=options)
        grads = torch.autograd.grad(event_t + ys[-1, 1], (y0, g))
        results.append((event_t.detach(), ys.detach(), *grads))
    for a, b in zip(*results):
        _close(a, b, 1e-7)


def test_odeint_event_gradient_is_the_implicit_function_derivative():
    # free fall from height h with upward speed v hits the ground at t* = (v + sqrt(v^2 + 2 g h)) / g
    g = torch.tensor(G, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)

    def fall(t, y):
        return torch.stack([y[1], -g + 0 * y[0]])

    event_t, _ = neurode.odeint_event(fall, y0, torch.tensor(0.0, dtype=torch.float64), event_fn=_ground,
                                      rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(event_t, (y0, g))

    h, v = torch.tensor(2.0, dtype=torch.float64, requires_grad=True), torch.tensor(0.5, dtype=torch.float64,
                                                                                    requires_grad=True)
    g_exact = torch.tensor(G, dtype=torch.float64, requires_grad=True)
    exact = (v + torch.sqrt(v * v + 2 * g_exact * h)) / g_exact
    exact_grads = torch.autograd.grad(exact, (h, v, g_exact))
    assert float(event_t.detach()) == pytest.approx(float(exact.detach()), abs=1e-9)
    assert torch.allclose(grads[0], torch.stack(exact_grads[:2]), atol=1e-7)
    assert float(grads[1]) == pytest.approx(float(exact_grads[2]), abs=1e-7)


def test_odeint_event_in_reverse_time_matches_torchdiffeq():
    results = []
    for library in (neurode, torchdiffeq):
        y0 = torch.tensor([-1.0, 0.5], dtype=torch.float64, requires_grad=True)
        event_t, ys = library.odeint_event(_falling(G), y0, torch.tensor(1.0, dtype=torch.float64),
                                           event_fn=_ground, reverse_time=True)
        results.append((event_t.detach(), ys.detach(), torch.autograd.grad(event_t, y0)[0]))
    for a, b in zip(*results):
        _close(a, b, 1e-8)


# --------------------------------------------------------------------------- dense output


def test_odeint_dense_matches_torchdiffeq():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    dense_a = neurode.odeint_dense(pendulum, y0, t0, t1)
    dense_b = torchdiffeq.odeint_dense(pendulum, y0, t0, t1)
    ts = torch.linspace(0.01, 2.99, 17, dtype=torch.float64)
    _close(dense_a(ts), torch.stack([dense_b(t) for t in ts]), 1e-12)
    # and the dense output is the solution: agrees with a solve at those times to the tolerance
    _close(dense_a(ts), neurode.odeint(pendulum, y0, torch.cat([t0[None], ts]))[1:], 1e-6)


def test_odeint_dense_works_for_every_method_not_only_dopri5():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    exact = neurode.odeint(pendulum, y0, torch.tensor([0.0, 1.234], dtype=torch.float64), rtol=1e-10, atol=1e-10)[1]
    for method, options, tol in (("tsit5", None, 1e-5), ("rk4", {"step_size": 0.01, "interp": "cubic"}, 1e-6)):
        dense = neurode.odeint_dense(pendulum, y0, torch.tensor(0.0), torch.tensor(2.0), method=method,
                                     options=options)
        assert float((dense(1.234) - exact).abs().max()) <= tol, method
