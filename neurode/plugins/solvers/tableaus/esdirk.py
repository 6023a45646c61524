"""Tableaus of Kværnø's stiffly accurate ESDIRK pairs of orders 3, 4 and 5, under diffrax's names.

A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit
first stage", BIT Numerical Mathematics 44 (2004) 489–502. Every method is
stiffly accurate twice over: the solution is the last stage
(``b = a_s``) and the embedded solution the stage before (``b̂ = a_{s-1}``),
both L-stable; the error estimate is ``Y_s - Y_{s-1}``.

The orders 3 and 4 coefficients are Kværnø's closed forms in ``γ``; ``γ`` is
the root that makes the method L-stable (the coefficient of ``z^{s-1}`` in
the stability function's numerator vanishes), given by Kværnø to ten digits
and here to double precision as the root of the same polynomial:

* order 3/2, four stages: ``6γ³ - 18γ² + 9γ - 1 = 0``, ``γ ≈ 0.4358665215``;
* order 4/3, five stages: ``24γ⁴ - 96γ³ + 72γ² - 16γ + 1 = 0``,
  ``γ ≈ 0.5728160625`` (the variant advancing with the fourth-order stage;
  diffrax's ``Kvaerno4`` notes that OrdinaryDiffEq.jl pairs this tableau
  with the other variant's ``γ``).

Order 5/4, seven stages, ``γ = 0.26``: the published decimals (as carried
by diffrax's ``Kvaerno5`` and OrdinaryDiffEq.jl's ``Kvaerno5Tableau``).
``tests/plugins/solvers/test_esdirk.py`` checks every order condition, the
row sums, stiff accuracy and L-stability from these numbers.
"""

from neurode.framework.esdirk import ESDIRKTableau

_CITATION = "Kværnø, BIT 44 (2004) 489-502"


def _kvaerno3() -> ESDIRKTableau:
    g = 0.43586652150845900  # root of 6γ³ - 18γ² + 9γ - 1 in (1/3, 1/2)
    a31 = (-4 * g**2 + 6 * g - 1) / (4 * g)
    a32 = (-2 * g + 1) / (4 * g)
    a41 = (6 * g - 1) / (12 * g)
    a42 = -1 / ((24 * g - 12) * g)
    a43 = (-6 * g**2 + 6 * g - 1) / (6 * g - 3)
    return ESDIRKTableau(
        name="kvaerno3", gamma=g, c=(0.0, 2 * g, 1.0, 1.0),
        a=((0.0, 0.0, 0.0, 0.0), (g, g, 0.0, 0.0), (a31, a32, g, 0.0), (a41, a42, a43, g)),
        b_hat=(a31, a32, g, 0.0), order=3, embedded_order=2, citation=f"{_CITATION}, the 3/2 pair",
    )


def _kvaerno4() -> ESDIRKTableau:
    g = 0.57281606248213486  # root of 24γ⁴ - 96γ³ + 72γ² - 16γ + 1 near 0.5728

    def poly(*coefficients: float) -> float:  # Σ coefficients γ^(degree - i), highest power first
        value = 0.0
        for x in coefficients:
            value = value * g + x
        return value

    a31 = poly(144, -180, 81, -15, 1) * g / poly(12, -6, 1) ** 2
    a32 = poly(-36, 39, -15, 2) * g / poly(12, -6, 1) ** 2
    a41 = poly(-144, 396, -330, 117, -18, 1) / (12 * g**2 * poly(12, -9, 2))
    a42 = poly(72, -126, 69, -15, 1) / (12 * g**2 * poly(3, -1))
    a43 = poly(-6, 6, -1) * poly(12, -6, 1) ** 2 / (12 * g**2 * poly(12, -9, 2) * poly(3, -1))
    a51 = poly(288, -312, 120, -18, 1) / (48 * g**2 * poly(12, -9, 2))
    a52 = poly(24, -12, 1) / (48 * g**2 * poly(3, -1))
    a53 = -poly(12, -6, 1) ** 3 / (48 * g**2 * poly(3, -1) * poly(12, -9, 2) * poly(6, -6, 1))
    a54 = poly(-24, 36, -12, 1) / poly(24, -24, 4)
    c3 = g + a31 + a32
    return ESDIRKTableau(
        name="kvaerno4", gamma=g, c=(0.0, 2 * g, c3, 1.0, 1.0),
        a=((0.0,) * 5, (g, g, 0.0, 0.0, 0.0), (a31, a32, g, 0.0, 0.0), (a41, a42, a43, g, 0.0),
           (a51, a52, a53, a54, g)),
        b_hat=(a41, a42, a43, g, 0.0), order=4, embedded_order=3, citation=f"{_CITATION}, the 4/3 pair",
    )


def _kvaerno5() -> ESDIRKTableau:
    g = 0.26
    rows = (
        (0.0,) * 7,
        (g, g, 0.0, 0.0, 0.0, 0.0, 0.0),
        (0.13, 0.84033320996790809, g, 0.0, 0.0, 0.0, 0.0),
        (0.22371961478320505, 0.47675532319799699, -0.06470895363112615, g, 0.0, 0.0, 0.0),
        (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998, g, 0.0, 0.0),
        (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676, g, 0.0),
        (0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
         0.06962479448202728, g),
    )
    # c_i = Σ_j a_ij, to the published decimals (c_6 = c_7 = 1)
    c = (0.0, 0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0)
    return ESDIRKTableau(name="kvaerno5", gamma=g, c=c, a=rows, b_hat=rows[5], order=5, embedded_order=4,
                         citation=f"{_CITATION}, the 5/4 pair")


KVAERNO3 = _kvaerno3()
KVAERNO4 = _kvaerno4()
KVAERNO5 = _kvaerno5()

METHODS = (KVAERNO3, KVAERNO4, KVAERNO5)
