"""Tableaus of the Rosenbrock methods, in Hairer's implementation form (``a_ij``, ``c_ij``, ``m_i``).

* ``rodas4``: Hairer & Wanner, "Solving Ordinary Differential Equations II"
  (2nd ed., 1996), §VI.4 (the RODAS method, coefficients of their code
  rodas.f, subroutine ROCOE with METH=1). Order 4, embedded order 3, stiffly
  accurate (the last two stages are the embedded and the main solution),
  L-stable; continuous output of order 3 (rodas.f's ``D2j``, ``D3j``).
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

METHODS = (RODAS4, ROS3P)
