"""Property-based fuzzing of the solve API against its contract (issue 13).

Hypothesis draws bad and edge inputs — states, time grids, tolerances, options,
vector fields, solver and gradient-method names, events, per-sample grids — and
each test asserts the contract every call must keep:

* either a result that is right: ``ys`` of the state's shape and dtype, finite,
  and close to the exact solution of the linear test problem ``y' = -k y``;
* or an error a user can act on: a :class:`~neurode.NeurodeError` (which
  includes neurode's ``ValueError``/``TypeError`` subclasses) whose message
  names what was wrong;
* never a raw internal exception (``RuntimeError``, ``AttributeError``,
  ``IndexError`` from deep inside), never a hang (a watchdog turns one into a
  failure), never a silently wrong answer.

The default profile (``tests/conftest.py``) runs a few examples per test;
``pytest --hypothesis-profile=long tests/framework/test_fuzz_solve.py`` explores
far more.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import neurode
from neurode.framework.errors import NeurodeError

#: a hang is a failure: no example of these tests should take more than this many seconds
WATCHDOG_S = 60

ADAPTIVE = ["dopri5", "tsit5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8"]
FIXED = ["euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams"]


@contextmanager
def watchdog(seconds: int = WATCHDOG_S):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"the call did not return within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def call_under_contract(fn):
    """Run ``fn``; return its result, or ``None`` if it raised an acceptable error. Anything else fails."""
    with watchdog():
        try:
            return fn()
        except NeurodeError as exc:
            assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
            return None


# --------------------------------------------------------------------------- strategies

floats_any = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, -1.0, math.nan, math.inf, -math.inf]),
)
junk = st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
number_like = st.one_of(
    floats_any,
    st.integers(min_value=-5, max_value=10**6),
    floats_any.map(lambda v: torch.tensor(v)),
    st.lists(st.floats(allow_nan=True, width=32), min_size=0, max_size=3).map(torch.tensor),
    junk,
)
shapes = st.lists(st.integers(min_value=0, max_value=3), min_size=0, max_size=2).map(tuple)
dtypes = st.sampled_from([torch.float32, torch.float64, torch.int64, torch.complex64, torch.bool])


@st.composite
def states(draw):
    """A tensor, or a tuple of tensors, of drawn shapes, dtypes and values (finite or not)."""
    def tensor():
        shape, dtype = draw(shapes), draw(dtypes)
        special = draw(st.sampled_from([None, None, None, math.nan, math.inf]))
        x = torch.ones(shape, dtype=torch.float64) * draw(st.floats(-2, 2))
        if special is not None and x.numel():
            x.view(-1)[0] = special
        return x.to(dtype)

    if draw(st.booleans()):
        return tensor()
    return tuple(tensor() for _ in range(draw(st.integers(min_value=0, max_value=3))))


@st.composite
def time_grids(draw):
    kind = draw(st.sampled_from(["good", "good", "list", "values", "2d", "int"]))
    if kind == "good":
        n = draw(st.integers(min_value=1, max_value=5))
        end = draw(st.sampled_from([1.0, -1.0, 0.5]))
        return torch.linspace(0.0, end, n, dtype=draw(st.sampled_from([torch.float32, torch.float64])))
    values = draw(st.lists(floats_any, min_size=0, max_size=5))
    if kind == "list":
        return values
    if kind == "int":
        return torch.arange(len(values))
    t = torch.tensor(values, dtype=torch.float64)
    return t[None, :].expand(2, -1) if kind == "2d" else t


OPTION_NAMES = ["first_step", "min_step", "max_step", "max_num_steps", "step_t", "jump_t", "step_size", "norm",
                "safety", "ifactor", "dfactor", "grid_constructor", "t_max", "nstiff", "max_order", "interp",
                "perturb", "no_such_option"]
option_values = st.one_of(number_like, st.sampled_from([
    lambda x: x.abs().max(), lambda x: x, lambda x: -1.0, lambda x: math.nan, 3, [0.5], [0.5, math.nan], "cubic",
]))


def decay_field(k: float):
    def field(t, y):
        if isinstance(y, tuple):
            return tuple(-k * part for part in y)
        return -k * y
    return field


BAD_FIELDS = {
    "float64": lambda t, y: (-y).double() if isinstance(y, torch.Tensor) else tuple((-p).double() for p in y),
    "int": lambda t, y: torch.zeros_like(y, dtype=torch.int64) if isinstance(y, torch.Tensor) else (1,),
    "shape": lambda t, y: torch.zeros(7) if isinstance(y, torch.Tensor) else (torch.zeros(7),),
    "nan": lambda t, y: y * math.nan if isinstance(y, torch.Tensor) else tuple(p * math.nan for p in y),
    "none": lambda t, y: None,
    "float": lambda t, y: 1.0,
    "mutates": lambda t, y: y.mul_(2.0) if isinstance(y, torch.Tensor) else tuple(p.mul_(2.0) for p in y),
    "blows_up": lambda t, y: y * y * 1e6 if isinstance(y, torch.Tensor) else tuple(p * p * 1e6 for p in y),
}


def exact_decay(y0, t, k):
    """The exact solution of y' = -k y at the times t (rows of t per sample when t is 2-D)."""
    t = t.to(torch.float64)
    if isinstance(y0, tuple):
        return tuple(exact_decay(p, t, k) for p in y0)
    scale = torch.exp(-k * (t - t[..., :1]))
    y0 = y0.to(torch.complex128 if y0.is_complex() else torch.float64)
    if t.ndim == 2:  # (batch, T) -> (T, batch, 1...)
        return scale.T.reshape(t.shape[1], t.shape[0], *([1] * (y0.ndim - 1))) * y0
    return scale.reshape(-1, *([1] * y0.ndim)) * y0


