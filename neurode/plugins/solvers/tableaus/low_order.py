"""Classical fixed-step methods: Euler, midpoint, Heun's second and third order, RK4 (3/8 rule).

Coefficients as torchdiffeq uses them (its ``rk4`` is Kutta's 3/8 rule, which
has a smaller error constant than the classical RK4; Butcher 2016, §235), so
that results agree with it exactly.
"""

from fractions import Fraction as F

from neurode.framework.tableau import ButcherTableau

EULER = ButcherTableau(name="euler", c=(0,), a=((),), b=(1,), order=1)

MIDPOINT = ButcherTableau(name="midpoint", c=(0, F(1, 2)), a=((), (F(1, 2),)), b=(0, 1), order=2)

HEUN2 = ButcherTableau(name="heun2", c=(0, 1), a=((), (1,)), b=(F(1, 2), F(1, 2)), order=2)

HEUN3 = ButcherTableau(
    name="heun3",
    c=(0, F(1, 3), F(2, 3)),
    a=((), (F(1, 3),), (0, F(2, 3))),
    b=(F(1, 4), 0, F(3, 4)),
    order=3,
)

# Kutta (1901): the 3/8 rule.
RK4_38 = ButcherTableau(
    name="rk4",
    c=(0, F(1, 3), F(2, 3), 1),
    a=((), (F(1, 3),), (F(-1, 3), 1), (1, -1, 1)),
    b=(F(1, 8), F(3, 8), F(3, 8), F(1, 8)),
    order=4,
)
