"""The integration loop: step placement, outputs by interpolation, and every failure as a typed error.

Observed through ``neurode.solve`` and the step callbacks torchdiffeq
defines (``callback_step``, ``callback_accept_step``, ``callback_reject_step``
on the vector field), which report each step's start and signed size.
"""

from __future__ import annotations

import math
import weakref

import pytest
import torch

import neurode
from neurode import MaxStepsError, NonFiniteStateError, SolverError, StepSizeUnderflowError
from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.framework.registry import get_registry

Y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)


class Recording(torch.nn.Module):
    """Exponential decay ``dy/dt = -y`` that records its evaluation times and its accepted steps."""

    def __init__(self, rhs=None) -> None:
        super().__init__()
        self.rhs = rhs
        self.times: list[float] = []
        self.attempted: list[tuple[float, float]] = []
        self.accepted: list[tuple[float, float]] = []
        self.rejected: list[tuple[float, float]] = []

    def forward(self, t, y):
        self.times.append(float(t))
        return -y if self.rhs is None else self.rhs(t, y)

    def callback_step(self, t0, y0, dt):
        self.attempted.append((float(t0), float(dt)))

    def callback_accept_step(self, t0, y0, dt):
        self.accepted.append((float(t0), float(dt)))

    def callback_reject_step(self, t0, y0, dt):
        self.rejected.append((float(t0), float(dt)))

    @property
    def boundaries(self) -> list[float]:
        return [t0 + dt for t0, dt in self.accepted]


def _exact(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-t)[:, None] * Y0


# --------------------------------------------------------------------------- outputs


def test_outputs_are_interpolated_not_stepped_onto():
    # asking for 200 outputs costs no more steps or evaluations than asking for the end point
    few = neurode.solve(Recording(), Y0, torch.tensor([0.0, 5.0], dtype=torch.float64))
    many_t = torch.linspace(0.0, 5.0, 201, dtype=torch.float64)
    many = neurode.solve(Recording(), Y0, many_t)
    assert (many.stats.nfe, many.stats.n_steps) == (few.stats.nfe, few.stats.n_steps)
    assert torch.equal(many.ys[-1], few.ys[-1])
    assert torch.allclose(many.ys, _exact(many_t), rtol=1e-6, atol=1e-9)


def test_outputs_at_decreasing_times_are_interpolated_too():
    t = torch.linspace(3.0, 0.0, 31, dtype=torch.float64)
    sol = neurode.solve(Recording(), Y0, t)
    assert torch.allclose(sol.ys, _exact(t) * math.exp(3.0), rtol=1e-6)


def test_a_single_output_time_returns_the_initial_state():
    sol = neurode.solve(Recording(), Y0, torch.tensor([0.3], dtype=torch.float64))
    assert sol.ys.shape == (1, 2) and torch.equal(sol.ys[0], Y0)


# --------------------------------------------------------------------------- where steps go


def test_step_t_times_are_step_boundaries():
    func = Recording()
    step_t = [0.7, 1.9, 3.3]
    neurode.solve(func, Y0, torch.tensor([0.0, 5.0], dtype=torch.float64),
                  step_t=torch.tensor(step_t, dtype=torch.float64))
    for s in step_t:
        assert any(abs(b - s) <= 1e-15 for b in func.boundaries), (s, func.boundaries)


def _forcing_with_a_jump(t, y):
    # dy/dt = -y + 1 before t = 1, -y - 1 after: a jump in f that the solver cannot see coming
    return -y + torch.where(t < 1.0, 1.0, -1.0).to(y.dtype)


def _jump_exact(t: float) -> torch.Tensor:
    if t <= 1.0:
        return 1 + (Y0 - 1) * math.exp(-t)
    y1 = 1 + (Y0 - 1) * math.exp(-1.0)
    return -1 + (y1 + 1) * math.exp(-(t - 1.0))


