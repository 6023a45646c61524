"""The solve's contract on bad input (issue 13): a clear typed error, never a silent wrong answer or a hang.

Each test names the class of the issue it pins: silent wrong results (dtypes, blow-ups, NaN that slipped
through, a field mutating its input), hangs (grids, events, per-sample NaN, stiffness) and unclear errors.
"""

from __future__ import annotations

import math

import pytest
import torch

import neurode
from neurode.framework.errors import (
    EventNotFoundError,
    InvalidInputError,
    InvalidTypeError,
    MaxStepsError,
    NeurodeError,
    NonFiniteStateError,
    StiffProblemError,
)

T = torch.linspace(0.0, 1.0, 5)


def decay(t, y):
    return -y


def pair_decay(t, y):
    return -y[0], -y[1]


# --------------------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.int64, torch.float32)])
def test_tuple_state_of_mixed_dtypes_is_an_error_naming_the_part(dtypes):
    y0 = (torch.ones(2, dtype=dtypes[0]), torch.ones(2, dtype=dtypes[1]))
    with pytest.raises(InvalidInputError, match=f"part 1 is {dtypes[1]}"):
        neurode.solve(pair_decay, y0, T)


@pytest.mark.parametrize("out_dtype", [torch.float64, torch.complex64, torch.int64])
@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3", "rk4"])
def test_field_returning_another_dtype_is_an_error(out_dtype, solver):
    with pytest.raises(InvalidInputError, match=f"returned dtype {out_dtype}, but the state is torch.float32"):
        neurode.solve(lambda t, y: (-y).to(out_dtype), torch.ones(2), T, solver=solver, step_size=0.1)


def test_tuple_field_returning_another_dtype_names_the_part():
    with pytest.raises(InvalidInputError, match="part 1 of the tuple state"):
        neurode.solve(lambda t, y: (-y[0], (-y[1]).double()), (torch.ones(1), torch.ones(1)), T)


@pytest.mark.parametrize("t", [[[0.0, 0.5, 1.0], [0.0, math.inf, math.nan]], [[0.0, 0.5, 1.0], [0.0, -math.inf, 1.0]]])
def test_per_sample_row_with_an_infinite_time_is_an_error(t):
    with pytest.raises(InvalidInputError, match=r"rows \[1\] of t hold an infinite time"):
        neurode.solve(decay, torch.ones(2, 1), torch.tensor(t))


