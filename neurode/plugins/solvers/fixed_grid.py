"""Built-in plugin: the fixed-step explicit Runge–Kutta methods.

Registered through the same hook a third-party package uses: each method is
a tableau and a name.
"""

from functools import partial

from neurode import hookimpl
from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.plugins.solvers.tableaus.low_order import EULER, HEUN2, HEUN3, MIDPOINT, RK4_38

METHODS = (
    (EULER, "forward Euler, order 1 (fixed step)"),
    (MIDPOINT, "explicit midpoint, order 2 (fixed step)"),
    (HEUN2, "Heun's method, order 2 (fixed step)"),
    (HEUN3, "Heun's third-order method (fixed step)"),
    (RK4_38, "Kutta's 3/8-rule fourth-order method, torchdiffeq's rk4 (fixed step)"),
)


@hookimpl
def register_solvers(register):
    for tableau, description in METHODS:
        register(tableau.name, partial(ExplicitRungeKutta, tableau), description=description)
