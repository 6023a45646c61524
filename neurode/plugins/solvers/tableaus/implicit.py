"""Tableaus of the fixed-step implicit Runge–Kutta methods torchdiffeq offers, under its names.

Coefficients from Hairer & Wanner, "Solving Ordinary Differential Equations
II" (2nd ed., 1996), §IV.5 (tables 5.1-5.6) unless stated. One correction to
torchdiffeq's data: its ``gl4`` gives both nodes as ``1/2 - sqrt(3)/6``; the
Gauss nodes are ``1/2 ∓ sqrt(3)/6`` (the row sums of ``a``), as here.
"""

from math import sqrt

from neurode.framework.implicit_rk import ImplicitTableau

IMPLICIT_EULER = ImplicitTableau(
    name="implicit_euler", c=(1.0,), a=((1.0,),), b=(1.0,), order=1,
    citation="backward Euler; Radau IIA with one stage (Hairer & Wanner II, §IV.5)",
)

IMPLICIT_MIDPOINT = ImplicitTableau(
    name="implicit_midpoint", c=(0.5,), a=((0.5,),), b=(1.0,), order=2,
    citation="Gauss-Legendre with one stage (Hairer & Wanner II, table 5.1)",
)

TRAPEZOID = ImplicitTableau(
    name="trapezoid", c=(0.0, 1.0), a=((0.0, 0.0), (0.5, 0.5)), b=(0.5, 0.5), order=2,
    citation="the trapezoidal rule (Crank-Nicolson), Lobatto IIIA with two stages (Hairer & Wanner II, table 5.7)",
)

_S3 = sqrt(3.0)
GL4 = ImplicitTableau(
    name="gl4",
    c=(0.5 - _S3 / 6, 0.5 + _S3 / 6),
    a=((0.25, 0.25 - _S3 / 6), (0.25 + _S3 / 6, 0.25)),
    b=(0.5, 0.5),
    order=4,
    citation="Gauss-Legendre, two stages (Butcher 1964; Hairer & Wanner II, table 5.1)",
)

_S15 = sqrt(15.0)
GL6 = ImplicitTableau(
    name="gl6",
    c=(0.5 - _S15 / 10, 0.5, 0.5 + _S15 / 10),
    a=(
        (5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
        (5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24),
        (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36),
    ),
    b=(5 / 18, 4 / 9, 5 / 18),
    order=6,
    citation="Gauss-Legendre, three stages (Butcher 1964; Hairer & Wanner II, table 5.2)",
)

RADAU_IIA3 = ImplicitTableau(
    name="radauIIA3",
    c=(1 / 3, 1.0),
    a=((5 / 12, -1 / 12), (3 / 4, 1 / 4)),
    b=(3 / 4, 1 / 4),
    order=3,
    citation="Radau IIA, two stages (Ehle 1969; Hairer & Wanner II, table 5.5)",
)

_S6 = sqrt(6.0)
RADAU_IIA5 = ImplicitTableau(
    name="radauIIA5",
    c=((4 - _S6) / 10, (4 + _S6) / 10, 1.0),
    a=(
        ((88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225),
        ((296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225),
        ((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
    ),
    b=((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
    order=5,
    citation="Radau IIA, three stages (Ehle 1969; Hairer & Wanner II, table 5.6)",
)

_GAMMA = 1 - sqrt(2.0) / 2
SDIRK2 = ImplicitTableau(
    name="sdirk2",
    c=(_GAMMA, 1.0),
    a=((_GAMMA, 0.0), (1 - _GAMMA, _GAMMA)),
    b=(1 - _GAMMA, _GAMMA),
    order=2,
    citation="Alexander (1977), 'Diagonally implicit Runge-Kutta methods for stiff ODEs', SIAM J. Numer. Anal. 14, "
             "the L-stable two-stage SDIRK with gamma = 1 - sqrt(2)/2",
)

_W = sqrt(2.0) / 4
TRBDF2 = ImplicitTableau(
    name="trbdf2",
    c=(0.0, 2 * _GAMMA, 1.0),
    a=((0.0, 0.0, 0.0), (_GAMMA, _GAMMA, 0.0), (_W, _W, _GAMMA)),
    b=(_W, _W, _GAMMA),
    order=2,
    citation="TR-BDF2 as a three-stage ESDIRK (Bank et al. 1985; Hosea & Shampine 1996, 'Analysis and "
             "implementation of TR-BDF2', Appl. Numer. Math. 20), gamma = 2 - sqrt(2) for the trapezoidal part",
)

METHODS = (IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID, GL4, GL6, RADAU_IIA3, RADAU_IIA5, SDIRK2, TRBDF2)
