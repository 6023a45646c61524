"""Low-order embedded pairs: adaptive Heun (Euler/Heun 1(2)), Fehlberg 1(2), Bogacki–Shampine 3(2).

Midpoint weights for the quartic dense output are torchdiffeq's. As there,
the last stage is carried to the next step as its first derivative (for
adaptive Heun and Fehlberg 2 that is an approximation of ``f(t1, y1)``: kept for
drop-in identical results; see ``ButcherTableau.fsal``).
"""

from fractions import Fraction as F

from neurode.framework.tableau import ButcherTableau, quartic_interpolant

_AH_B = (F(1, 2), F(1, 2))
ADAPTIVE_HEUN = ButcherTableau(
    name="adaptive_heun",
    c=(0, 1),
    a=((), (1,)),
    b=_AH_B,
    b_error=(F(1, 2), F(-1, 2)),
    order=2,
    fsal=True,
    interpolant=quartic_interpolant(_AH_B, (F(1, 2), 0)),
)

# Fehlberg (1969), NASA TR R-315: RK1(2) with local extrapolation, as in torchdiffeq.
_FE_B = (F(1, 512), F(255, 256), F(1, 512))
FEHLBERG2 = ButcherTableau(
    name="fehlberg2",
    c=(0, F(1, 2), 1),
    a=((), (F(1, 2),), (F(1, 256), F(255, 256))),
    b=_FE_B,
    b_error=(F(-1, 512), 0, F(1, 512)),
    order=2,
    fsal=True,
    interpolant=quartic_interpolant(_FE_B, (0, F(1, 2), 0)),
)

# Bogacki & Shampine (1989), Appl. Math. Lett. 2(4): the 3(2) pair.
_BS_B = (F(2, 9), F(1, 3), F(4, 9), 0)
BOSH3 = ButcherTableau(
    name="bosh3",
    c=(0, F(1, 2), F(3, 4), 1),
    a=((), (F(1, 2),), (0, F(3, 4)), (F(2, 9), F(1, 3), F(4, 9))),
    b=_BS_B,
    b_error=(F(2, 9) - F(7, 24), F(1, 3) - F(1, 4), F(4, 9) - F(1, 3), F(-1, 8)),
    order=3,
    fsal=True,
    interpolant=quartic_interpolant(_BS_B, (0, F(1, 2), 0, 0)),
)
