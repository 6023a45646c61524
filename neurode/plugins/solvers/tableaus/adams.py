"""Adams–Bashforth and Adams–Moulton coefficients, k = 1 .. 12, as exact fractions.

The k-step Adams–Bashforth method (explicit, order k) and the Adams–Moulton
method with k nodes (implicit, order k; k - 1 past values and the new one)
integrate the polynomial through the stored derivatives (Hairer, Nørsett &
Wanner, *Solving Ordinary Differential Equations I*, 2nd ed., §III.1,
eqs. 1.5 and 1.9, Tables 1.1 and 1.2)::

    AB:  y_{n+1} = y_n + h Σ_{j=0}^{k-1} β_j f_{n-j}
    AM:  y_{n+1} = y_n + h (β*_0 f_{n+1} + Σ_{j=1}^{k-1} β*_j f_{n+1-j})

Row ``k`` of each table lists β_0 .. β_{k-1} (newest value first) with the
numerators and common denominators torchdiffeq stores (``fixed_adams.py``),
so that neurode's Adams methods reproduce torchdiffeq's to round-off. The
tests re-derive every row from the defining integrals.
"""

from fractions import Fraction

#: The largest table row: torchdiffeq's ``_MAX_ORDER``.
MAX_ORDER = 12

_DENOMINATORS = (None, 11, 2, 12, 24, 720, 1440, 60480, 120960, 3628800, 7257600, 479001600, 958003200)

_BASHFORTH_NUMERATORS = (
    (),
    (11,),
    (3, -1),
    (23, -16, 5),
    (55, -59, 37, -9),
    (1901, -2774, 2616, -1274, 251),
    (4277, -7923, 9982, -7298, 2877, -475),
    (198721, -447288, 705549, -688256, 407139, -134472, 19087),
    (434241, -1152169, 2183877, -2664477, 2102243, -1041723, 295767, -36799),
    (14097247, -43125206, 95476786, -139855262, 137968480, -91172642, 38833486, -9664106, 1070017),
    (30277247, -104995189, 265932680, -454661776, 538363838, -444772162, 252618224, -94307320, 20884811,
     -2082753),
    (2132509567, -8271795124, 23591063805, -46113029016, 63716378958, -63176201472, 44857168434, -22329634920,
     7417904451, -1479574348, 134211265),
    (4527766399, -19433810163, 61633227185, -135579356757, 214139355366, -247741639374, 211103573298,
     -131365867290, 58189107627, -17410248271, 3158642445, -262747265),
)

_MOULTON_NUMERATORS = (
    (),
    (11,),  # backward Euler, 11/11 (torchdiffeq stores 1/11 here; the row is never used by an Adams step)
    (1, 1),
    (5, 8, -1),
    (9, 19, -5, 1),
    (251, 646, -264, 106, -19),
    (475, 1427, -798, 482, -173, 27),
    (19087, 65112, -46461, 37504, -20211, 6312, -863),
    (36799, 139849, -121797, 123133, -88547, 41499, -11351, 1375),
    (1070017, 4467094, -4604594, 5595358, -5033120, 3146338, -1291214, 312874, -33953),
    (2082753, 9449717, -11271304, 16002320, -17283646, 13510082, -7394032, 2687864, -583435, 57281),
    (134211265, 656185652, -890175549, 1446205080, -1823311566, 1710774528, -1170597042, 567450984, -184776195,
     36284876, -3250433),
    (262747265, 1374799219, -2092490673, 3828828885, -5519460582, 6043521486, -4963166514, 3007739418,
     -1305971115, 384709327, -68928781, 5675265),
)


def _rows(numerators) -> tuple[tuple[Fraction, ...], ...]:
    return tuple(
        tuple(Fraction(n, d) for n in row) if d is not None else () for row, d in zip(numerators, _DENOMINATORS)
    )


#: ``ADAMS_BASHFORTH[k]``: the k-step explicit method's β_0 .. β_{k-1} (order k).
ADAMS_BASHFORTH: tuple[tuple[Fraction, ...], ...] = _rows(_BASHFORTH_NUMERATORS)

#: ``ADAMS_MOULTON[k]``: the implicit method's β*_0 (for f_{n+1}) .. β*_{k-1} (order k).
ADAMS_MOULTON: tuple[tuple[Fraction, ...], ...] = _rows(_MOULTON_NUMERATORS)