def _largest(tol) -> float:
    """The loosest of an accepted tolerance (a number, a tensor, possibly empty, or a tuple per part)."""
    if isinstance(tol, (tuple, list)):
        return 1e-3
    tol = torch.as_tensor(tol)
    return float(tol.max()) if tol.numel() else 0.0


def assert_right(ys, y0, t, k, tol):
    """``ys`` has y0's dtype and the right shape, and matches the exact decay where it is finite."""
    if isinstance(y0, tuple):
        assert isinstance(ys, tuple) and len(ys) == len(y0)
        for part, p0 in zip(ys, y0):
            assert_right(part, p0, t, k, tol)
        return
    assert ys.dtype == y0.dtype, f"ys is {ys.dtype} for a {y0.dtype} state"
    assert ys.shape == (t.shape[-1], *y0.shape)
    expected = exact_decay(y0, t, k)
    got = ys.detach().to(torch.complex128 if ys.is_complex() else torch.float64)
    if t.ndim == 1:
        assert torch.isfinite(got).all(), "a non-finite result returned without an error"
    else:  # ragged rows are NaN-padded; the rest must be finite
        mask = torch.isfinite(t.to(torch.float64)).T.reshape(got.shape[:2] + (1,) * (got.ndim - 2)).expand_as(got)
        assert torch.isfinite(got[mask]).all(), "a non-finite result returned without an error"
        got, expected = got[mask], expected.expand_as(ys)[mask]
    assert torch.allclose(got, expected, rtol=tol, atol=tol), f"wrong answer: {got} vs {expected}"


# --------------------------------------------------------------------------- properties


@given(y0=states(), t=time_grids(), rtol=number_like, atol=number_like)
def test_states_grids_and_tolerances(y0, t, rtol, atol):
    k = 0.7
    sol = call_under_contract(lambda: neurode.solve(decay_field(k), y0, t, rtol=rtol, atol=atol, max_num_steps=2000))
    if sol is None:
        return
    # accepted inputs: a real state, a valid grid, valid tolerances; the answer must be right
    r, a = _largest(rtol), _largest(atol)
    single = any(p.dtype == torch.float32 for p in (y0 if isinstance(y0, tuple) else (y0,)))
    tol = max(1e-2 if single else 1e-4, 1e3 * (r + a))  # loose tolerances buy loose answers
    assert_right(sol.ys, y0, t, k, min(tol, 1.0))


