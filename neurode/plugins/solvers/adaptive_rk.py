"""Built-in plugin: the adaptive explicit Runge–Kutta pairs with dense output."""

from functools import partial

from neurode import hookimpl
from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.plugins.solvers.tableaus.dopri5 import DOPRI5
from neurode.plugins.solvers.tableaus.dopri8 import DOPRI8
from neurode.plugins.solvers.tableaus.low_order_adaptive import ADAPTIVE_HEUN, BOSH3, FEHLBERG2
from neurode.plugins.solvers.tableaus.tsit5 import TSIT5

METHODS = (
    (ADAPTIVE_HEUN, "adaptive Heun, Euler/Heun 1(2) pair"),
    (FEHLBERG2, "Runge-Kutta-Fehlberg 1(2) pair"),
    (BOSH3, "Bogacki-Shampine 3(2) pair"),
    (DOPRI5, "Dormand-Prince 5(4) pair, the default"),
    (TSIT5, "Tsitouras 5(4) pair"),
    (DOPRI8, "Dormand-Prince 8(7) pair, for tight tolerances"),
)


@hookimpl
def register_solvers(register):
    for tableau, description in METHODS:
        register(tableau.name, partial(ExplicitRungeKutta, tableau), description=description)
