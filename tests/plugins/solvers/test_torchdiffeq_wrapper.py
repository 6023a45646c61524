"""torchdiffeq's methods through neurode: ``solver="torchdiffeq.<method>"`` is torchdiffeq's solve."""

import sys
import warnings

import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.odeint import SOLVERS

import neurode
from neurode.framework.errors import InvalidInputError, MaxStepsError, PluginUnavailableError
from neurode.framework.registry import get_registry

F64 = torch.float64


class Field(torch.nn.Module):
    """A small time-dependent vector field with parameters, counting its evaluations."""

    def __init__(self, tuple_state=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[-0.1, 1.0], [-1.0, -0.2]], dtype=F64))
        self.tuple_state = tuple_state
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        if self.tuple_state:
            x, v = y
            return v * self.w[0, 1], torch.tanh(x @ self.w) + torch.sin(t)
        return torch.tanh(y @ self.w) + torch.sin(t)


def _states(tuple_state):
    if tuple_state:
        return (torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True),
                torch.tensor([[0.3, -0.2]], dtype=F64, requires_grad=True))
    return (torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=F64, requires_grad=True),)


def _unpack(y0s):
    return y0s if len(y0s) > 1 else y0s[0]


def test_every_torchdiffeq_method_is_registered():
    registry = get_registry()
    names = set(registry.names("solver"))
    assert {"torchdiffeq." + m for m in SOLVERS} <= names
    for m in SOLVERS:
        assert registry.get("solver", "torchdiffeq." + m).source.builtin


@pytest.mark.parametrize(
    "method, options, tuple_state, reverse",
    [
        ("dopri5", {}, False, False),
        ("dopri5", {}, True, True),
        ("bosh3", {"first_step": 0.01, "max_step": 0.2}, False, True),
        ("rk4", {"step_size": 0.05}, True, False),
        ("implicit_adams", {"step_size": 0.05}, False, True),
    ],
)
def test_solve_equals_torchdiffeq_odeint(method, options, tuple_state, reverse):
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    if reverse:
        t = t.flip(0)
    ours, theirs = Field(tuple_state), Field(tuple_state)
    y0s = _states(tuple_state)
    expected = torchdiffeq.odeint(theirs, _unpack(y0s), t, rtol=1e-6, atol=1e-8, method=method, options=options)
    solution = neurode.solve(ours, _unpack(y0s), t, solver="torchdiffeq." + method, rtol=1e-6, atol=1e-8, **options)
    torch.testing.assert_close(solution.ys, expected, rtol=1e-12, atol=1e-12)
    assert solution.stats.nfe == ours.calls == theirs.calls > 0
    assert solution.stats.n_accepted > 0
    assert solution.solver == "torchdiffeq." + method


def test_step_callbacks_are_counted_and_chained_with_the_tuple_state():
    f = Field(tuple_state=True)
    seen = []
    f.callback_accept_step = lambda t0, y0, dt: seen.append(tuple(y.shape for y in y0))
    solution = neurode.solve(f, _states(True), torch.linspace(0.0, 2.0, 3, dtype=F64), solver="torchdiffeq.bosh3")
    assert solution.stats.n_accepted == len(seen) > 0
    assert solution.stats.n_steps == solution.stats.n_accepted + solution.stats.n_rejected
    assert seen[0] == ((2,), (1, 2))


def test_backsolve_gradients_equal_odeint_adjoint():
    t = torch.linspace(0.0, 1.5, 4, dtype=F64)
    grads = []
    for run in ("torchdiffeq", "neurode"):
        f = Field()
        (y0,) = _states(False)
        if run == "torchdiffeq":
            ys = torchdiffeq.odeint_adjoint(f, y0, t, method="dopri5", adjoint_options={"norm": "seminorm"})
        else:
            solution = neurode.solve(f, y0, t, solver="torchdiffeq.dopri5", adjoint="backsolve",
                                     adjoint_options={"norm": "seminorm"})
            ys = solution.ys
        grads.append(torch.autograd.grad((ys**2).sum(), (y0, f.w)))
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert solution.stats.nfe_backward > 0 and solution.stats.n_steps_backward > 0