@given(solver=st.one_of(st.sampled_from(ADAPTIVE + FIXED), st.text(max_size=8), junk),
       options=st.dictionaries(st.sampled_from(OPTION_NAMES), option_values, max_size=3),
       api=st.sampled_from(["solve", "odeint"]))
def test_solvers_and_options(solver, options, api):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    if isinstance(solver, str) and solver in FIXED and "step_size" not in options:
        options["step_size"] = 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. torchdiffeq-style warnings about options a solver ignores
        if api == "solve":
            sol = call_under_contract(lambda: neurode.solve(decay_field(1.0), y0, t, solver=solver, **options))
        else:  # the torchdiffeq drop-in: the same checks behind method= and options=
            sol = call_under_contract(lambda: SimpleNamespace(ys=neurode.odeint(decay_field(1.0), y0, t, method=solver,
                                                                                options=options)))
    if sol is None:
        return
    # options may coarsen the steps (max_step, step_size) but never make the answer silently wrong
    # a user's norm may loosen the error control, and steps at min_step are taken whatever their error
    # (torchdiffeq's semantics): both are accuracy the user gave up on purpose
    assume("norm" not in options and "min_step" not in options)
    step = options.get("step_size")
    tol = 1e-2 if not isinstance(step, (int, float)) or step <= 0.05 else 0.3
    assert_right(sol.ys, y0, t, 1.0, tol)


@given(field=st.sampled_from(sorted(BAD_FIELDS)), tuple_state=st.booleans(),
       solver=st.sampled_from(["dopri5", "tsit5", "bosh3", "rk4"]), per_sample=st.booleans())
def test_bad_vector_fields_are_errors(field, tuple_state, solver, per_sample):
    y0 = (torch.ones(2), torch.ones(1)) if tuple_state else torch.ones(3, 2)
    kwargs = {"step_size": 0.1} if solver == "rk4" else {}
    assume(not (per_sample and (tuple_state or solver == "rk4")))
    sol = call_under_contract(lambda: neurode.solve(BAD_FIELDS[field], y0, torch.linspace(0, 1, 3), solver=solver,
                                                    per_sample=per_sample, max_num_steps=500, **kwargs))
    assert sol is None, f"a field that is {field!r} returned a result"


@given(event=st.sampled_from(["never", "touch", "nan", "float", "none", "crosses", "vector"]),
       t=st.sampled_from([[0.0, 1.0], [0.0, 3.0], [0.0], [1.0, 0.0]]))
def test_events(event, t):
    fns = {
        "never": lambda t, y: y.sum() + 1,
        "touch": lambda t, y: (t - 0.5) ** 2 + 0 * y.sum(),
        "nan": lambda t, y: y.sum() * math.nan,
        "float": lambda t, y: 0.5,
        "none": lambda t, y: None,
        "crosses": lambda t, y: y.sum() - 0.5,
        "vector": lambda t, y: torch.stack([y.sum() - 0.5, y.sum() - 0.25]),
    }
    y0 = torch.ones(1, dtype=torch.float64)
    sol = call_under_contract(lambda: neurode.solve(decay_field(1.0), y0, torch.tensor(t, dtype=torch.float64),
                                                    event_fn=fns[event]))
    crossing = event in ("crosses", "vector") and t != [1.0, 0.0]  # y = 0.5 at t = log 2; backwards y only grows
    if sol is None:
        assert not crossing, f"event {event!r} with t={t} was not found"
        return
    assert crossing, f"event {event!r} with t={t} returned a result"
    event_t = float(sol.event_t)
    assert abs(abs(event_t - t[0]) - math.log(2.0)) < 1e-5  # the first root: y = 0.5 after log 2


