"""Conformance checks for solver plugins: ``check_solver`` and the checks it is made of.

A solver plugin promises more than "returns numbers": its declared ``order``
(the step-size controller's exponent depends on it), the dtype and device of
its inputs, arbitrary batch shapes, tuple states and decreasing time. Each
check here solves :class:`~neurode.testing.problems.ManufacturedProblem`
(whose exact solution is known) through :func:`neurode.solve`, the path users
take, and raises ``AssertionError`` saying what was expected and what was
seen. The checks are public so that a plugin can run them one at a time.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from neurode.framework.errors import SolverError
from neurode.framework.registry import get_registry
from neurode.framework.solve import LOOP_OPTIONS, reject_unknown_options, solve
from neurode.framework.solver import AbstractSolver
from neurode.testing.problems import ManufacturedProblem

#: The time span of every check: two time units, a third of a period of ``u``.
T_END = 2.0
#: Errors below this are dominated by round-off in float64 (about 1e-15 here) and say nothing about the order.
ORDER_ERROR_FLOOR = 1e-12
#: Errors above this come from steps too large for any method to be in its asymptotic regime.
ORDER_ERROR_CEILING = 1e-1
#: The error curve is taken to be asymptotic once three successive halvings change its slope by no more than this.
ORDER_SLOPE_SPREAD = 0.15
#: A measured slope may fall short of the declared order by this much ...
ORDER_TOLERANCE_BELOW = 0.3
#: ... and exceed it by this much: methods tuned for small error constants (Tsitouras 5(4), the
#: Adams–Moulton corrector after an RK4 start) converge about one order faster than their order until the
#: step is smaller than float64 can resolve, so a slope up to ``order + 1`` is what such methods show.
ORDER_TOLERANCE_ABOVE = 1.2

#: The tolerances of the adaptive solves in the checks.
ADAPTIVE = {"rtol": 1e-4, "atol": 1e-6}

CHECKS = ("order", "dtypes", "batch", "tuple", "reversed", "tolerance", "devices")


@dataclass
class SolverReport:
    """What :func:`check_solver` measured.

    Attributes:
        name: the solver's name (or the instance's ``repr``).
        order: the declared order that was checked.
        measured_order: the least-squares slope of ``log(error)`` against
            ``log(1/step_size)`` in the asymptotic range.
        errors: ``(number of steps, RMS error at the end)`` for every solve of
            the order measurement.
        adaptive: whether the adaptive checks ran.
        passed: the checks that ran and passed.
        skipped: ``{check: reason}``.
    """

    name: str
    order: int
    measured_order: float | None = None
    errors: list[tuple[int, float]] = field(default_factory=list)
    adaptive: bool = False
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class _Subject:
    """The solver under test, made fresh for every solve (so state cannot leak between solves).

    ``fixed_step``: whether it can take fixed steps (default: yes), i.e. solves
    with the loop option ``step_size``. The checks then compare fixed-step
    solves, which take identical steps, to round-off;
    an ``adaptive`` solver is also compared in adaptive solves, where step
    sequences legitimately differ, against its own accuracy.
    """

    def __init__(self, solver, options: dict | None = None, *, order: int | None = None,
                 adaptive: bool | None = None, fixed_step: bool | None = None) -> None:
        self.options = dict(options or {})
        loop_options = sorted(set(self.options) & (LOOP_OPTIONS - {"dtype"}))
        if loop_options:
            raise TypeError(
                f"options {loop_options} are loop options, not the solver's: neurode's loop consumes them and never "
                "passes them to a solver's factory, and the checks choose the step sizes themselves (fixed steps "
                "unless fixed_step=False, adaptive ones if the solver is adaptive)"
            )
        self.registered = isinstance(solver, str)
        if isinstance(solver, str):
            self.name = solver
            factory = get_registry().get("solver", solver).obj
            self.make = lambda: _call_factory(solver, factory, self.options)
        elif isinstance(solver, AbstractSolver):
            if self.options:
                raise TypeError("options cannot be given with a solver instance; configure the instance")
            self.name = None
            self.make = lambda: solver
        elif callable(solver):
            self.name = None
            self.make = lambda: _call_factory(_factory_name(solver), solver, self.options)
        else:
            raise TypeError(f"solver must be a registered name, an AbstractSolver or a factory, got {solver!r}")
        prototype = self.make()
        if not isinstance(prototype, AbstractSolver):
            raise AssertionError(f"solver {solver!r}: the factory returned {type(prototype).__name__}, "
                                 "not an AbstractSolver")
        if self.name is None:
            self.name = getattr(prototype, "name", None) or repr(prototype)
        self.order = getattr(prototype, "order", None) if order is None else order
        self.adaptive = bool(getattr(prototype, "adaptive", False)) if adaptive is None else bool(adaptive)
        self.fixed_step = True if fixed_step is None else bool(fixed_step)
        if not self.fixed_step and not self.adaptive:
            raise ValueError(f"solver {self.name!r}: a solver that takes no fixed steps must be adaptive")

    def solve(self, func, y0, t, **kwargs):
        if self.registered:
            # by name, as users solve: ``solve`` hands a registered factory the solve's rtol/atol and whether the
            # steps are fixed where it accepts them (an implicit method's Newton tolerance follows them; an
            # instance made here would keep its defaults at every tolerance the checks ask for)
            return solve(func, y0, t, solver=self.name, **self.options, **kwargs)
        return solve(func, y0, t, solver=self.make(), **kwargs)

    def fixed_steps(self) -> int:
        # enough steps for an error of 1e-3 or less with any order >= 1, few enough to be quick
        return 64 if (self.order or 1) <= 1 else 16

    def modes(self) -> list[tuple[str, dict, bool]]:
        """``(label, solve keyword arguments, same steps for equal inputs)`` for each way of solving."""
        modes = []
        if self.fixed_step:
            n = self.fixed_steps()
            modes.append((f"fixed-step ({n} steps)", {"step_size": T_END / n}, True))
        if self.adaptive:
            modes.append((f"adaptive ({ADAPTIVE})", ADAPTIVE, False))
        return modes


def _factory_name(factory) -> str:
    """``ExplicitRungeKutta(rk4)`` for ``partial(ExplicitRungeKutta, tableau=RK4_38)``: short, for messages."""
    if isinstance(factory, functools.partial):
        bound = [getattr(v, "name", None) or type(v).__name__ for v in (*factory.args, *factory.keywords.values())]
        return f"{_factory_name(factory.func)}({', '.join(bound)})"
    return getattr(factory, "__qualname__", None) or type(factory).__name__


def _call_factory(name: str, factory, options: dict):
    if options:
        reject_unknown_options(f"solver {name!r}", factory, options, frozenset())
    try:
        return factory(**options)
    except TypeError as exc:  # raised inside the factory: its own message is the explanation
        raise TypeError(f"solver {name!r}: its factory rejected the options {options}: {exc}") from exc


def _subject(solver, options=None, **declared) -> _Subject:
    if isinstance(solver, _Subject):
        return solver
    return _Subject(solver, options, **declared)


class _Recorder:
    """Wraps ``f`` to remember the dtypes and devices of the ``t`` and ``y`` it was called with."""

    def __init__(self, func) -> None:
        self.func = func
        self.seen: set[tuple[Any, ...]] = set()

    def __call__(self, t, y):
        parts = y if isinstance(y, tuple) else (y,)
        for part in parts:
            self.seen.add(("y", part.dtype, part.device.type))
        self.seen.add(("t", t.dtype, t.device.type, tuple(t.shape)))
        return self.func(t, y)


def _times(dtype=torch.float64, device="cpu", reverse=False) -> torch.Tensor:
    t = torch.tensor([0.0, T_END], dtype=dtype, device=device)
    return t.flip(0) if reverse else t


def _rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def _max(x: torch.Tensor) -> float:
    return float(x.double().abs().max())


def _fit_slope(points: Sequence[tuple[int, float]]) -> float:
    """Least-squares slope of ``log2(error)`` against ``log2(1/h) = log2(n) + const``."""
    xs = [math.log2(n) for n, _ in points]
    ys = [math.log2(e) for _, e in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def _table(errors: Sequence[tuple[int, float]]) -> str:
    return ", ".join(f"h={T_END / n:.3g}: {e:.3g}" for n, e in errors)


def measure_order(solver, *, options: dict | None = None,
                  max_steps: int = 4096) -> tuple[float, list[tuple[int, float]]]:
    """Measured order of convergence of a solver with a fixed ``step_size``, in float64.

    Halves the step on :class:`ManufacturedProblem` over ``[0, 2]`` and fits
    the slope of ``log(error)`` against ``log(1/h)`` over the last four errors
    between :data:`ORDER_ERROR_FLOOR` and :data:`ORDER_ERROR_CEILING`. Stops
    once those four lie on a straight line (:data:`ORDER_SLOPE_SPREAD`), the
    error reaches round-off, or ``max_steps`` is passed. Returns the slope and
    every ``(steps, RMS error)`` measured; the slope is ``nan`` when fewer than
    two errors fall in the window.
    """
    subject = _subject(solver, options)
    problem = ManufacturedProblem()
    y0, exact = problem.exact(0.0), problem.exact(T_END)
    errors: list[tuple[int, float]] = []
    usable: list[tuple[int, float]] = []
    n = 2
    while n <= max_steps:
        with warnings.catch_warnings():
            # the largest steps are meant to be too large: a method may warn about them (e.g. a corrector that
            # does not converge), and the errors say all that matters
            warnings.simplefilter("ignore", UserWarning)
            try:
                ys = subject.solve(problem, y0, _times(), step_size=T_END / n).ys
            except SolverError:  # an implicit method whose stage equations have no solution found at this h
                ys = None
        err = math.inf if ys is None else _rms(ys[-1] - exact)
        errors.append((n, err))
        if math.isfinite(err) and err < ORDER_ERROR_FLOOR:
            break
        if ORDER_ERROR_FLOOR <= err <= ORDER_ERROR_CEILING:
            usable.append((n, err))
            last = usable[-4:]
            if len(last) == 4:
                local = [math.log2(e0 / e1) for (_, e0), (_, e1) in zip(last, last[1:])]
                if max(local) - min(local) <= ORDER_SLOPE_SPREAD:
                    break
        n *= 2
    slope = _fit_slope(usable[-4:]) if len(usable) >= 2 else float("nan")
    return slope, errors


def check_order(solver, *, order: int | None = None, options: dict | None = None) -> tuple[float, list]:
    """Assert that the measured order of convergence (:func:`measure_order`) matches the declared ``order``.

    Accepted: ``order - 0.3 <= slope <= order + 1.2`` (see
    :data:`ORDER_TOLERANCE_ABOVE` for why the upper margin is wider).
    Returns the slope and the errors measured.
    """
    subject = _subject(solver, options, order=order)
    slope, errors = measure_order(subject)
    if not math.isfinite(slope):
        raise AssertionError(
            f"solver {subject.name!r}: could not measure an order of convergence: fewer than two errors fell between "
            f"{ORDER_ERROR_FLOOR:g} and {ORDER_ERROR_CEILING:g} as step_size was halved ({_table(errors)}); "
            "does its step() advance by the step h it is given? (step_size=... is a loop option: the loop calls "
            "step() with it; a solver that cannot take fixed steps is checked with fixed_step=False)"
        )
    if not subject.order - ORDER_TOLERANCE_BELOW <= slope <= subject.order + ORDER_TOLERANCE_ABOVE:
        raise AssertionError(
            f"solver {subject.name!r} declares order {subject.order} but converges with measured order {slope:.2f} "
            f"(expected {subject.order - ORDER_TOLERANCE_BELOW:g} to {subject.order + ORDER_TOLERANCE_ABOVE:g}) "
            f"on neurode.testing.ManufacturedProblem; errors: {_table(errors)}"
        )
    return slope, errors


def check_dtypes(solver, *, options: dict | None = None, dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
                 **declared) -> None:
    """Assert that a float32 solve stays float32 and a float64 solve float64, with fitting accuracy.

    The returned states have the input's dtype, ``f`` only ever sees states
    and times of that dtype (as torchdiffeq passes them), and float32 is as
    accurate as float32 can be: with fixed steps it agrees with float64 up to
    the round-off of those steps; adaptively, its error is within twice the
    float64 error plus ``1e-4``.
    """
    subject = _subject(solver, options, **declared)
    problem = ManufacturedProblem()
    exact = problem.exact(T_END)
    for label, kwargs, same_steps in subject.modes():
        finals = {}
        for dtype in dtypes:
            func = _Recorder(problem)
            ys = subject.solve(func, problem.exact(0.0, dtype=dtype), _times(dtype), **kwargs).ys
            _expect_dtype(subject.name, ys, func, dtype, f"a {label} solve")
            finals[dtype] = ys[-1].double()
        if not {torch.float32, torch.float64} <= set(finals):
            continue
        if same_steps:
            # the same steps in both precisions: float32 round-off accumulates like (number of steps) * eps
            diff = _max(finals[torch.float32] - finals[torch.float64])
            bound = 20 * subject.fixed_steps() * torch.finfo(torch.float32).eps
            if not diff <= bound:
                raise AssertionError(
                    f"solver {subject.name!r}: float32 and float64 {label} solves differ by {diff:.3g} (expected "
                    f"<= {bound:.3g}, float32 round-off); is the state cast somewhere, or the method unstable?"
                )
        else:
            err32, err64 = _max(finals[torch.float32] - exact), _max(finals[torch.float64] - exact)
            if not err32 <= 2 * err64 + 1e-4:
                raise AssertionError(
                    f"solver {subject.name!r}: a float32 {label} solve has error {err32:.3g}, the same solve in "
                    f"float64 {err64:.3g} (expected float32 within 2x + 1e-4 of float64)"
                )


def _expect_dtype(name: str, ys, recorder: _Recorder, dtype: torch.dtype, what: str) -> None:
    if ys.dtype != dtype:
        raise AssertionError(f"solver {name!r}: {what} from a {dtype} state returned {ys.dtype} states")
    wrong = sorted(str(s) for s in recorder.seen if s[1] != dtype)
    if wrong:
        raise AssertionError(
            f"solver {name!r}: in {what} of a {dtype} state, f was called with {wrong} "
            f"(expected t and y of dtype {dtype}, as torchdiffeq passes them)"
        )
    if not torch.isfinite(ys).all():
        raise AssertionError(f"solver {name!r}: {what} in {dtype} returned non-finite states")


def _same(name: str, got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 1e-12) -> None:
    diff = _max(got - want)
    bound = rtol * max(1.0, _max(want))
    if not diff <= bound:
        raise AssertionError(f"solver {name!r}: {what} differs by {diff:.3g} (expected <= {bound:.3g})")


def _about_as_accurate(name: str, err: float, reference: float, what: str, reference_what: str) -> None:
    if not err <= 3 * reference + 1e-8:
        raise AssertionError(f"solver {name!r}: {what} has error {err:.3g}, {reference_what} {reference:.3g} "
                             "(expected within 3x + 1e-8)")


def check_batch(solver, *, options: dict | None = None, **declared) -> None:
    """Assert that a batch is solved as its members are, for any number of leading dimensions.

    The result has shape ``(len(t), *y0.shape)``; a ``(2, 4, 3)`` batch gives
    the ``(8, 3)`` batch's values. With fixed steps every member of the
    ``(8, 3)`` batch equals its own ``(3,)`` solve up to round-off; adaptively
    (the error norm couples the batch, so steps legitimately differ) the
    batch's worst member error is within 3x of the worst of the members'
    own solves.
    """
    subject = _subject(solver, options, **declared)
    problem = ManufacturedProblem()
    y0, exact = problem.exact(0.0), problem.exact(T_END)

    def member(k):
        return lambda t, y: problem(t, y[None].expand(problem.batch, -1))[k]

    for label, kwargs, same_steps in subject.modes():
        batched = subject.solve(problem, y0, _times(), **kwargs).ys
        if batched.shape != (2, *y0.shape):
            raise AssertionError(f"solver {subject.name!r}: a {tuple(y0.shape)} state gave ys of shape "
                                 f"{tuple(batched.shape)}, expected {(2, *y0.shape)}")
        nested = subject.solve(lambda t, y: problem(t, y.reshape(y0.shape)).reshape(2, 4, 3), y0.reshape(2, 4, 3),
                               _times(), **kwargs).ys
        _same(subject.name, nested.reshape(batched.shape), batched,
              f"a {label} solve of a (2, 4, 3) state, against the same (8, 3) state,")
        if same_steps:
            for k in (0, problem.batch - 1):
                single = subject.solve(member(k), y0[k], _times(), **kwargs).ys
                _same(subject.name, batched[:, k], single,
                      f"batch member {k} of a {label} solve, against its own solve,")
        else:
            own = max(_max(subject.solve(member(k), y0[k], _times(), **kwargs).ys[-1] - exact[k])
                      for k in range(problem.batch))
            _about_as_accurate(subject.name, _max(batched[-1] - exact), own, f"a batched {label} solve",
                               "the members' own solves")


def check_tuple_state(solver, *, options: dict | None = None, **declared) -> None:
    """Assert that a tuple state ``(y[..., :1], y[..., 1:])`` is solved as the single tensor ``y``.

    With fixed steps the two solves take the same steps and agree up to
    round-off; adaptively the tuple solve (whose error norm is the maximum
    over the parts, as torchdiffeq's) is within 3x of the plain solve's error.
    """
    subject = _subject(solver, options, **declared)
    problem = ManufacturedProblem()
    y0, exact = problem.exact(0.0), problem.exact(T_END)

    def split(y):
        return y[..., :1], y[..., 1:]

    def func(t, state):
        return split(problem(t, torch.cat(state, dim=-1)))

    for label, kwargs, same_steps in subject.modes():
        plain = subject.solve(problem, y0, _times(), **kwargs).ys
        parts = subject.solve(func, split(y0), _times(), **kwargs).ys
        if not isinstance(parts, tuple) or len(parts) != 2:
            raise AssertionError(f"solver {subject.name!r}: a tuple state of 2 tensors gave {type(parts).__name__} "
                                 "instead of a tuple of 2 tensors")
        for got, want in zip(parts, split(plain)):
            if got.shape != want.shape:
                raise AssertionError(f"solver {subject.name!r}: a tuple part came back with shape "
                                     f"{tuple(got.shape)}, expected {tuple(want.shape)}")
        joined = torch.cat(parts, dim=-1)
        if same_steps:
            _same(subject.name, joined, plain, f"a {label} solve of a tuple state, against the plain state,")
        else:
            _about_as_accurate(subject.name, _max(joined[-1] - exact), _max(plain[-1] - exact),
                               f"a {label} solve of a tuple state", "of the plain state")


def check_reversed_time(solver, *, options: dict | None = None, **declared) -> None:
    """Assert that decreasing ``t`` integrates backwards.

    Solving from ``t=2`` down to ``t=0`` from the exact state reaches the
    exact initial state about as accurately (10x) as the forward solve reaches
    the end state, ``ys[0]`` is the given state, and solving forwards and
    then backwards returns to ``y0``.
    """
    subject = _subject(solver, options, **declared)
    problem = ManufacturedProblem()
    y0, y1 = problem.exact(0.0), problem.exact(T_END)
    for label, kwargs, _ in subject.modes():
        forward = subject.solve(problem, y0, _times(), **kwargs).ys
        try:
            backward = subject.solve(problem, y1, _times(reverse=True), **kwargs).ys
        except SolverError as exc:
            raise AssertionError(
                f"solver {subject.name!r}: a {label} solve from t=2 back to t=0 has error: it failed ({exc}); "
                "is the sign of the step ignored?"
            ) from exc
        _same(subject.name, backward[0], y1, f"ys[0] of a {label} solve with decreasing t, against y0,")
        err_forward, err_backward = _max(forward[-1] - y1), _max(backward[-1] - y0)
        bound = 10 * err_forward + 1e-10
        if not err_backward <= bound:
            raise AssertionError(
                f"solver {subject.name!r}: a {label} solve from t=2 back to t=0 has error {err_backward:.3g}, "
                f"the forward solve {err_forward:.3g} (expected the backward error <= {bound:.3g}); "
                "is the sign of the step ignored?"
            )
        round_trip = subject.solve(problem, forward[-1], _times(reverse=True), **kwargs).ys
        err_trip = _max(round_trip[-1] - y0)
        bound = 20 * err_forward + 1e-10
        if not err_trip <= bound:
            raise AssertionError(
                f"solver {subject.name!r}: a {label} solve forward to t=2 and back returns to y0 with error "
                f"{err_trip:.3g} (expected <= {bound:.3g})"
            )


def check_tolerance(solver, *, options: dict | None = None) -> None:
    """Assert that an adaptive solver's error follows the tolerance it is given.

    Tightening ``rtol = atol`` from ``1e-3`` to ``1e-6`` must shrink the error
    at least 30-fold (a method of order ``p`` with error-per-step control
    shrinks it like ``tol^(p/(p+1))``: a hundredfold or more), and the error
    at ``1e-6`` must be below ``1e-2``. An error estimate that is zero,
    constant or of the wrong order breaks one or the other.
    """
    subject = _subject(solver, options)
    problem = ManufacturedProblem()
    y0, y1 = problem.exact(0.0), problem.exact(T_END)
    errors = {}
    for tol in (1e-3, 1e-6):
        errors[tol] = _max(subject.solve(problem, y0, _times(), rtol=tol, atol=tol).ys[-1] - y1)
    if not errors[1e-6] <= 1e-2:
        raise AssertionError(f"solver {subject.name!r}: at rtol=atol=1e-6 the error is {errors[1e-6]:.3g} "
                             "(expected <= 1e-2); is the error estimate right?")
    if not errors[1e-6] <= errors[1e-3] / 30:
        raise AssertionError(
            f"solver {subject.name!r}: tightening rtol=atol from 1e-3 to 1e-6 only took the error from "
            f"{errors[1e-3]:.3g} to {errors[1e-6]:.3g} (expected at least 30x smaller); is the error estimate right?"
        )


def available_devices() -> tuple[str, ...]:
    """``("cpu", "cuda")`` where CUDA is available, else ``("cpu",)``."""
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def check_devices(solver, *, options: dict | None = None, devices: Sequence[str] | None = None,
                  **declared) -> list[str]:
    """Assert that a solve runs where its state lives and gives the CPU's answer there.

    The states come back on the state's device, ``f`` sees ``t`` and ``y``
    only there, and the values match the CPU solve's (to ``1e-9`` with fixed
    steps: devices may round transcendental functions differently; to 3x the
    error adaptively). Returns the devices checked; unavailable ones are left out.
    """
    subject = _subject(solver, options, **declared)
    devices = available_devices() if devices is None else tuple(devices)
    problem = ManufacturedProblem()
    exact = problem.exact(T_END)
    checked = []
    for device in devices:
        if not _available(device):
            continue
        kind = torch.device(device).type
        for label, kwargs, same_steps in subject.modes():
            reference = subject.solve(problem, problem.exact(0.0), _times(), **kwargs).ys
            func = _Recorder(problem)
            ys = subject.solve(func, problem.exact(0.0, device=device), _times(device=device), **kwargs).ys
            if ys.device.type != kind:
                raise AssertionError(f"solver {subject.name!r}: a {label} solve on {device} returned states on "
                                     f"{ys.device}")
            wrong = sorted(str(s) for s in func.seen if s[2] != kind)
            if wrong:
                raise AssertionError(f"solver {subject.name!r}: a {label} solve on {device} called f with {wrong}")
            if same_steps:
                _same(subject.name, ys.cpu(), reference, f"a {label} solve on {device}, against the CPU solve,",
                      rtol=1e-9)
            else:
                _about_as_accurate(subject.name, _max(ys[-1].cpu() - exact), _max(reference[-1] - exact),
                                   f"a {label} solve on {device}", "on the CPU")
        checked.append(device)
    return checked


def _unavailable_reason(device: str) -> str:
    """Why ``device`` cannot run the checks here, in words a report can show."""
    kind = torch.device(device).type
    if kind == "cuda":
        if torch.version.cuda is None:
            return f"CUDA not available: this torch ({torch.__version__}) is built without CUDA"
        if not torch.cuda.is_available():
            return f"CUDA not available: torch.cuda.is_available() is False (torch {torch.__version__}, no usable GPU)"
        return f"CUDA device {device!r} not available: {torch.cuda.device_count()} CUDA device(s) visible"
    if kind == "mps":
        return "MPS not available: torch.backends.mps.is_available() is False"
    return f"device type {kind!r} is not supported by the checks"


def _available(device: str) -> bool:
    kind = torch.device(device).type
    if kind == "cpu":
        return True
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return False


def check_solver(solver, *, order: int | None = None, adaptive: bool | None = None, fixed_step: bool | None = None,
                 options: dict | None = None, devices: Sequence[str] | None = None,
                 skip: Sequence[str] = ()) -> SolverReport:
    """Check that a solver plugin keeps the solver contract; raise ``AssertionError`` if not.

    Args:
        solver: a registered solver name, an :class:`AbstractSolver` instance,
            or a factory (class or callable) returning one.
        order: the order of convergence to check; default: the solver's
            ``order`` attribute.
        adaptive: whether to check adaptive step-size control too (error
            follows the tolerance; adaptive batched, tuple, float32, reversed
            and device solves); default: the solver's ``adaptive`` attribute.
        fixed_step: whether the solver can take fixed steps (default
            ``True``): the checks then solve with ``step_size=...``, a loop
            option (the loop calls the solver's ``step`` with each ``h``; the
            factory never receives it). Fixed steps are how the order is
            measured and how results are compared to round-off; an adaptive
            solver that cannot take them (torchdiffeq's adaptive methods run
            whole solves and ignore ``step_size``) is checked adaptively only,
            and its order is not measured.
        options: the solver's own options (keyword arguments of the factory),
            e.g. ``{"interp": "cubic"}``; loop options such as ``step_size``
            are refused with a ``TypeError`` saying so.
        devices: devices to run on; default ``("cpu", "cuda")``. An
            unavailable one is skipped, with the reason in
            ``report.skipped["devices:<device>"]`` (e.g. that CUDA is not
            available to this torch).
        skip: names of checks to leave out, from :data:`CHECKS`.

    The checks, in order (each is also a public function): ``order``
    (:func:`check_order`), ``dtypes`` (:func:`check_dtypes`), ``batch``
    (:func:`check_batch`), ``tuple`` (:func:`check_tuple_state`),
    ``reversed`` (:func:`check_reversed_time`), ``tolerance``
    (:func:`check_tolerance`, adaptive solvers only) and ``devices``
    (:func:`check_devices`).

    Returns a :class:`SolverReport`. Example, in a plugin's test suite::

        from neurode.testing import check_solver

        def test_my_solver_conforms():
            check_solver("my_rk")
    """
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks in skip: {unknown}; the checks are {list(CHECKS)}")
    subject = _Subject(solver, options, order=order, adaptive=adaptive, fixed_step=fixed_step)
    if not isinstance(subject.order, int) or isinstance(subject.order, bool) or subject.order < 1:
        raise AssertionError(f"solver {subject.name!r} must declare an integer order >= 1 (attribute 'order'), "
                             f"got {subject.order!r}")
    report = SolverReport(subject.name, subject.order, adaptive=subject.adaptive)

    def run(name: str, check: Callable[[], Any], unless: str | None = None) -> Any:
        if name in skip:
            report.skipped[name] = "skipped on request"
            return None
        if unless is not None:
            report.skipped[name] = unless
            return None
        result = check()
        report.passed.append(name)
        return result

    measured = run("order", lambda: check_order(subject),
                   unless=None if subject.fixed_step else "takes no fixed steps (fixed_step=False)")
    if measured is not None:
        report.measured_order, report.errors = measured
    run("dtypes", lambda: check_dtypes(subject))
    run("batch", lambda: check_batch(subject))
    run("tuple", lambda: check_tuple_state(subject))
    run("reversed", lambda: check_reversed_time(subject))
    run("tolerance", lambda: check_tolerance(subject), unless=None if subject.adaptive else "not an adaptive solver")
    checked = run("devices", lambda: check_devices(subject, devices=devices))
    if checked is not None:
        for device in ("cpu", "cuda") if devices is None else tuple(devices):
            if device not in checked:
                report.skipped[f"devices:{device}"] = _unavailable_reason(device)
    return report
