"""``neurode.solve``: what a Solution holds, what its statistics count, and how bad input is refused.

The numbers in ``Solution.stats`` are numbers users read (how many function
evaluations did my model cost?), so they are checked against evaluations
counted independently. Bad input must be refused before any work, with an
:class:`InvalidInputError` (a ``ValueError``) that names the culprit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurode
from neurode.framework.errors import InvalidInputError, UnknownComponentError
from neurode.framework.registry import get_registry
from neurode.framework.solver import ExternalSolver
from neurode.testing import STANDARD_PROBLEMS

T = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
Y0 = torch.tensor([[1.0, 0.0], [0.3, -0.5]], dtype=torch.float64)


class Counting(torch.nn.Module):
    """A pendulum that counts its own evaluations and steps, independently of neurode's stats."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.accepted = self.rejected = self.attempted = 0
        self.steps: list[float] = []

    def forward(self, t, y):
        self.calls += 1
        return torch.stack([y[..., 1], -torch.sin(y[..., 0]) + 0.3 * torch.cos(t)], dim=-1)

    def callback_step(self, t0, y0, dt):
        self.attempted += 1

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1
        self.steps.append(float(dt))

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


# --------------------------------------------------------------------------- the Solution


def test_solution_holds_times_values_names_and_stats():
    sol = neurode.solve(Counting(), Y0, T, solver="tsit5")
    assert sol.ts is T
    assert sol.ys.shape == (4, 2, 2) and sol.ys.dtype == torch.float64
    assert torch.equal(sol.ys[0], Y0)
    assert (sol.solver, sol.adjoint) == ("tsit5", "direct")
    assert sol.event_t is None and sol.dense is None
    ts, ys = sol  # unpacks like a (ts, ys) pair
    assert ts is sol.ts and ys is sol.ys
    assert f"nfe={sol.stats.nfe}" in repr(sol)


def test_solution_of_a_tuple_state_is_a_tuple():
    def func(t, state):
        x, v = state
        return v, -x

    sol = neurode.solve(func, (torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)), T)
    assert isinstance(sol.ys, tuple) and [y.shape for y in sol.ys] == [(4, 3), (4, 3)]
    assert torch.allclose(sol.ys[0][-1], torch.cos(T[-1]).expand(3), atol=1e-6)


def test_default_solve_is_dopri5_with_torchdiffeq_tolerances():
    default = neurode.solve(Counting(), Y0, T)
    explicit = neurode.solve(Counting(), Y0, T, solver="dopri5", rtol=1e-7, atol=1e-9)
    assert default.solver == "dopri5"
    assert torch.equal(default.ys, explicit.ys)


def test_solve_returns_dense_output_on_request():
    sol = neurode.solve(Counting(), Y0, T, dense=True)
    at = torch.tensor([0.25, 1.5], dtype=torch.float64)
    expected = neurode.solve(Counting(), Y0, torch.cat([T[:1], at])).ys[1:]
    assert torch.allclose(sol.dense(at), expected, atol=1e-6)
    assert torch.allclose(sol.dense(T[-1]), sol.ys[-1], rtol=0, atol=1e-14)


def test_dense_output_refuses_times_outside_the_solve():
    sol = neurode.solve(Counting(), Y0, T, dense=True)
    with pytest.raises(InvalidInputError, match="outside the solved interval"):
        sol.dense(2.5)


# --------------------------------------------------------------------------- the statistics


def _native_solvers():
    names = []
    for name in get_registry().names("solver"):
        if not isinstance(get_registry().get("solver", name).obj(), ExternalSolver):
            names.append(name)
    return names


@pytest.mark.parametrize("solver", _native_solvers())
def test_nfe_is_the_number_of_evaluations_of_f(solver):
    func = Counting()
    options = {} if get_registry().get("solver", solver).obj().adaptive else {"step_size": 0.1}
    sol = neurode.solve(func, Y0, T, solver=solver, rtol=1e-5, atol=1e-7, **options)
    assert sol.stats.nfe == func.calls > 0


@pytest.mark.parametrize("solver", ["dopri5", "bosh3"])
def test_step_counts_are_the_steps_taken(solver):
    func = Counting()
    stats = neurode.solve(func, Y0, T, solver=solver, first_step=1.0).stats  # a first step that is rejected
    assert stats.n_steps == stats.n_accepted + stats.n_rejected == func.attempted
    assert (stats.n_accepted, stats.n_rejected) == (func.accepted, func.rejected)
    assert stats.n_rejected >= 1
    assert stats.h_last == func.steps[-1]
    assert stats.nfe_backward == 0 and stats.n_steps_backward == 0  # no backward pass ran