def test_event_function_returning_nan_is_an_error_not_an_event_at_t0():
    with pytest.raises(NonFiniteStateError, match="event_fn returned NaN"):
        neurode.odeint_event(decay, torch.ones(1), torch.tensor(0.0), event_fn=lambda t, y: y.sum() * math.nan)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rtol=torch.tensor([math.inf, 1e-6])), "rtol must be finite"),
    (dict(atol=torch.tensor([1e-9, math.nan])), "atol must be finite"),
    (dict(atol=torch.tensor([1e-9, -1.0])), "atol must be finite and >= 0"),
    (dict(step_t=[0.5, math.nan]), "'step_t' must hold finite times"),
    (dict(jump_t=torch.tensor([math.inf])), "'jump_t' must hold finite times"),
])
def test_non_finite_tolerance_and_time_tensors_are_rejected_like_scalars(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        neurode.solve(decay, torch.ones(2), T, **kwargs)


def test_tuple_tolerance_holding_nan_is_rejected():
    with pytest.raises(InvalidInputError, match="atol must be finite"):
        neurode.solve(pair_decay, (torch.ones(1), torch.ones(1)), T, atol=(1e-9, math.nan))


def _mutates_index(t, y):
    y[0] = 0.0
    return -y


def _mutates_inplace_op(t, y):
    y.mul_(2.0)
    return -y


def _mutates_tuple_part(t, y):
    y[1].zero_()
    return -y[0], -y[1]


@pytest.mark.parametrize("field", [_mutates_index, _mutates_inplace_op])
@pytest.mark.parametrize("kwargs", [dict(), dict(solver="rk4", step_size=0.1), dict(per_sample=True)])
def test_field_mutating_its_input_is_detected(field, kwargs):
    with pytest.raises(InvalidInputError, match="modified its input state y in place"):
        neurode.solve(field, torch.ones(3, 2), T, **kwargs)


def test_field_mutating_a_tuple_part_is_detected():
    with pytest.raises(InvalidInputError, match="modified its input state y in place"):
        neurode.solve(_mutates_tuple_part, (torch.ones(1), torch.ones(1)), T)


def test_mutation_check_does_not_fire_on_the_loop_with_tangent_control_and_gradients():
    w = torch.tensor(0.7, requires_grad=True)
    y0 = torch.ones(2, requires_grad=True)
    for adjoint in ("direct", "checkpoint", "backsolve"):
        sol = neurode.solve(lambda t, y: -w * y, y0, T, adjoint=adjoint, tangent_control=adjoint != "backsolve")
        (g,) = torch.autograd.grad(sol.ys[-1].sum(), (w,))
        assert torch.allclose(g, torch.tensor(-2 * math.exp(-0.7)), rtol=1e-4)


# --------------------------------------------------------------------------- hangs


@pytest.mark.parametrize("solver", ["rk4", "euler"])
def test_tiny_fixed_step_raises_before_building_the_grid(solver):
    with pytest.raises(MaxStepsError, match="needs 1000000000 steps") as info:
        neurode.solve(decay, torch.ones(2), T, solver=solver, step_size=1e-9, max_num_steps=10)
    assert "max_num_steps=10" in str(info.value)


def test_odeint_fixed_step_counts_the_longest_output_interval():
    with pytest.raises(MaxStepsError, match="longest output interval"):
        neurode.odeint(decay, torch.ones(2), T, method="rk4", options=dict(step_size=1e-3, max_num_steps=100))
    # 250 steps per interval of 0.25: within a limit of 300 per interval (torchdiffeq's semantics)
    neurode.odeint(decay, torch.ones(2), T, method="rk4", options=dict(step_size=1e-3, max_num_steps=300))


@pytest.mark.parametrize("event_fn", [lambda t, y: y.sum() + 1, lambda t, y: (t - 0.5) ** 2 + 0 * y.sum()],
                         ids=["never", "tangential"])
def test_event_search_stops_at_the_last_output_time(event_fn):
    with pytest.raises(EventNotFoundError, match="did not change sign between t0=0 and t_max=1") as info:
        neurode.solve(decay, torch.ones(1), torch.tensor([0.0, 1.0]), event_fn=event_fn)
    assert info.value.stats.nfe >= 6 * info.value.stats.n_steps > 0  # what the failed solve cost is reported


def test_odeint_event_takes_a_horizon():
    with pytest.raises(EventNotFoundError, match="t_max=2"):
        neurode.odeint_event(decay, torch.ones(1), torch.tensor(0.0), event_fn=lambda t, y: y.sum() + 1, t_max=2.0)
    event_t, _ = neurode.odeint_event(decay, torch.ones(1), torch.tensor(0.0),
                                      event_fn=lambda t, y: y.sum() - 0.5, t_max=2.0)
    assert abs(float(event_t) - math.log(2.0)) < 1e-5


def test_event_before_the_horizon_is_still_found():
    sol = neurode.solve(decay, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 5.0], dtype=torch.float64),
                        event_fn=lambda t, y: y.sum() - 0.5)
    assert abs(float(sol.event_t) - math.log(2.0)) < 1e-6


def test_per_sample_nan_derivative_at_t0_fails_at_once():
    def field(t, y):
        return torch.where(y > 1.5, math.nan, -y)  # sample 1 (y0 = 2) has no finite derivative at t0

    y0 = torch.tensor([[1.0], [2.0]])
    sol = neurode.solve(field, y0, T, per_sample=True, on_failure="report")
    assert sol.status.tolist() == [0, 3]
    assert int(sol.sample_stats["n_accepted"][1]) + int(sol.sample_stats["n_rejected"][1]) == 0
    with pytest.raises(NonFiniteStateError, match="sample 1: non-finite state at t=0"):
        neurode.solve(field, y0, T, per_sample=True)


def _stiff_linear(t, y):
    # y' = -1e5 (y - cos t): the solution follows cos t, an explicit method needs h < 3.3e-5
    return -1e5 * (y - torch.cos(t))


def test_stiff_problem_is_reported_within_a_few_thousand_steps():
    y0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    with pytest.raises(StiffProblemError, match="looks stiff") as info:
        neurode.solve(_stiff_linear, y0, t, rtol=1e-6, atol=1e-9)
    assert "implicit" in str(info.value)
    assert info.value.stats.n_steps < 3000  # Hairer's test: every 1000 accepted steps, 15 in a row
    # nstiff=0 turns the test off: the solve then crawls to the step limit
    with pytest.raises(MaxStepsError):
        neurode.solve(_stiff_linear, y0, t, rtol=1e-6, atol=1e-9, nstiff=0, max_num_steps=3000)


def test_max_steps_error_reports_the_step_size_actually_tried():
    with pytest.raises(MaxStepsError, match="with step size 1e-07") as info:
        neurode.solve(decay, torch.ones(1), torch.tensor([0.0, 1.0]), max_step=1e-7, max_num_steps=100)
    assert info.value.dt == pytest.approx(1e-7)