def test_jump_t_lets_the_solver_cross_a_discontinuity_cleanly():
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    blind_func, told_func = Recording(_forcing_with_a_jump), Recording(_forcing_with_a_jump)
    blind = neurode.solve(blind_func, Y0, t, rtol=1e-8, atol=1e-10)
    told = neurode.solve(told_func, Y0, t, rtol=1e-8, atol=1e-10, jump_t=torch.tensor([1.0]))
    assert any(abs(b - 1.0) <= 1e-15 for b in told_func.boundaries)
    # f is never evaluated at the jump itself: the step ending there looks just below 1, the next just above
    assert 1.0 not in told_func.times
    assert math.nextafter(1.0, 0.0) in told_func.times and math.nextafter(1.0, 2.0) in told_func.times
    assert told.stats.n_rejected < blind.stats.n_rejected
    assert told.stats.nfe < blind.stats.nfe
    assert torch.allclose(told.ys[-1], _jump_exact(2.0), rtol=1e-7, atol=0)


def test_max_step_bounds_every_step():
    func = Recording()
    neurode.solve(func, Y0, torch.tensor([0.0, 5.0], dtype=torch.float64), max_step=0.1)
    assert max(abs(dt) for _, dt in func.attempted) <= 0.1 + 1e-15


def test_first_step_is_the_first_step_tried():
    func = Recording()
    neurode.solve(func, Y0, torch.tensor([0.0, 5.0], dtype=torch.float64), first_step=0.0123)
    assert func.attempted[0] == (0.0, pytest.approx(0.0123, rel=1e-15))


def test_min_step_steps_are_taken_even_when_too_inaccurate():
    # 0.25 is exact in binary, so the steps land on multiples of it
    func = Recording()
    sol = neurode.solve(func, Y0, torch.tensor([0.0, 2.0], dtype=torch.float64), min_step=0.25, rtol=1e-12,
                        atol=1e-12)
    assert min(abs(dt) for _, dt in func.accepted) >= 0.25 - 1e-15
    assert sol.stats.n_rejected == 0


def test_a_too_large_first_step_is_rejected_and_retried_smaller():
    func = Recording()
    sol = neurode.solve(func, Y0, torch.tensor([0.0, 5.0], dtype=torch.float64), first_step=4.0)
    assert func.rejected[0] == (0.0, 4.0)
    assert func.attempted[1][0] == 0.0 and func.attempted[1][1] < 4.0
    assert torch.allclose(sol.ys[-1], _exact(torch.tensor([5.0], dtype=torch.float64))[0], rtol=1e-6)


def test_callbacks_see_the_step_size_as_torchdiffeq_when_t_decreases():
    import torchdiffeq

    ours, theirs = Recording(), Recording()
    t = torch.tensor([2.0, 0.0], dtype=torch.float64)
    neurode.odeint(ours, Y0, t)
    torchdiffeq.odeint(theirs, Y0, t)
    assert all(dt > 0 for _, dt in ours.attempted)  # a size, as torchdiffeq passes it
    assert ours.attempted[0][0] == 2.0
    assert len(ours.attempted) == len(theirs.attempted)
    for (t_a, dt_a), (t_b, dt_b) in zip(ours.attempted, theirs.attempted):
        assert abs(t_a - t_b) < 1e-9 and abs(dt_a - dt_b) < 1e-9  # the same steps, up to round-off


def test_fixed_steps_follow_step_size_and_end_on_the_last_time():
    func = Recording()
    with pytest.warns(UserWarning, match="does not support callbacks"):  # a fixed grid accepts nothing
        neurode.solve(func, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), solver="rk4", step_size=0.3)
    assert [round(t0, 12) for t0, _ in func.attempted] == [0.0, 0.3, 0.6, 0.9]
    assert sum(func.attempted[-1]) == 1.0


