"""Built-in plugin: the adaptive L-stable ESDIRK methods (Kværnø 2004, diffrax's names; Kennedy & Carpenter 2016).

Registered through the same hook a third-party package uses: each method is
an ``ESDIRKTableau`` and a name (``neurode/plugins/solvers/tableaus/esdirk.py``).
"""

from functools import partial

from neurode import hookimpl
from neurode.framework.esdirk import ESDIRK
from neurode.plugins.solvers.tableaus.esdirk import METHODS


@hookimpl
def register_solvers(register):
    for tableau in METHODS:
        register(tableau.name, partial(ESDIRK, tableau),
                 description=f"{tableau.citation}; L-stable ESDIRK, order {tableau.order} with an embedded order-"
                             f"{tableau.embedded_order} estimate (adaptive, stiff, simplified Newton)")
