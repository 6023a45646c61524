"""Dormand–Prince 8(7) "RK8(7)13M" (Prince & Dormand 1981, J. Comput. Appl. Math. 7(1)), torchdiffeq's dopri8.

This is not Hairer's DOP853 (the 8(5,3) pair of scipy and Julia, Hairer,
Nørsett & Wanner I, §II.10): its nodes and weights differ, so DOP853's 7th-order
continuous extension (``contd8``) does not apply to its stages.

Dense output, two of them:

* neurode's: order 7, bootstrapped (Enright et al. 1986; see
  ``framework/continuous_extension.py``) from the method's order-5 free
  interpolant with seven extra evaluations of ``f``, made only on steps that
  have an output inside them. At the long steps an 8th-order method takes, an
  order-4 interpolant would throw away most of the accuracy asked for.
* torchdiffeq's: the quartic through the free interpolant's midpoint
  (``torchdiffeq_interpolant``), which ``neurode.odeint`` keeps for
  identical outputs.
"""

from fractions import Fraction

from neurode.framework.continuous_extension import bootstrap
from neurode.framework.tableau import ButcherTableau, quartic_interpolant

_C = (0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200, 5490023248 / 9719169821, 13 / 20,
      1201146811 / 1299019798, 1, 1, 1)

_A = (
    (),
    (1 / 18,),
    (1 / 48, 1 / 16),
    (1 / 32, 0, 3 / 32),
    (5 / 16, 0, -75 / 64, 75 / 64),
    (3 / 80, 0, 0, 3 / 16, 3 / 20),
    (29443841 / 614563906, 0, 0, 77736538 / 692538347, -28693883 / 1125000000, 23124283 / 1800000000),
    (16016141 / 946692911, 0, 0, 61564180 / 158732637, 22789713 / 633445777, 545815736 / 2771057229,
     -180193667 / 1043307555),
    (39632708 / 573591083, 0, 0, -433636366 / 683701615, -421739975 / 2616292301, 100302831 / 723423059,
     790204164 / 839813087, 800635310 / 3783071287),
    (246121993 / 1340847787, 0, 0, -37695042795 / 15268766246, -309121744 / 1061227803, -12992083 / 490766935,
     6005943493 / 2108947869, 393006217 / 1396673457, 123872331 / 1001029789),
    (-1028468189 / 846180014, 0, 0, 8478235783 / 508512852, 1311729495 / 1432422823, -10304129995 / 1701304382,
     -48777925059 / 3047939560, 15336726248 / 1032824649, -45442868181 / 3398467696, 3065993473 / 597172653),
    (185892177 / 718116043, 0, 0, -3185094517 / 667107341, -477755414 / 1098053517, -703635378 / 230739211,
     5731566787 / 1027545527, 5232866602 / 850066563, -4093664535 / 808688257, 3962137247 / 1805957418,
     65686358 / 487910083),
    (403863854 / 491063109, 0, 0, -5068492393 / 434740067, -411421997 / 543043805, 652783627 / 914296604,
     11173962825 / 925320556, -13158990841 / 6184727034, 3936647629 / 1978049680, -160528059 / 685178525,
     248638103 / 1413531060, 0),
    (14005451 / 335480064, 0, 0, 0, 0, -59238493 / 1068277825, 181606767 / 758867731, 561292985 / 797845732,
     -1041891430 / 1371343529, 760417239 / 1151165299, 118820643 / 751138087, -528747749 / 2220607170, 1 / 4),
)

_B = _A[-1] + (0,)

_B_HAT = (13451932 / 455176623, 0, 0, 0, 0, -808719846 / 976000145, 1757004468 / 5645159321,
          656045339 / 265891186, -3867574721 / 1518517206, 465885868 / 322736535, 53011238 / 667516719, 2 / 45,
          0, 0)


