"""Tableaus of the Rosenbrock methods, in Hairer's implementation form (``a_ij``, ``c_ij``, ``m_i``).

* ``rodas4``: Hairer & Wanner, "Solving Ordinary Differential Equations II"
  (2nd ed., 1996), §VI.4 (the RODAS method, coefficients of their code
  rodas.f, subroutine ROCOE with METH=1). Order 4, embedded order 3, stiffly
  accurate (the last two stages are the embedded and the main solution),
  L-stable; continuous output of order 3 (rodas.f's ``D2j``, ``D3j``).
* ``rodas5p``: Steinebach, "Construction of Rosenbrock–Wanner method Rodas5P
  and numerical benchmarks within the Julia Differential Equations package",
  BIT Numer. Math. 63 (2023) 27. Order 5, embedded order 4, stiffly accurate
  (the last three stages sit at ``t1``: the embedded solution is the point
  where the eighth stage evaluates ``f``, the solution that point plus the
  eighth stage, so the error estimate is the last stage), L-stable; its coefficients were
  chosen to keep order 4 for index-1 DAEs and for Prothero–Robinson, and its
  continuous output is of order 4 (three rows of ``h_ij``, one more power of
  ``θ`` than RODAS's). Coefficients as printed in the paper and transcribed
  in OrdinaryDiffEq.jl (``Rodas5PTableau``); the tests below hold them to the
  order conditions to 1e-12, which a wrong or truncated digit would break.
* ``ros3p``: Lang & Verwer, "ROS3P — an accurate third-order Rosenbrock
  solver designed for parabolic problems", BIT 41 (2001) 731–738, Table 1.
  Order 3 (also for parabolic problems, no order reduction), embedded order
  2; A-stable, not L-stable (``R(∞) ≈ -0.73``); its third stage evaluates
  ``f`` at the second stage's point, so a step costs two evaluations.
  **Fixed steps only** (``step_size``): the published embedded solution has
  the same stability function as the method, ``R̂(z) ≡ R(z)``, so its error
  estimate is zero on every linear autonomous problem whatever the step.
  Measured on ``y' = [[-1, 0], [1, -1000]] y`` from ``[1, 0.5]`` over
  ``[0, 0.1]``: 6 steps and an error of 2.2 at rtol 1e-8 (rodas4: 205 steps,
  4e-10). No other order-2 embedded formula of its three stages helps: the
  order-2 weights form a line whose direction ``m - m̂`` gives zero on
  linear problems. The same failure is reported for OrdinaryDiffEq.jl's
  ROS3P (SciML/OrdinaryDiffEq.jl issue 4291).

Each set of decimals was checked against two independent public
transcriptions (Hairer's rodas.f and KPP's Rosenbrock integrators for
RODAS4; Lang & Verwer's table as transcribed in several codes for ROS3P),
and the tests check the Rosenbrock order conditions, the node and
``γ_i`` row sums and the stability function from the data themselves.
"""

from neurode.framework.rosenbrock import RosenbrockTableau

_A5 = (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950)

