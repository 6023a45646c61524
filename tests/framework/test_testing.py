"""neurode.testing: every built-in passes the conformance checks, and each check catches what it is for.

A conformance check is only worth running if it fails on a broken plugin, so
beside running ``check_solver`` on every registered solver and
``check_adjoint`` on every registered gradient method, each check is pointed
at a deliberately broken component and must reject it with a message that
names the problem.
"""

from __future__ import annotations

import dataclasses
import types
from fractions import Fraction as F
from functools import partial

import pytest
import torch

import neurode
from neurode.framework import registry as registry_module
from neurode.framework.adjoint import AbstractAdjoint, AdjointResult
from neurode.framework.errors import InvalidInputError
from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.framework.registry import Registry, get_registry
from neurode.framework.solver import ExternalSolver
from neurode.plugins.solvers.tableaus.dopri5 import DOPRI5
from neurode.plugins.solvers.tableaus.low_order import RK4_38
from neurode.testing import (
    CHECKS,
    ManufacturedProblem,
    check_adjoint,
    check_batch,
    check_dtypes,
    check_order,
    check_reversed_time,
    check_solver,
    check_tableau,
    check_tolerance,
    rooted_trees,
)

#: The Adams–Moulton corrector warns (as torchdiffeq's does) when it does not converge at the step sizes used
#: here; that is expected, and the values are what is compared.
pytestmark = pytest.mark.filterwarnings("ignore:Functional iteration did not converge:UserWarning")

#: Arguments under which a registered solver is checked, each with its reason.
CHECK_ARGUMENTS = {
    # torchdiffeq's default max_order=12 uses the 11-step Adams–Bashforth formula, whose stability region is
    # tiny: at the checks' step sizes the solve amplifies round-off, so float32 and float64 disagree. With 5
    # (the 4-step formula) it is a well-behaved order-4 method.
    "explicit_adams": {"options": {"max_order": 5}},
    "torchdiffeq.explicit_adams": {"options": {"max_order": 5}},
    # torchdiffeq's scipy wrapper evaluates f in the state's dtype inside LSODA's float64 arithmetic, so a
    # float32 solve is markedly less accurate than a float64 one (torchdiffeq's behaviour, kept).
    "torchdiffeq.scipy_solver": {"skip": ("dtypes",)},
}


def _check_arguments(name: str) -> dict:
    arguments = dict(CHECK_ARGUMENTS.get(name, {}))
    solver = get_registry().get("solver", name).obj(**arguments.get("options", {}))
    if isinstance(solver, ExternalSolver) and solver.adaptive:
        # torchdiffeq's adaptive methods ignore options={"step_size": ...} (with a warning), so they are
        # checked in adaptive solves only
        arguments["fixed_step"] = False
    return arguments


# --------------------------------------------------------------------------- every built-in conforms


@pytest.mark.filterwarnings("ignore:.*Unexpected arguments:UserWarning")
@pytest.mark.parametrize("name", get_registry().names("solver"))
def test_every_registered_solver_passes_check_solver(name):
    arguments = _check_arguments(name)
    report = check_solver(name, **arguments)
    assert report.name == name
    assert set(report.passed) | {k.split(":")[0] for k in report.skipped} == set(CHECKS)
    if arguments.get("fixed_step", True):
        assert report.order - 0.3 <= report.measured_order <= report.order + 1.2


@pytest.mark.parametrize("name", get_registry().names("adjoint"))
def test_every_registered_gradient_method_passes_check_adjoint(name):
    report = check_adjoint(name)
    assert set(report.differences) == {"pendulum with explicit adjoint_params", "pendulum with a tuple state",
                                       "nn.Module dynamics (parameters found on the module)"}
    assert max(report.differences.values()) <= 1e-6


def test_check_solver_accepts_an_instance_and_a_factory():
    assert check_solver(ExplicitRungeKutta(RK4_38), skip=("devices",)).name == "rk4"
    report = check_solver(partial(ExplicitRungeKutta, RK4_38), options={"interp": "cubic"}, skip=("devices",))
    assert report.skipped["devices"] == "skipped on request"


def test_check_solver_refuses_loop_options_saying_what_they_are():
    with pytest.raises(TypeError, match="options \\['step_size'\\] are loop options, not the solver's"):
        check_solver("rk4", options={"step_size": 0.1})