def test_time_reaches_f_in_the_states_dtype_on_its_device():
    seen = set()

    def func(t, y):
        seen.add((t.dtype, t.shape, y.dtype))
        return -y

    neurode.solve(func, Y0.float(), torch.tensor([0.0, 1.0]))
    assert seen == {(torch.float32, torch.Size([]), torch.float32)}


# --------------------------------------------------------------------------- failures are typed errors


def _assert_solver_error(info, t_range):
    error = info.value
    assert isinstance(error, SolverError)
    assert t_range[0] <= error.t <= t_range[1], error.t
    assert error.dt is not None and math.isfinite(error.dt)
    assert error.stats is not None and error.stats.nfe > 0
    return error


def test_step_limit_raises_max_steps_error_with_where_it_stopped():
    with pytest.raises(MaxStepsError, match="max_num_steps=5 reached at t=") as info:
        neurode.solve(Recording(), Y0, torch.tensor([0.0, 5.0], dtype=torch.float64), max_num_steps=5, rtol=1e-10,
                      atol=1e-10)
    error = _assert_solver_error(info, (0.0, 5.0))
    assert error.stats.n_accepted + error.stats.n_rejected == 5
    assert error.dt > 0


@pytest.mark.slow
def test_the_default_step_limit_ends_a_hopeless_solve():
    # adaptive_heun at rtol=1e-14 would need ~1e9 steps here: without a limit, an endless solve
    with pytest.raises(MaxStepsError, match="max_num_steps=100000"):
        neurode.solve(lambda t, y: -y, Y0, torch.tensor([0.0, 1e3], dtype=torch.float64), solver="adaptive_heun",
                      rtol=1e-14, atol=1e-14)


def test_finite_time_blow_up_raises_step_size_underflow_error():
    # dy/dt = y^2, y(0) = 1 has y = 1 / (1 - t): it blows up at t = 1
    with pytest.raises(StepSizeUnderflowError, match="step size underflow at t=1.0000") as info:
        neurode.solve(lambda t, y: y * y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0],
                      dtype=torch.float64))
    error = _assert_solver_error(info, (0.999, 1.001))
    assert abs(error.dt) < 1e-12


def test_finite_time_blow_up_backwards_raises_step_size_underflow_error():
    with pytest.raises(StepSizeUnderflowError) as info:
        neurode.solve(lambda t, y: -y * y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, -2.0],
                      dtype=torch.float64))
    error = _assert_solver_error(info, (-1.001, -0.999))
    assert error.dt < 0


def _nan_after_half(t, y):
    return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)


def test_a_vector_field_that_turns_nan_raises_non_finite_state_error():
    with pytest.raises(NonFiniteStateError, match="non-finite") as info:
        neurode.solve(_nan_after_half, Y0, torch.tensor([0.0, 2.0], dtype=torch.float64))
    error = _assert_solver_error(info, (0.5 - 1e-9, 0.5 + 1e-9))
    assert abs(error.dt) < 1e-3


