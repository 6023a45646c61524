"""The built-in Butcher tableaus: their order conditions, their measured convergence, their validation.

Every explicit Runge–Kutta solver in the registry is a tableau and a name; the
facts checked here are the ones users rely on when they choose a method:
that it has the order it claims, exactly (the rooted-tree order conditions),
and in practice (the slope of the error as the step size halves).
"""

from __future__ import annotations

import pytest

from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.framework.registry import get_registry
from neurode.framework.tableau import ButcherTableau
from neurode.testing import check_order, check_tableau, tableau_orders
from neurode.testing.solvers import ORDER_TOLERANCE_ABOVE, ORDER_TOLERANCE_BELOW

#: (order, embedded order, dense-output order) of each built-in method as neurode ships it
EXPECTED_ORDERS = {
    "euler": (1, None, None),
    "midpoint": (2, None, None),
    "heun2": (2, None, None),
    "heun3": (3, None, None),
    "rk4": (4, None, None),
    "adaptive_heun": (2, 1, None),
    "fehlberg2": (2, 1, None),
    "bosh3": (3, 2, None),
    "dopri5": (5, 4, 4),
    "tsit5": (5, 4, 4),
    "dopri8": (8, 7, 7),
}


def _tableaus() -> dict[str, ButcherTableau]:
    found = {}
    registry = get_registry()
    for name in registry.names("solver"):
        try:
            solver = registry.get("solver", name).obj()
        except TypeError:  # a solver that needs arguments is no tableau method
            continue
        if isinstance(solver, ExplicitRungeKutta):
            found[name] = solver.tableau
    return found


TABLEAUS = _tableaus()


def test_every_builtin_tableau_method_is_registered():
    assert set(EXPECTED_ORDERS) <= set(TABLEAUS), f"missing: {sorted(set(EXPECTED_ORDERS) - set(TABLEAUS))}"


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_tableau_meets_the_order_conditions_of_its_declared_order(name):
    # the rooted-tree conditions up to the declared order hold to round-off, and no further
    orders = check_tableau(TABLEAUS[name])
    assert orders["solution"] == TABLEAUS[name].order


@pytest.mark.parametrize("name", sorted(EXPECTED_ORDERS))
def test_tableau_orders_are_the_published_ones(name):
    order, embedded, dense = EXPECTED_ORDERS[name]
    orders = tableau_orders(TABLEAUS[name])
    assert orders["solution"] == order
    assert orders["embedded"] == embedded
    if dense is not None:  # the dense output users interpolate with between steps
        assert orders["dense"] == dense


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_measured_convergence_slope_matches_the_declared_order(name):
    slope, errors = check_order(name)
    order = TABLEAUS[name].order
    assert order - ORDER_TOLERANCE_BELOW <= slope <= order + ORDER_TOLERANCE_ABOVE, errors


@pytest.mark.parametrize("name", [n for n in sorted(TABLEAUS) if TABLEAUS[n].adaptive])
def test_adaptive_tableaus_carry_their_last_stage_when_it_is_the_new_derivative(name):
    # FSAL saves one evaluation per step; it is exact when the last stage is f(t1, y1)
    tableau = TABLEAUS[name]
    assert tableau.fsal
    if name in ("dopri5", "tsit5", "dopri8", "bosh3"):
        assert tableau.solution_is_last_stage


def test_tableau_rejects_a_first_node_other_than_zero():
    with pytest.raises(ValueError, match="c must start with 0"):
        ButcherTableau(name="bad", c=(0.5,), a=((),), b=(1,), order=1)


def test_tableau_rejects_a_stage_matrix_that_is_not_strictly_lower_triangular():
    with pytest.raises(ValueError, match="row i of length i"):
        ButcherTableau(name="bad", c=(0, 1), a=((), (0.5, 0.5)), b=(0.5, 0.5), order=2)


def test_tableau_rejects_weights_of_the_wrong_length():
    with pytest.raises(ValueError, match="b must have length 2"):
        ButcherTableau(name="bad", c=(0, 1), a=((), (1,)), b=(1,), order=1)
    with pytest.raises(ValueError, match="b_error must have length 2"):
        ButcherTableau(name="bad", c=(0, 1), a=((), (1,)), b=(0.5, 0.5), b_error=(1,), order=2)


def test_tableau_rejects_an_order_below_one():
    with pytest.raises(ValueError, match="order must be >= 1"):
        ButcherTableau(name="bad", c=(0,), a=((),), b=(1,), order=0)


def test_interpolation_weights_need_a_dense_interpolant():
    with pytest.raises(ValueError, match="no dense interpolant"):
        TABLEAUS["rk4"].interpolation_weights(0.5)
