"""Bootstrapped continuous extensions (framework/continuous_extension.py) on a method other than dopri8."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest

from neurode.framework.continuous_extension import bootstrap
from neurode.framework.tableau import ButcherTableau
from neurode.plugins.solvers.tableaus.dopri5 import DOPRI5
from neurode.testing import check_tableau, tableau_orders


def _bootstrapped_dopri5(rounds) -> ButcherTableau:
    dense_c, dense_a, interpolant = bootstrap(DOPRI5.c, DOPRI5.b, DOPRI5.interpolant, rounds)
    return dataclasses.replace(DOPRI5, interpolant=interpolant, dense_c=dense_c, dense_a=dense_a)


def test_one_round_raises_dopri5s_order_4_interpolant_to_order_5():
    # two samples of f on the order-4 interpolant: a degree-5 Hermite–Birkhoff fit, order min(4 + 1, 2 + 3) = 5
    assert tableau_orders(DOPRI5)["dense"] == 4
    raised = _bootstrapped_dopri5([(Fraction(1, 3), Fraction(3, 4))])
    assert check_tableau(raised)["dense"] == 5  # consistent extra stages, w(1) = b, and every order-5 condition


def test_a_round_with_too_few_nodes_does_not_raise_the_order():
    # one node: degree 4, interpolation error O(h^5), no better than the order-4 interpolant it started from
    assert tableau_orders(_bootstrapped_dopri5([(Fraction(1, 3),)]))["dense"] == 4


def test_nodes_that_make_the_fit_singular_are_refused():
    # nodes 1/4, 1/2, 3/4 with 0 and 1: Boole's rule integrates the degree-5 derivative, so u(1) = y1 is implied
    with pytest.raises(ValueError, match="singular"):
        bootstrap(DOPRI5.c, DOPRI5.b, DOPRI5.interpolant, [(Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))])


def test_a_node_outside_the_step_or_a_method_without_fsal_is_refused():
    with pytest.raises(ValueError, match=r"nodes in \(0, 1\)"):
        bootstrap(DOPRI5.c, DOPRI5.b, DOPRI5.interpolant, [(Fraction(3, 2),)])
    with pytest.raises(ValueError, match="FSAL last stage"):
        bootstrap(DOPRI5.c[:-1] + (0.5,), DOPRI5.b, DOPRI5.interpolant, [(Fraction(1, 2),)])


def test_the_tableau_refuses_dense_stages_of_the_wrong_shape():
    with pytest.raises(ValueError, match="dense_a must have 1 rows"):
        dataclasses.replace(DOPRI5, dense_c=(0.5,), dense_a=())
    with pytest.raises(ValueError, match="interpolant must have 8 rows"):
        dataclasses.replace(DOPRI5, dense_c=(0.5,), dense_a=((0.5,) + (0.0,) * 6,))