def test_odeint_adjoint_with_torchdiffeq_method_and_options():
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    grads = []
    for odeint_adjoint, method in ((torchdiffeq.odeint_adjoint, "rk4"), (neurode.odeint_adjoint, "torchdiffeq.rk4")):
        f = Field(tuple_state=True)
        y0s = _states(True)
        ys = odeint_adjoint(f, y0s, t, method=method, options={"step_size": 0.1})
        grads.append(torch.autograd.grad(sum(y.sum() for y in ys), (*y0s, f.w)))
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_direct_gradients_flow_through_torchdiffeq():
    f = Field()
    (y0,) = _states(False)
    ys = neurode.solve(f, y0, torch.tensor([0.0, 1.0], dtype=F64), solver="torchdiffeq.dopri5").ys
    (expected,) = torch.autograd.grad(torchdiffeq.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64))[-1].sum(), y0)
    (got,) = torch.autograd.grad(ys[-1].sum(), y0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_event_time_equals_torchdiffeq():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    (y0,) = _states(False)
    y0 = y0.detach()[0]

    def event(t, y):
        return y[0] - 0.2

    expected_t, expected = torchdiffeq.odeint(Field(), y0, t, event_fn=event)
    solution = neurode.solve(Field(), y0, t[:1], solver="torchdiffeq.dopri5", event_fn=event)
    torch.testing.assert_close(solution.event_t, expected_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(solution.ys, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:The following arguments have no effect:UserWarning")  # scipy, about min_step
def test_scipy_solver_name_of_odeint_is_the_wrapper():
    (y0,) = _states(False)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    expected = torchdiffeq.odeint(Field(), y0, t, method="scipy_solver", options={"solver": "RK45"})
    got = neurode.odeint(Field(), y0, t, method="scipy_solver", options={"solver": "RK45"})
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_unsupported_gradient_method_is_an_input_error():
    (y0,) = _states(False)
    with pytest.raises(InvalidInputError, match=r"\['direct', 'backsolve'\], not 'checkpoint'"):
        neurode.solve(Field(), y0, torch.tensor([0.0, 1.0], dtype=F64), solver="torchdiffeq.dopri5",
                      adjoint="checkpoint")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(adjoint="backsolve", adjoint_options={"tolerance": 1e-3}), "does not accept adjoint options"),
        (dict(adjoint="backsolve", adjoint_options={"solver": "tsit5"}), "must be a torchdiffeq method"),
        (dict(controller="pid"), "integral controller only"),
    ],
)
def test_options_torchdiffeq_cannot_honour_are_input_errors(kwargs, match):
    (y0,) = _states(False)
    with pytest.raises(InvalidInputError, match=match):
        neurode.solve(Field(), y0, torch.tensor([0.0, 1.0], dtype=F64), solver="torchdiffeq.dopri5", **kwargs)


def test_torchdiffeq_assertions_become_typed_errors():
    (y0,) = _states(False)
    with pytest.raises(MaxStepsError, match="max_num_steps exceeded"):
        neurode.solve(Field(), y0, torch.tensor([0.0, 10.0], dtype=F64), solver="torchdiffeq.dopri5",
                      max_num_steps=3)


def test_missing_torchdiffeq_is_a_clear_error(monkeypatch):
    (y0,) = _states(False)
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # import torchdiffeq now raises ImportError
    with pytest.raises(PluginUnavailableError, match="pip install torchdiffeq"):
        neurode.solve(Field(), y0, torch.tensor([0.0, 1.0], dtype=F64), solver="torchdiffeq.dopri5")


def test_min_step_with_an_lsoda_that_ignores_it_warns(monkeypatch):
    # scipy 1.17's LSODA drops min_step (scipy issue 25827): the solve cannot bound its steps, so say so
    from neurode.plugins.solvers import torchdiffeq_wrapper

    y0, t = torch.tensor([1.0, 0.5], dtype=F64), torch.linspace(0.0, 1.0, 3, dtype=F64)
    for honoured in (False, True):
        monkeypatch.setattr(torchdiffeq_wrapper, "lsoda_honours_min_step", lambda: honoured)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            neurode.odeint(Field(), y0, t, method="scipy_solver", options={"min_step": 0.1})
            neurode.odeint(Field(), y0, t, method="scipy_solver", options={"solver": "RK45", "min_step": 0.1})
        messages = [str(w.message) for w in caught if str(w.message).startswith("torchdiffeq.scipy_solver")]
        assert messages == ([] if honoured else [
            "torchdiffeq.scipy_solver: this scipy's LSODA ignores min_step=0.1 (scipy issue 25827, from scipy 1.17): "
            "its steps are not bounded below"])


def test_the_lsoda_probe_tells_whether_min_step_bounds_the_steps():
    from scipy.integrate import solve_ivp

    from neurode.plugins.solvers.torchdiffeq_wrapper import lsoda_honours_min_step

    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -y

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solve_ivp(f, (0.0, 10.0), [1.0], method="LSODA", rtol=1e-8, atol=1e-10, min_step=2.0)
    assert lsoda_honours_min_step() == (calls[0] < 40)  # about 10 evaluations when honoured, ~150 when not


@pytest.mark.filterwarnings("ignore")  # LSODA complains about convergence when its steps are bounded below
def test_min_step_bounds_the_steps_of_every_adaptive_route():
    # torchdiffeq's TestMinMaxStep: min_step=2 on y' = Ay over [0, 10] makes far fewer evaluations, for neurode's
    # own loop and for scipy's LSODA (where this scipy honours it: the test extra pins scipy < 1.17)
    from neurode.plugins.solvers.torchdiffeq_wrapper import lsoda_honours_min_step

    routes = [("dopri5", {})]
    if lsoda_honours_min_step():
        routes.append(("scipy_solver", {"solver": "LSODA"}))
    else:
        pytest.skip("this scipy's LSODA ignores min_step (scipy issue 25827); the wrapper warns instead")
    A = torch.tensor([[-0.1, -2.0], [2.0, -0.1]], dtype=F64)
    for method, options in routes:
        counts = {}
        for min_step in (0.0, 2.0):
            calls = [0]

            def f(t, y):
                calls[0] += 1
                return y @ A.T

            neurode.odeint(f, torch.tensor([1.0, 0.5], dtype=F64), torch.linspace(0.0, 10.0, 11, dtype=F64),
                           method=method, options={**options, "min_step": min_step})
            counts[min_step] = calls[0]
        assert counts[2.0] < 50 < counts[0.0], (method, counts)