#: A continuous extension of order 5 from the 14 stages (13 and the FSAL one), ``w_i(θ) = θ Σ_p P_ip θ^p`` with
#: ``P_i`` listed from θ^5 down to θ^0. torchdiffeq (``dopri8.py``, uncited there) evaluates it only at θ = 1/2 for
#: its quartic; its order 5 (local error O(h^6), for every θ) is checked on the order conditions in the tests.
_FREE = {
    0: (-6.3448349392860401388, 22.1396504998094068976, -30.0610568289666450593, 19.9990069333683970610,
        -6.6910181737837595697, 1.0),
    5: (-39.6107919852202505218, 116.4422149550342161651, -121.4999627731334642623, 52.2273532792945524050,
        -7.6142658045872677172, 0.0),
    6: (20.3761213808791436958, -67.1451318825957197185, 83.1721004639847717481, -46.8919164181093621583,
        10.7281392630428866124, 0.0),
    7: (7.3347098826795362023, -16.5672243527496524646, 9.5724507555993664382, -0.1890893225010595467,
        0.5526637063753648783, 0.0),
    8: (32.8801774352459155182, -89.9916014847245016028, 87.8406057677205645007, -35.7075975946222072821,
        4.2186562625665153803, 0.0),
    9: (-10.1588990526426760954, 22.6237489648532849093, -17.4152107770762969005, 6.2736448083240352160,
        -0.6627209125361597559, 0.0),
    10: (-12.5401268098782561200, 32.2362340167355370113, -28.5903289514790976966, 10.3160881272450748458,
         -1.2636789001135462218, 0.0),
    11: (29.5553001484516038033, -82.1020315488359848644, 81.6630950584341412934, -34.7650769866611817349,
         5.4106037898590422230, 0.0),
    12: (-41.7923486424390588923, 116.2662185791119533462, -114.9375291377009418170, 47.7457971078225540396,
         -7.0321379067945741781, 0.0),
    13: (20.3006925822100825485, -53.9020777466385396792, 50.2558364226176017553, -19.0082099341608028453,
         2.3537586759714983486, 0.0),
}
#: the free interpolant in the tableau's form: row i holds the coefficients of θ^1 .. θ^6
FREE_INTERPOLANT = tuple(tuple(reversed(_FREE[i])) if i in _FREE else (0.0,) * 6 for i in range(14))


def _mid_weights():
    # torchdiffeq's midpoint weights: the free interpolant at θ = 1/2, in torchdiffeq's own arithmetic (h^p / (1/h))
    h = 1 / 2
    w = [0.0] * 14
    for i, p in _FREE.items():
        w[i] = (p[0] * h**5 + p[1] * h**4 + p[2] * h**3 + p[3] * h**2 + p[4] * h + p[5]) / (1 / h)
    return tuple(w)


#: Two bootstrapping rounds (continuous_extension.py): three samples of f on the order-5 free interpolant give an
#: order-6 Hermite–Birkhoff polynomial; four samples on that give order 7 (degree 7), the order DOP853's dense output
#: has. The nodes avoid equal spacing, for which the order-6 fit would be singular (Boole's rule integrates it).
BOOTSTRAP_ROUNDS = ((Fraction(3, 10), Fraction(1, 2), Fraction(9, 10)),
                    (Fraction(1, 5), Fraction(2, 5), Fraction(3, 5), Fraction(4, 5)))
_DENSE_C, _DENSE_A, _INTERPOLANT = bootstrap(_C, _B, FREE_INTERPOLANT, BOOTSTRAP_ROUNDS)

DOPRI8 = ButcherTableau(
    name="dopri8",
    c=_C,
    a=_A,
    b=_B,
    b_error=tuple(b - bh for b, bh in zip(_B, _B_HAT)),
    order=8,
    fsal=True,
    interpolant=_INTERPOLANT,
    dense_c=_DENSE_C,
    dense_a=_DENSE_A,
    torchdiffeq_interpolant=quartic_interpolant(_B, _mid_weights()),
)