def test_a_state_that_overflows_raises_non_finite_state_error():
    # dy/dt = 1e300 y: y overflows to inf within a step however small the step is
    with pytest.raises((NonFiniteStateError, StepSizeUnderflowError)):
        neurode.solve(lambda t, y: 1e300 * y * y, torch.full((1,), 1e10, dtype=torch.float64),
                      torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_a_non_finite_derivative_at_the_start_raises_non_finite_state_error():
    with pytest.raises(NonFiniteStateError) as info:
        neurode.solve(lambda t, y: y / 0.0, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert info.value.t == 0.0


def test_a_fixed_step_solve_that_turns_nan_raises_non_finite_state_error():
    with pytest.raises(NonFiniteStateError):
        neurode.solve(_nan_after_half, Y0, torch.tensor([0.0, 2.0], dtype=torch.float64), solver="rk4",
                      step_size=0.1)


def test_solver_error_stats_count_the_steps_attempted():
    with pytest.raises(MaxStepsError) as info:
        neurode.solve(Recording(), Y0, torch.tensor([0.0, 5.0], dtype=torch.float64), max_num_steps=5)
    stats = info.value.stats
    assert stats.n_steps == stats.n_accepted + stats.n_rejected == 5


def test_solver_errors_are_neurode_errors():
    from neurode.framework.errors import NeurodeError

    for cls in (MaxStepsError, StepSizeUnderflowError, NonFiniteStateError):
        assert issubclass(cls, SolverError) and issubclass(cls, NeurodeError)


# --------------------------------------------------------------------------- memory held between steps


class _WatchingDopri5(ExplicitRungeKutta):
    """dopri5 that notes, at each step, whether the previous attempt's intermediate stages are still alive."""

    def __init__(self) -> None:
        super().__init__(get_registry().get("solver", "dopri5").obj().tableau)
        self.previous: tuple[torch.Tensor | None, list[weakref.ref]] | None = None
        self.rejected = self.held = 0

    def step(self, func, t0, h, y0, state):
        if self.previous is not None:
            y1_ref, stage_refs = self.previous
            if y1_ref() is not y0:  # the previous attempt was rejected (or a per-sample iteration)
                self.rejected += 1
                self.held += any(ref() is not None for ref in stage_refs)
        step = super().step(func, t0, h, y0, state)
        # stages 1..s-2 belong to the attempt alone (k[0] is the carried FSAL stage, k[-1] becomes the next one)
        self.previous = (weakref.ref(step.y1), [weakref.ref(k) for k in step.dense[1:-1]])
        return step


def test_a_rejected_step_is_released_before_the_next_attempt():
    # backsolve's constant memory relies on it: nothing of a rejected attempt lives on during the next one
    solver = _WatchingDopri5()
    with torch.no_grad():
        neurode.solve(lambda t, y: -50.0 * y + torch.sin(20 * t), torch.ones(3), torch.linspace(0.0, 2.0, 5),
                      solver=solver, first_step=1.0, rtol=1e-8, atol=1e-10)
    assert solver.rejected > 0
    assert solver.held == 0


def test_the_batch_loop_releases_each_iteration_before_the_next():
    solver = _WatchingDopri5()
    omega = torch.tensor([1.0, 10.0, 30.0], dtype=torch.float64)
    with torch.no_grad():
        neurode.solve(lambda t, y, w: torch.stack([y[:, 1], -(w**2) * y[:, 0]], dim=-1),
                      torch.ones(3, 2, dtype=torch.float64), torch.linspace(0.0, 1.0, 3, dtype=torch.float64),
                      solver=solver, per_sample=True, args=omega)
    assert solver.rejected > 10  # every iteration's y1 is replaced by torch.where: each counts here
    assert solver.held == 0


# --------------------------------------------------------------------------- torchdiffeq's step callbacks


@pytest.mark.parametrize("solver, options", [("rk4", {}), ("euler", {}), ("explicit_adams", {}),
                                             ("dopri5", {"step_size": 0.1})])
def test_a_fixed_grid_warns_about_adaptive_only_callbacks_and_never_calls_them(solver, options):
    # torchdiffeq's fixed-grid solvers take callback_step only, and warn about the other two
    func = Recording()
    with pytest.warns(UserWarning, match="does not support callbacks .*callback_accept_step"):
        neurode.odeint(func, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method=solver,
                       options={"step_size": 0.1, **options})
    assert len(func.attempted) == 10
    assert func.accepted == func.rejected == []


def test_an_adaptive_solve_calls_every_callback_without_warning(recwarn):
    func = Recording()
    neurode.odeint(func, Y0, torch.tensor([0.0, 3.0], dtype=torch.float64), options={"first_step": 2.0})
    assert not [w for w in recwarn if "callback" in str(w.message)]
    assert len(func.attempted) == len(func.accepted) + len(func.rejected) and func.rejected