@given(rows=st.lists(st.lists(floats_any, min_size=1, max_size=4), min_size=1, max_size=3),
       atol=st.one_of(st.just(1e-8), number_like), on_failure=st.sampled_from(["raise", "report"]))
def test_per_sample_grids(rows, atol, on_failure):
    width = max(len(r) for r in rows)
    t = torch.tensor([r + [math.nan] * (width - len(r)) for r in rows], dtype=torch.float64)
    y0 = torch.ones(len(rows), 2, dtype=torch.float64)
    sol = call_under_contract(lambda: neurode.solve(decay_field(0.5), y0, t, atol=atol, rtol=1e-6,
                                                    on_failure=on_failure, max_num_steps=5000))
    if sol is None:
        return
    if sol.status is not None and bool((sol.status != 0).any()):
        assert on_failure == "report"
        return
    # accepted, atol is a valid number or tensor; a loose one (atol=1) buys a loose answer
    assert_right(sol.ys, y0, t, 0.5, max(1e-3, 100 * _largest(atol)))


@given(name=st.one_of(st.text(max_size=6), junk, st.integers()), kind=st.one_of(
    st.sampled_from(["solver", "adjoint", "dynamics", "model", "loader"]), st.text(max_size=4), junk))
def test_registry_names(name, kind):
    component = call_under_contract(lambda: neurode.get_registry().get(kind, name))
    assert component is None or component.name == name


@given(adjoint=st.one_of(st.sampled_from(["direct", "backsolve", "checkpoint"]), st.text(max_size=5), junk),
       adjoint_options=st.one_of(st.none(), st.dictionaries(st.sampled_from(["rtol", "atol", "norm", "x"]),
                                                            number_like, max_size=2)))
def test_gradient_methods(adjoint, adjoint_options):
    w = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def run():
        sol = neurode.solve(lambda t, y: -w * y, y0, t, adjoint=adjoint, adjoint_options=adjoint_options)
        return torch.autograd.grad(sol.ys[-1].sum(), w)[0]

    grad = call_under_contract(run)
    if grad is None:
        return
    # a tolerance the user loosened (rtol=1 allows errors of 100% per step) may give a poor gradient: that is asked for
    loosened = [v for k, v in (adjoint_options or {}).items() if k in ("rtol", "atol") and v is not None]
    assume(all(isinstance(v, (int, float, torch.Tensor)) and float(torch.as_tensor(v).max()) <= 1e-3
               for v in loosened))
    assert abs(float(grad) - (-2.0 * math.exp(-0.8))) < 1e-3, f"gradient {float(grad)} is wrong"


@given(field=st.sampled_from(["decay", "zero", "growth"]), event=st.sampled_from(["never", "crosses", "nan"]),
       t_max=st.one_of(st.none(), st.sampled_from([0.5, 2.0, -1.0, math.inf, math.nan])),
       dtype=st.sampled_from([torch.float32, torch.float64]), reverse=st.booleans())
def test_odeint_event(field, event, t_max, dtype, reverse):
    fields = {"decay": lambda t, y: -y, "zero": lambda t, y: torch.zeros_like(y), "growth": lambda t, y: y}
    events = {"never": lambda t, y: y.sum() + 10, "crosses": lambda t, y: y.sum() - 0.5,
              "nan": lambda t, y: y.sum() * math.nan}
    result = call_under_contract(lambda: neurode.odeint_event(
        fields[field], torch.ones(1, dtype=dtype), torch.tensor(0.0), event_fn=events[event], t_max=t_max,
        reverse_time=reverse))
    if result is None:
        return
    event_t, ys = result
    # found: only a decay crossing y = 1/2, at |t| = log 2 (forward; backward the decay grows, the growth decays)
    assert event == "crosses" and (field == "decay") != reverse and field != "zero"
    assert abs(abs(float(event_t)) - math.log(2.0)) < 1e-3 and abs(float(ys[-1].sum()) - 0.5) < 1e-3