def test_fixed_step_counts_are_the_steps_taken_all_accepted():
    func = Counting()
    with pytest.warns(UserWarning, match="does not support callbacks"):  # fixed steps: no accept/reject callbacks
        stats = neurode.solve(func, Y0, T, solver="rk4", step_size=0.1).stats
    assert stats.n_steps == stats.n_accepted == func.attempted == 20
    assert stats.n_rejected == func.accepted == func.rejected == 0
    assert stats.h_last == pytest.approx(0.1)


def test_dopri5_costs_six_evaluations_per_step_plus_two_to_start():
    # FSAL: 7 stages, the first reused; the start costs f(t0, y0) and one evaluation of the initial-step heuristic
    stats = neurode.solve(Counting(), Y0, T, solver="dopri5").stats
    assert stats.nfe == 2 + 6 * stats.n_steps


def test_fixed_step_rk4_costs_four_evaluations_per_step():
    stats = neurode.solve(Counting(), Y0, T, solver="rk4", step_size=0.1).stats
    assert stats.n_steps == 20 and stats.nfe == 80


def test_cubic_interpolation_costs_one_evaluation_per_step_with_outputs_inside():
    # T = 0, 0.5, 1, 2 with step 0.3: 0.5 and 1 fall inside two steps, 2 is the last step's end (no interpolation)
    linear = neurode.solve(Counting(), Y0, T, solver="rk4", step_size=0.3).stats
    cubic = neurode.solve(Counting(), Y0, T, solver="rk4", step_size=0.3, interp="cubic").stats
    assert cubic.nfe == linear.nfe + 2


def test_step_sizes_in_stats_are_signed_like_t():
    forward = neurode.solve(Counting(), Y0, T).stats
    backward = neurode.solve(Counting(), Y0, T.flip(0)).stats
    assert forward.h_last > 0 and forward.h_next > 0
    assert backward.h_last < 0 and backward.h_next < 0


def test_stats_as_dict_names_every_counter():
    stats = neurode.solve(Counting(), Y0, T).stats.as_dict()
    assert {"nfe", "n_steps", "n_accepted", "n_rejected", "h_last", "h_next", "nfe_backward",
            "n_steps_backward"} <= set(stats)


# --------------------------------------------------------------------------- the PID and PI controllers


def _against_i_control(name: str, controller: str, rtol: float, atol: float):
    """``(stats, final error)`` of the I controller and of ``controller`` on a standard problem."""
    from scipy.integrate import solve_ivp

    problem = STANDARD_PROBLEMS[name]
    reference = solve_ivp(lambda t, y: problem.func(torch.tensor(t), torch.from_numpy(y)).numpy(), problem.t_span,
                          problem.y0, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
    results = []
    for which in ("i", controller):
        sol = neurode.solve(problem.func, problem.initial_state(), torch.tensor(problem.t_span), controller=which,
                            rtol=rtol, atol=atol)
        results.append((sol.stats, float(np.abs(sol.ys[-1].numpy() - reference).max())))
    return results


@pytest.mark.parametrize("name", ["van_der_pol", "kepler"])
def test_pid_controller_rejects_fewer_steps_for_comparable_work_and_accuracy(name):
    (i_stats, i_error), (pid_stats, pid_error) = _against_i_control(name, "pid", 1e-6, 1e-8)
    assert pid_stats.n_rejected < i_stats.n_rejected
    assert pid_stats.n_steps <= 1.3 * i_stats.n_steps
    assert pid_error <= 2 * i_error


def test_pid_coefficients_select_the_pid_controller():
    by_name = neurode.solve(Counting(), Y0, T, controller="pid", pcoeff=0.2, icoeff=0.5)
    by_options = neurode.solve(Counting(), Y0, T, pcoeff=0.2, icoeff=0.5)
    assert torch.equal(by_name.ys, by_options.ys)
    assert by_name.stats.n_steps != neurode.solve(Counting(), Y0, T).stats.n_steps


@pytest.mark.parametrize("name", ["van_der_pol", "arenstorf", "lotka_volterra", "lorenz"])
def test_pi_controller_rejects_fewer_steps_with_no_more_work_or_error(name):
    (i_stats, i_error), (pi_stats, pi_error) = _against_i_control(name, "pi", 1e-8, 1e-10)
    assert pi_stats.n_rejected < 0.7 * i_stats.n_rejected
    assert pi_stats.nfe <= i_stats.nfe
    assert pi_error <= 2 * i_error


def test_beta_selects_the_pi_controller():
    by_name = neurode.solve(Counting(), Y0, T, controller="pi", beta=0.08)
    by_option = neurode.solve(Counting(), Y0, T, beta=0.08)
    default = neurode.solve(Counting(), Y0, T, controller="pi")
    assert torch.equal(by_name.ys, by_option.ys)
    assert by_name.stats.n_steps != default.stats.n_steps


# --------------------------------------------------------------------------- refused input


def _solve(**kwargs):
    args = {"func": Counting(), "y0": Y0, "t": T} | kwargs
    return neurode.solve(args.pop("func"), args.pop("y0"), args.pop("t"), **args)


@pytest.mark.parametrize("t, match", [
    (torch.tensor([0.0, 2.0, 1.0]), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, 1.0, 1.0]), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, float("nan")]), "t must"),
    (torch.tensor([0, 1, 2]), "floating-point tensor, got dtype torch.int64"),
    (torch.zeros(2, 2, 3), "t must be"),
    ([0.0, 1.0], "t must be a torch.Tensor"),
], ids=["non-monotone", "repeated", "nan", "int", "3-D", "list"])
def test_bad_times_are_refused(t, match):
    with pytest.raises(InvalidInputError, match=match):
        _solve(t=t)


