"""Built-in plugin: the fixed-step implicit Runge–Kutta methods, under torchdiffeq's names.

Registered through the same hook a third-party package uses: each method is
an ``ImplicitTableau`` and a name (``neurode/plugins/solvers/tableaus/implicit.py``).
"""

from functools import partial

from neurode import hookimpl
from neurode.framework.implicit_rk import ImplicitRungeKutta
from neurode.plugins.solvers.tableaus.implicit import METHODS


@hookimpl
def register_solvers(register):
    for tableau in METHODS:
        register(tableau.name, partial(ImplicitRungeKutta, tableau),
                 description=f"{tableau.citation}; implicit, order {tableau.order} (fixed step, simplified Newton)")
