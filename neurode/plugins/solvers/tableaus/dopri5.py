"""Dormand–Prince 5(4) (Dormand & Prince 1980, J. Comput. Appl. Math. 6(1)).

Dense output: the quartic through the midpoint value with Shampine's (1986)
midpoint weights, as torchdiffeq's ``DPS_C_MID``.
"""

from fractions import Fraction as F

from neurode.framework.tableau import ButcherTableau, quartic_interpolant

_B = (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0)
# The embedded 4th-order weights torchdiffeq uses (and hence its step sequence);
# they sum to one and give the same order as Dormand–Prince's printed b_hat.
_B_HAT = (F(1951, 21600), 0, F(22642, 50085), F(451, 720), F(-12231, 42400), F(649, 6300), F(1, 60))

_MID = (
    F(6025192743, 30085553152) / 2,
    0,
    F(51252292925, 65400821598) / 2,
    F(-2691868925, 45128329728) / 2,
    F(187940372067, 1594534317056) / 2,
    F(-1776094331, 19743644256) / 2,
    F(11237099, 235043384) / 2,
)

DOPRI5 = ButcherTableau(
    name="dopri5",
    c=(0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
    a=(
        (),
        (F(1, 5),),
        (F(3, 40), F(9, 40)),
        (F(44, 45), F(-56, 15), F(32, 9)),
        (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
        (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
        _B[:6],
    ),
    b=_B,
    b_error=tuple(b - bh for b, bh in zip(_B, _B_HAT)),
    order=5,
    fsal=True,
    interpolant=quartic_interpolant(_B, _MID),
)
