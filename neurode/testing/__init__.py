"""Conformance checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Call them from a plugin's own test suite; each raises ``AssertionError`` with
a message saying what was expected and what was seen::

    from neurode.testing import check_adjoint, check_solver, check_tableau

    def test_my_solver():
        check_solver("my_rk")              # a registered name, an instance or a factory

    def test_my_tableau():
        check_tableau(MY_TABLEAU)          # the order conditions, exactly

    def test_my_gradient_method():
        check_adjoint("my_adjoint")        # agrees with "direct"

What they check:

* :func:`check_solver`: the measured order of convergence matches the
  declared ``order``; float32 stays float32 and float64 float64, with fitting
  accuracy; batches of any shape and tuple states; decreasing time; adaptive
  step-size control that follows the tolerance; every available device.
  Each part is a public function too (:func:`check_order`,
  :func:`check_dtypes`, ...).
* :func:`check_tableau`: a Butcher tableau meets the order conditions of its
  declared order (rooted trees), and its embedded pair and dense output are
  consistent — catching coefficient typos too small to see in a convergence
  plot.
* :func:`check_adjoint`: a gradient method gives ``direct``'s forward values
  and, within a tolerance, its gradients with respect to ``y0``, parameters
  and output times.
* :func:`check_loader`: a loader opens a store into the canonical trajectory
  schema, lazily, honours ``variables=[...]``, and names a missing path in
  its error.

The problems they solve are public as well (:class:`ManufacturedProblem`,
:data:`STANDARD_PROBLEMS`), for plugin authors' own tests and benchmarks.
"""

from neurode.testing.adjoints import CASES, AdjointCase, AdjointReport, check_adjoint
from neurode.testing.loaders import check_loader
from neurode.testing.problems import ARENSTORF_PERIOD, STANDARD_PROBLEMS, ManufacturedProblem, StandardProblem
from neurode.testing.solvers import (
    CHECKS,
    SolverReport,
    available_devices,
    check_batch,
    check_devices,
    check_dtypes,
    check_order,
    check_reversed_time,
    check_solver,
    check_tolerance,
    check_tuple_state,
    measure_order,
)
from neurode.testing.tableaus import algebraic_order, check_tableau, rooted_trees, tableau_orders

__all__ = [
    "ARENSTORF_PERIOD",
    "CASES",
    "CHECKS",
    "STANDARD_PROBLEMS",
    "AdjointCase",
    "AdjointReport",
    "ManufacturedProblem",
    "SolverReport",
    "StandardProblem",
    "algebraic_order",
    "available_devices",
    "check_adjoint",
    "check_batch",
    "check_devices",
    "check_dtypes",
    "check_loader",
    "check_order",
    "check_reversed_time",
    "check_solver",
    "check_tableau",
    "check_tolerance",
    "check_tuple_state",
    "measure_order",
    "rooted_trees",
    "tableau_orders",
]
