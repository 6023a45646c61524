"""Tableaus of stiffly accurate ESDIRK pairs: Kværnø's of orders 3, 4, 5 (diffrax's names), Kennedy–Carpenter's 5(4).

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
``tests/plugins/solvers/test_esdirk_tableaus.py`` checks every order condition,
the row sums, stiff accuracy and L-stability from these numbers.

Kennedy & Carpenter's ESDIRK5(4)7L[2]SA (C. A. Kennedy and M. H. Carpenter,
"Diagonally implicit Runge–Kutta methods for ordinary differential
equations. A review", NASA/TM-2016-219173, §8; the rationals as SUNDIALS'
ARKODE carries them, ``ARKODE_ESDIRK547L2SA_7_4_5``), ``γ = 23/125``, stage
order 2, L-stable and stiffly accurate, with an embedded order-4 solution
that is not a stage. Its nodes stay in ``[0, 1.04]`` (kvaerno5's third stage
sits at ``c = 1.23``, an extrapolation a simplified Newton iteration from
``y0`` converges on only at smaller steps): it is the order-5 method that
meets ``neurode.testing.check_solver`` with its default options (issue 15).
"""

from fractions import Fraction

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
                         citation=f"{_CITATION}, the 5/4 pair", dense=_KVAERNO5_DENSE, dense_order=4)


#: kvaerno5's continuous extension of order 4, derived here (Kværnø publishes none): the weights
#: ``b_j(θ) = Σ_m β_jm θ^m`` (rows: stages; columns: θ, θ², θ³, θ⁴) solve the linear equations "order conditions
#: up to order 4 at every θ" (Hairer et al. I, §II.6, eq. 6.8: one equation per tree and power of θ), ``b(1) = b``,
#: ``b'(0) = e_1`` and ``b'(1) = e_7`` (C¹ across steps: the derivatives at the ends are ``k_1`` and ``k_7``). The
#: 26 independent equations leave 2 of the 28 unknowns free; they are chosen to minimise the order-5 residuals over
#: θ in [0, 1] (least squares; stage 2's weight comes out 0). ``tests/plugins/solvers/test_esdirk_tableaus.py``
#: checks every condition from these numbers. An order-5 extension of degree <= 7 does not exist for this tableau.
_KVAERNO5_DENSE = (
    (1.0, -2.13860402922873, 1.8235981055630701, -0.5483965645579372),
    (0.0, 0.0, 0.0, 0.0),
    (0.0, 0.4174189512064322, -1.0547142542743992, 0.5823262151025832),
    (0.0, -2.8975813711856837, 5.630417673238538, -2.774022569336062),
    (0.0, 3.6138270498349376, -4.707921903709206, 1.7240279028644347),
    (0.0, 0.5779590946283152, -0.8774190113285267, 0.3690847111822365),
    (0.0, 0.42698030474472937, -0.8139606094894605, 0.6469803047447295),
)


def _esdirk547l2sa() -> ESDIRKTableau:
    """Kennedy & Carpenter's ESDIRK5(4)7L[2]SA: the published rationals, ``a_i1 = c_i - Σ_{j>1} a_ij``."""
    g = Fraction(23, 125)
    c = (Fraction(0), Fraction(46, 125), Fraction(1518047795759, 14084074382095), Fraction(13, 25),
         Fraction(5906118540659, 9042400211275), Fraction(26, 25), Fraction(1))
    b = [Fraction(0), -Fraction(1319096626979, 17356965168099), Fraction(4356877330928, 10268933656267),
         Fraction(922991294344, 3350617878647), Fraction(4729382008034, 14755765856909),
         -Fraction(308199069217, 5897303561678), g]
    b[0] = 1 - sum(b[1:])
    b_hat = [Fraction(0), -Fraction(12068858301481, 111697653055985), Fraction(30204157393951, 62440428688139),
             Fraction(26156819792768, 110856972047457), Fraction(33531609809941, 89326307438822),
             -Fraction(18686091006953, 578397443530870), Fraction(10582397456777, 69011126173064)]
    b_hat[0] = 1 - sum(b_hat[1:])
    inner = {  # a_ij for 1 < j < i (the diagonal is γ)
        2: (-Fraction(121529886477, 3189120653983),),
        3: (Fraction(186345625210, 8596203768457), Fraction(3681435451073, 12579882114497)),
        4: (-Fraction(9898129553915, 11630542248213), Fraction(19565727496993, 11159348038501),
            Fraction(2073446517052, 4961027473423)),
        5: (-Fraction(39752543191591, 7894275939720), Fraction(52228808998390, 5821762529307),
            Fraction(2756378382725, 8748785577174), Fraction(17322065038796, 10556643942083)),
    }
    rows = [[Fraction(0)] * 7, [c[1] - g, g] + [Fraction(0)] * 5]
    for i in range(2, 6):
        row = [Fraction(0), *inner[i], g] + [Fraction(0)] * (6 - i)
        row[0] = c[i] - sum(row[1:])
        rows.append(row)
    rows.append(list(b))
    return ESDIRKTableau(
        name="esdirk547l2sa", gamma=float(g), c=tuple(float(x) for x in c),
        a=tuple(tuple(float(x) for x in row) for row in rows), b_hat=tuple(float(x) for x in b_hat), order=5,
        embedded_order=4, citation="Kennedy & Carpenter, NASA/TM-2016-219173, ESDIRK5(4)7L[2]SA",
        dense=_ESDIRK547L2SA_DENSE, dense_order=4,
    )


#: ESDIRK5(4)7L[2]SA's continuous extension of order 4, derived here as kvaerno5's (above); Kennedy & Carpenter's
#: memorandum gives none for this method.
_ESDIRK547L2SA_DENSE = (
    (1.0, -4.154377028722554, 5.004761599269664, -1.926382685090973),
    (0.0, 4.483364916571659, -9.270722291318766, 4.7113592602032455),
    (0.0, 2.653849022056569, -3.6105881097163897, 1.3810165712590092),
    (0.0, -3.339508794963163, 7.780893515827753, -4.165915739389236),
    (0.0, 0.1690859474702815, 0.9438712206513253, -0.7924463892236346),
    (0.0, 0.0649031928171476, -0.338850445173475, 0.22168623747152771),
    (0.0, 0.12268274477005514, -0.509365489540105, 0.5706827447700547),
)

KVAERNO3 = _kvaerno3()
KVAERNO4 = _kvaerno4()
KVAERNO5 = _kvaerno5()
ESDIRK547L2SA = _esdirk547l2sa()

METHODS = (KVAERNO3, KVAERNO4, KVAERNO5, ESDIRK547L2SA)