def test_check_solver_refuses_an_unknown_factory_option_by_name():
    with pytest.raises(InvalidInputError, match="'interpp' -> did you mean 'interp'") as info:
        check_solver(partial(ExplicitRungeKutta, tableau=RK4_38), options={"interpp": "cubic"})
    assert str(info.value).startswith("solver 'ExplicitRungeKutta(rk4)' does not accept the options ['interpp']")
    # not the bound tableau, no TypeError
    assert str(info.value).endswith("its options are: interp, perturb, torchdiffeq_interpolant")


def test_check_solver_says_why_cuda_was_skipped(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = check_solver("euler", skip=("order", "dtypes", "batch", "tuple", "reversed"))
    assert report.passed == ["devices"]
    assert report.skipped["devices:cuda"].startswith("CUDA not available: ")
    monkeypatch.setattr(torch.version, "cuda", None)
    report = check_solver("euler", skip=("order", "dtypes", "batch", "tuple", "reversed"))
    assert "is built without CUDA" in report.skipped["devices:cuda"]


def test_check_solver_rejects_unknown_check_names():
    with pytest.raises(ValueError, match="unknown checks in skip: \\['speed'\\]"):
        check_solver("euler", skip=("speed",))


# --------------------------------------------------------------------------- broken solvers are rejected


def _rk4_with(**changes) -> ExplicitRungeKutta:
    return ExplicitRungeKutta(dataclasses.replace(RK4_38, name="broken_rk4", **changes))


#: Kutta's 3/8 rule with one wrong coefficient: a_32 = 1.1 instead of 1
WRONG_COEFFICIENT = {"a": ((), (F(1, 3),), (F(-1, 3), F(11, 10)), (1, -1, 1))}


def test_check_solver_rejects_a_tableau_with_a_wrong_coefficient():
    with pytest.raises(AssertionError, match="declares order 4 but converges with measured order 1"):
        check_solver(_rk4_with(**WRONG_COEFFICIENT))


def test_check_solver_rejects_a_wrong_coefficient_registered_through_a_plugin(monkeypatch):
    # the path a plugin author takes: a tableau and a name, registered through the hook
    broken = dataclasses.replace(RK4_38, name="broken_rk4", **WRONG_COEFFICIENT)
    plugin = types.SimpleNamespace(register_solvers=neurode.hookimpl(
        lambda register: register("broken_rk4", partial(ExplicitRungeKutta, broken))))
    entry_point = types.SimpleNamespace(name="broken", dist=types.SimpleNamespace(name="broken-dist", version="1"),
                                        load=lambda: plugin)
    registry = Registry(builtins=("neurode.plugins.adjoints.direct",), entry_points=[entry_point], warn=False)
    monkeypatch.setattr(registry_module, "_registry", registry)
    with pytest.raises(AssertionError, match="solver 'broken_rk4' declares order 4 but converges with measured"):
        check_solver("broken_rk4")


def test_check_order_rejects_an_overstated_order():
    with pytest.raises(AssertionError, match="declares order 5 but converges with measured order [34]\\.[0-9]{2} "):
        check_order(ExplicitRungeKutta(RK4_38), order=5)


def test_check_order_rejects_an_inconsistent_method():
    # weights that do not sum to one: the error does not fall as the step shrinks
    with pytest.raises(AssertionError, match="could not measure an order of convergence"):
        check_order(_rk4_with(b=(F(1, 8), F(3, 8), F(3, 8), F(1, 4))))


class _UpcastingRK(ExplicitRungeKutta):
    """Computes the stages in float64 whatever the state's dtype (a classic performance bug on GPUs)."""

    def step(self, func, t0, h, y0, state):
        def func64(t, y, perturb=0):
            return func(t, y.double(), perturb)

        step = super().step(func64, t0, h, y0.double(), state)
        step.y1 = step.y1.to(y0.dtype)
        return step


def test_check_dtypes_rejects_a_solver_that_upcasts_the_state():
    with pytest.raises(AssertionError, match="f was called with .*torch.float64"):
        check_dtypes(_UpcastingRK(RK4_38))


class _ForwardOnlyRK(ExplicitRungeKutta):
    """Ignores the sign of the step: integrates forwards even when t decreases."""

    def step(self, func, t0, h, y0, state):
        return super().step(func, t0, abs(h), y0, state)


def test_check_reversed_time_rejects_a_solver_that_ignores_the_step_sign():
    with pytest.raises(AssertionError, match="from t=2 back to t=0 has error"):
        check_reversed_time(_ForwardOnlyRK(RK4_38))


class _BatchCouplingRK(ExplicitRungeKutta):
    """Lets the batch members leak into each other (e.g. a norm taken over the wrong dimension)."""

    def step(self, func, t0, h, y0, state):
        step = super().step(func, t0, h, y0, state)
        step.y1 = step.y1 + 1e-6 * h * y0.sum()
        return step


def test_check_batch_rejects_a_solver_that_couples_batch_members():
    with pytest.raises(
        AssertionError, match="batch member 0 of a fixed-step \\(16 steps\\) solve, against its own solve, differs"
    ):
        check_batch(_BatchCouplingRK(RK4_38))


def test_check_tolerance_rejects_an_error_estimate_that_is_always_zero():
    blind = dataclasses.replace(DOPRI5, name="blind_dopri5", b_error=(0,) * DOPRI5.stages)
    with pytest.raises(
        AssertionError, match="'blind_dopri5': at rtol=atol=1e-6 the error is .* is the error estimate right"
    ):
        check_tolerance(ExplicitRungeKutta(blind))


# --------------------------------------------------------------------------- check_tableau


def test_rooted_trees_are_counted_as_in_the_literature():
    # OEIS A000081: the number of rooted trees with n vertices
    assert [len(rooted_trees(n)) for n in range(1, 11)] == [1, 1, 2, 4, 9, 20, 48, 115, 286, 719]


def test_check_tableau_catches_a_typo_too_small_for_a_convergence_plot():
    # a_43 of Dormand–Prince 5(4) off in the tenth significant digit
    a = [list(row) for row in DOPRI5.a]
    a[4][2] *= 1 + 1e-10
    a[4][0] += a[4][2] / (1 + 1e-10) * 1e-10 * -1  # keep the row sum, so only the order conditions can tell
    typo = dataclasses.replace(DOPRI5, name="typo", a=tuple(tuple(r) for r in a))
    with pytest.raises(AssertionError, match="'typo' declares order 5 but its weights b violate an order-3 condition"):
        check_tableau(typo)


def test_check_tableau_catches_nodes_that_are_not_the_row_sums():
    skewed = dataclasses.replace(RK4_38, name="skewed", c=(0, F(1, 3), F(2, 3), F(9, 10)))
    with pytest.raises(AssertionError, match="stage 3 has c_3 = 0.9 but its row of a sums to 1.0"):
        check_tableau(skewed)


def test_check_tableau_catches_an_understated_order():
    with pytest.raises(AssertionError, match="also satisfy every order-4 condition; declare order=4"):
        check_tableau(dataclasses.replace(RK4_38, order=3))


def test_check_tableau_catches_error_weights_that_do_not_sum_to_zero():
    e = list(DOPRI5.b_error)
    e[0] += 1e-3
    with pytest.raises(AssertionError, match="the error weights b_error must sum to 0"):
        check_tableau(dataclasses.replace(DOPRI5, b_error=tuple(e)))


def test_check_tableau_catches_a_dense_output_that_jumps_at_the_step_end():
    rows = [list(r) for r in DOPRI5.interpolant]
    rows[0][0] += 1e-3
    with pytest.raises(AssertionError, match="dense interpolant at theta=1 differs from b"):
        check_tableau(dataclasses.replace(DOPRI5, interpolant=tuple(tuple(r) for r in rows)))


# --------------------------------------------------------------------------- broken gradient methods are rejected


class _ScaledGradients(AbstractAdjoint):
    """Right values, gradients 1% too large (e.g. a cotangent added twice at one output)."""

    def solve(self, problem):
        ys = get_registry().get("adjoint", "direct").obj().solve(problem).ys
        return AdjointResult(ys.detach() + 1.01 * (ys - ys.detach()))


class _ShiftedValues(AbstractAdjoint):
    """Gradients right, values perturbed (a gradient method must never change the solution)."""

    def solve(self, problem):
        return AdjointResult(get_registry().get("adjoint", "direct").obj().solve(problem).ys + 1e-9)


def test_check_adjoint_rejects_wrong_gradients():
    with pytest.raises(AssertionError, match="the gradient with respect to y0 differs from direct's by 0.01"):
        check_adjoint(_ScaledGradients())


def test_check_adjoint_rejects_changed_forward_values():
    with pytest.raises(AssertionError, match="forward values \\(part 0\\) differ from direct's"):
        check_adjoint(_ShiftedValues())


def test_manufactured_problem_is_solved_by_its_exact_solution():
    problem = ManufacturedProblem(batch=4)
    t = torch.tensor(0.7, dtype=torch.float64)
    u = problem.exact(t).requires_grad_(False)
    du = torch.autograd.functional.jacobian(lambda s: problem.exact(s).sum(0), t)
    assert torch.allclose(problem(t, u).sum(0), du, atol=1e-14)