RODAS4 = RosenbrockTableau(
    name="rodas4",
    gamma=0.25,
    alpha=(0.0, 0.386, 0.21, 0.63, 1.0, 1.0),
    gamma_sums=(0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0),
    a=(
        (),
        (1.544,),
        (0.9466785280815826, 0.2557011698983284),
        (3.314825187068521, 2.896124015972201, 0.9986419139977817),
        _A5,
        (*_A5, 1.0),
    ),
    coupling=(
        (),
        (-5.6688,),
        (-2.430093356833875, -0.2063599157091915),
        (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
        (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
        (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054),
    ),
    m=(*_A5, 1.0, 1.0),
    m_hat=(*_A5, 1.0, 0.0),
    order=4,
    embedded_order=3,
    dense=(
        (10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823, 1.025137723295662, 0.0),
        (-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386, -6.594389125716872, 0.0),
    ),
    dense_order=3,
    l_stable=True,
    citation="RODAS (Hairer & Wanner II, §VI.4; rodas.f)",
)

_A6 = (-7.502846399306121, 2.561846144803919, -11.627539656261098, -0.18268767659942256, 0.030198172008377946)

RODAS5P = RosenbrockTableau(
    name="rodas5p",
    gamma=0.21193756319429014,
    alpha=(0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664, 1.0, 1.0, 1.0),
    gamma_sums=(0.21193756319429014, -0.42387512638858027, -0.3384627126235924, 1.8046452872882734,
                2.325825639765069, 0.0, 0.0, 0.0),
    a=(
        (),
        (3.0,),
        (2.849394379747939, 0.45842242204463923),
        (-6.954028509809101, 2.489845061869568, -10.358996098473584),
        (2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641),
        _A6,
        (*_A6, 1.0),
        (*_A6, 1.0, 1.0),
    ),
    coupling=(
        (),
        (-14.155112264123755,),
        (-17.97296035885952, -2.859693295451294),
        (147.12150275711716, -1.41221402718213, 71.68940251302358),
        (165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306),
        (24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125, -0.6610691825249471),
        (30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783, -19.097331116725623,
         -28.087943162872662),
        (37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047, -40.06618937091002,
         -54.66780262877968, -9.48861652309627),
    ),
    m=(*_A6, 1.0, 1.0, 1.0),
    m_hat=(*_A6, 1.0, 1.0, 0.0),
    order=5,
    embedded_order=4,
    dense=(
        (25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204, 0.524948541321073,
         1.1241088310450404, 0.4272876194431874, -0.17202221070155493),
        (-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796, 20.176138334709044,
         15.98066361424651, -6.789040303419874, -6.710236069923372),
        (11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643, -52.072871366152654,
         -59.78993625266729, -0.15582684282751913, 4.883087185713722),
    ),
    dense_order=4,
    l_stable=True,
    citation="Rodas5P (Steinebach, BIT Numer. Math. 63 (2023) 27)",
)

ROS3P = RosenbrockTableau(
    name="ros3p",
    gamma=0.7886751345948129,
    alpha=(0.0, 1.0, 1.0),
    gamma_sums=(0.7886751345948129, -0.2113248654051871, -1.077350269189626),
    a=((), (1.267949192431123,), (1.267949192431123, 0.0)),
    coupling=((), (-1.607695154586736,), (-3.464101615137755, -1.732050807568877)),
    m=(2.0, 0.5773502691896258, 0.4226497308103742),
    m_hat=(2.113248654051871, 1.0, 0.4226497308103742),
    order=3,
    embedded_order=2,
    l_stable=False,
    adaptive=False,  # the embedded estimate vanishes on linear problems (module docstring)
    citation="ROS3P (Lang & Verwer, BIT 41 (2001) 731-738)",
    # a continuous extension of order 2 from the stages, derived here (Lang & Verwer publish none; an order-3
    # one does not exist for these three stages): the dense-output order conditions Σ b_j(θ) Φ_j(τ) = θ^|τ|/γ(τ)
    # of the standard form (Hairer & Wanner II, §IV.7, Table 7.1, with θh for h) for the trees of order <= 2,
    # b_j(θ) cubic with b(1) = b; the two free parameters minimise the order-3 residuals over θ in [0, 1]; in
    # RODAS's form y0 + θ(y1 - y0) + θ(1 - θ)(k1 + θ k2). No f(t1, y1) enters: the cubic Hermite's f(y1), which
    # multiplies the stiff components' distance from equilibrium by λ for a method that is only A-stable
    # (R(∞) = -0.73), left ros3p's output at t = 1e5 on Robertson 37 tolerances off (its step's end: 1.6) and the
    # worst of 40 outputs on van der Pol 2e5 off (issue 15); with this extension 1.0 and 50.
    dense=((0.9585481156726194, -0.1547005383792549, 0.7320508075688763),
           (-0.11324865405186829, -0.42264973081037077, 0.0)),
    dense_order=2,
)

METHODS = (RODAS4, RODAS5P, ROS3P)