# --------------------------------------------------------------------------- unclear errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(atol=0, rtol=0), "rtol and atol are both 0"),
    (dict(norm=lambda x: x.sum() * math.nan), "option 'norm' returned nan"),
    (dict(atol=torch.full((3,), 1e-9)), r"atol of shape \(3,\) does not broadcast to the state's shape \(2,\)"),
    (dict(min_step=math.inf), "'min_step' must be a finite number"),
    (dict(step_size="x", solver="rk4"), "option 'step_size' must be a number, got 'x'"),
    (dict(first_step="x"), "option 'first_step' must be a number, got 'x'"),
    (dict(max_step="x"), "option 'max_step' must be a number, got 'x'"),
    (dict(safety="x"), "option 'safety' must be a number, got 'x'"),
    (dict(max_num_steps=math.nan), "option 'max_num_steps' must be a positive"),
    (dict(max_num_steps=math.inf), "option 'max_num_steps' must be a positive"),
    (dict(first_step=torch.ones(2)), "option 'first_step' must be a number"),
    (dict(norm=3), "option 'norm' must be callable"),
    (dict(norm=lambda x: x), "option 'norm' must return a scalar"),
    (dict(norm=lambda x: -x.abs().max()), "option 'norm' returned -1.0"),
    (dict(jump_t=0.5), "option 'jump_t' must be a sequence"),
    (dict(event_fn=3), "event_fn must be callable"),
])
def test_bad_options_name_the_option_and_the_value(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        neurode.solve(decay, torch.ones(2), T, **kwargs)


def test_per_sample_tolerance_of_the_wrong_shape():
    with pytest.raises(InvalidInputError, match="does not broadcast"):
        neurode.solve(decay, torch.ones(2, 2), T, per_sample=True, atol=torch.full((3,), 1e-9))


def test_odeint_options_must_be_a_dict():
    with pytest.raises(InvalidInputError, match="options must be a dict"):
        neurode.odeint(decay, torch.ones(2), T, options="x")


def test_tuple_tolerance_of_the_wrong_type_names_the_part():
    with pytest.raises(InvalidInputError, match=r"atol\[1\] \(for part 1 of the tuple state\)"):
        neurode.solve(pair_decay, (torch.ones(1), torch.ones(1)), T, atol=(1e-9, "x"))


def test_per_sample_dense_and_empty_batch_say_what_is_unsupported():
    with pytest.raises(InvalidInputError, match="dense=True is not supported with per-sample"):
        neurode.solve(decay, torch.ones(3, 2), T, per_sample=True, dense=True)
    with pytest.raises(InvalidInputError, match="at least one sample"):
        neurode.solve(decay, torch.ones(0, 2), T, per_sample=True)


def test_field_returning_a_python_float_in_a_tuple():
    with pytest.raises(InvalidTypeError, match="returned float for part 1"):
        neurode.solve(lambda t, y: (-y[0], 1.0), (torch.ones(1), torch.ones(1)), T)


@pytest.mark.parametrize("value", [1.0, None])
def test_event_function_returning_a_non_tensor(value):
    with pytest.raises(InvalidTypeError, match=f"event_fn must return a tensor .* got {type(value).__name__}"):
        neurode.odeint_event(decay, torch.ones(1), torch.tensor(0.0), event_fn=lambda t, y: value)


@pytest.mark.parametrize("name", [None, 5])
def test_registry_lookup_with_a_non_string_name(name):
    with pytest.raises(InvalidTypeError, match="a solver name must be a string"):
        neurode.get_registry().get("solver", name)
    with pytest.raises(NeurodeError):
        neurode.solve(decay, torch.ones(2), T, solver=name)


def test_a_norm_turning_nan_during_the_solve_is_not_blamed_on_a_finite_y0():
    calls = []

    def norm(x):  # passes the probe, then returns NaN
        calls.append(1)
        return x.abs().max() if len(calls) == 1 else torch.tensor(math.nan)

    with pytest.raises(NonFiniteStateError, match="although both are finite .*check the norm option") as info:
        neurode.solve(decay, torch.ones(2), T, norm=norm)
    assert "the initial state y0 is not finite" not in str(info.value)


def test_non_finite_y0_is_refused_even_without_a_step():
    with pytest.raises(NonFiniteStateError, match=r"the initial state y0 is not finite: it holds \[nan\]"):
        neurode.solve(decay, torch.tensor([0.0, math.nan]), torch.tensor([0.0]))


def test_a_solver_option_its_factory_cannot_take_names_the_solver_and_options():
    # found by the fuzz suite: bool(tensor([])) inside the factory raised a raw RuntimeError
    with pytest.raises(InvalidInputError, match=r"solver 'dopri5' rejected the options \{'perturb'"):
        neurode.solve(decay, torch.ones(2), T, perturb=torch.tensor([]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steps_growing_past_the_float_range_end_in_a_clear_error(dtype):
    # f = 0 has no error: the steps grow tenfold until time leaves the dtype's range (odeint_event has no horizon)
    with pytest.raises(neurode.SolverError, match="range of .*bound the search with t_max"):
        neurode.odeint_event(lambda t, y: torch.zeros_like(y), torch.ones(1, dtype=dtype), torch.tensor(0.0),
                             event_fn=lambda t, y: y.sum() + 1)
