"""Built-in plugin: the adaptive Rosenbrock (linearly implicit) methods for stiff problems.

Registered through the same hook a third-party package uses: each method is a
``RosenbrockTableau`` and a name (``neurode/plugins/solvers/tableaus/rosenbrock.py``).
"""

from functools import partial

from neurode import hookimpl
from neurode.framework.rosenbrock import Rosenbrock
from neurode.plugins.solvers.tableaus.rosenbrock import METHODS


@hookimpl
def register_solvers(register):
    for tableau in METHODS:
        stability = "L-stable" if tableau.l_stable else "A-stable"
        register(tableau.name, partial(Rosenbrock, tableau),
                 description=f"{tableau.citation}; Rosenbrock {tableau.order}({tableau.embedded_order}), "
                             f"{stability}, one LU per step (stiff problems)")