def _long_grid(defect: str) -> torch.Tensor:
    t = torch.linspace(0.0, 1.0, 1000)  # long grids are checked with tensor operations, short ones in Python
    if defect == "nan":
        t[500] = float("nan")
    elif defect == "inf":
        t[-1] = float("inf")
    elif defect == "repeated":
        t[500] = t[499]
    return t


@pytest.mark.parametrize("defect, match", [
    ("nan", "t must be finite"), ("inf", "t must be finite"),
    ("repeated", "strictly increasing or strictly decreasing, got \\[0.0, "),
])
def test_bad_long_time_grids_are_refused(defect, match):
    with pytest.raises(InvalidInputError, match=match):
        _solve(t=_long_grid(defect))


def test_long_decreasing_grids_are_accepted():
    sol = _solve(t=_long_grid("none").flip(0), y0=torch.ones(2))
    assert sol.ys.shape == (1000, 2)


def test_per_sample_times_must_match_the_batch():
    with pytest.raises(InvalidInputError, match="one row of t per sample, but y0.s leading \\(batch\\) dimension is 2"):
        _solve(t=T[None])


@pytest.mark.parametrize("kwargs, match", [
    ({"rtol": -1e-3}, "rtol must be a finite number >= 0, got -0.001"),
    ({"atol": float("nan")}, "atol must be a finite number >= 0"),
    ({"max_step": -1.0}, "max_step must be > 0"),
    ({"first_step": 0.0}, "first_step must be a positive finite number"),
    ({"min_step": 2.0, "max_step": 1.0}, "min_step \\(2.0\\) must not exceed max_step \\(1.0\\)"),
    ({"max_num_steps": 0}, "max_num_steps must be a positive integer"),
    ({"controller": "p"}, "controller must be 'i', 'pi', 'pid' or a controller instance, got 'p'"),
    ({"controller": "pi", "pcoeff": 0.4}, "options \\['pcoeff'\\] need controller='pid', got controller='pi'"),
    ({"controller": "i", "beta": 0.04}, "option 'beta' needs controller='pi', got controller='i'"),
    ({"controller": "pi", "beta": 0.3}, "beta must be in \\[0, 0.2\\]"),
    ({"solver": "dopri8", "beta": 0.2}, "non-positive exponent .* order q = 8; use beta < 0.167"),
    ({"safety": 1.5}, "safety must be in \\(0, 1\\]"),
    ({"step_size": 0.1, "grid_constructor": lambda f, y0, t: t}, "mutually exclusive"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        _solve(**kwargs)


@pytest.mark.parametrize("solver", ["dopri5", "rk4"])
def test_unknown_option_is_refused_with_the_options_that_exist(solver):
    with pytest.raises(InvalidInputError, match=f"solver '{solver}' does not accept the options \\['bogus'\\]") as info:
        _solve(solver=solver, bogus=3)
    message = str(info.value)
    assert "its options are: interp, perturb, torchdiffeq_interpolant;" in message and "step_size" in message  # + loop
    # the tableau is bound by the registration, and Python's own TypeError is no explanation
    assert "tableau" not in message and "unexpected keyword" not in message and "__init__" not in message


def test_the_tableau_bound_at_registration_is_not_an_option():
    with pytest.raises(InvalidInputError, match="does not accept the options \\['tableau'\\]"):
        _solve(solver="rk4", tableau=None)


def test_an_unknown_gradient_method_option_is_refused_with_a_suggestion():
    with pytest.raises(InvalidInputError, match="'rtl' -> did you mean 'rtol'.*its options are: rtol, atol") as info:
        _solve(adjoint="backsolve", adjoint_options={"rtl": 1e-3})
    assert "unexpected keyword" not in str(info.value)


def test_a_type_error_raised_inside_a_solver_factory_is_reported_with_its_message(monkeypatch):
    from neurode.framework import solve as solve_module

    class Registered:
        def __init__(self, *, interp="linear"):
            raise TypeError("interp must be a string")

    real_get = solve_module.get_registry().get
    monkeypatch.setattr(solve_module.get_registry(), "get", lambda kind, name: (
        type("Component", (), {"obj": Registered})() if name == "picky" else real_get(kind, name)))
    with pytest.raises(InvalidInputError, match="solver 'picky' rejected the options {'interp': 3}: interp must be"):
        _solve(solver="picky", interp=3)


def test_unknown_solver_is_refused_with_a_suggestion():
    with pytest.raises(UnknownComponentError, match="unknown solver 'dopri4'; did you mean 'dopri[58]'") as info:
        _solve(solver="dopri4")
    assert isinstance(info.value, KeyError)  # as a lookup error, for callers that catch KeyError


def test_unknown_gradient_method_is_refused_with_a_suggestion():
    with pytest.raises(UnknownComponentError, match="unknown adjoint 'backsolv'; did you mean 'backsolve'"):
        _solve(adjoint="backsolv")


def test_odeint_refuses_an_unknown_method_too():
    with pytest.raises(UnknownComponentError, match="unknown solver 'dopri4'"):
        neurode.odeint(Counting(), Y0, T, method="dopri4")


def test_integer_state_is_refused():
    with pytest.raises(InvalidInputError, match="y0 must be a floating-point"):
        _solve(y0=torch.ones(2, dtype=torch.int64))


def test_a_vector_field_of_the_wrong_shape_is_refused():
    with pytest.raises(InvalidInputError, match="returned shape \\(1,\\) for a state of shape \\(2,\\)"):
        _solve(func=lambda t, y: -y[:1], y0=torch.ones(2))


def test_a_tuple_vector_field_of_the_wrong_shape_is_refused():
    def func(t, state):
        x, v = state
        return v, -x[:1]

    with pytest.raises(InvalidInputError, match="returned shape \\(1,\\) for part 1 of the tuple state, whose shape is "
                                                 "\\(2,\\)"):
        _solve(func=func, y0=(torch.ones(2), torch.zeros(2)))


def test_options_with_a_solver_instance_are_refused():
    solver = get_registry().get("solver", "rk4").obj()
    with pytest.raises(InvalidInputError, match="solver options \\['interp'\\] given with a solver instance"):
        _solve(solver=solver, step_size=0.1, interp="cubic")


def test_dense_output_needs_the_direct_gradient_method():
    with pytest.raises(InvalidInputError, match="dense=True needs adjoint='direct'"):
        _solve(dense=True, adjoint="backsolve", adjoint_params=())


def test_signatures_of_unhashable_factories_are_read():
    import dataclasses

    from neurode.framework.solve import signature_parameters

    @dataclasses.dataclass  # eq=True makes instances unhashable
    class Factory:
        scale: float = 1.0

        def __call__(self, *, interp="linear"):
            raise AssertionError("not called")

    assert [p.name for p in signature_parameters(Factory())] == ["interp"]
    assert [p.name for p in signature_parameters(Factory)] == ["scale"]


@pytest.mark.parametrize("solver", ["euler", "rk4", "explicit_adams"])
def test_a_fixed_step_solver_without_step_size_warns_that_it_steps_between_outputs(solver):
    with pytest.warns(UserWarning, match=f"solver '{solver}' takes fixed steps and was given no step_size: .*"
                                         "\\(1 step from t=0 to t=2\\) and rtol/atol have no effect"):
        neurode.odeint(lambda t, y: -y, Y0, torch.tensor([0.0, 2.0], dtype=torch.float64), method=solver)
    with pytest.warns(UserWarning, match="\\(3 steps from t=0 to t=2\\)"):
        # slow decay: explicit_adams's steps of ~0.7 stay inside its stability region (y' = -y would be unstable)
        _solve(func=lambda t, y: -0.1 * y, solver=solver)


@pytest.mark.parametrize("kwargs", [{"solver": "rk4", "step_size": 0.1},
                                    {"solver": "rk4", "grid_constructor": lambda f, y0, t: torch.linspace(0, 2, 5)},
                                    {"solver": "dopri5"}])
def test_a_solve_with_its_steps_chosen_does_not_warn(kwargs, recwarn):
    _solve(func=lambda t, y: -y, **kwargs)
    assert not [w for w in recwarn if "step_size" in str(w.message)]
