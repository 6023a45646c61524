"""The Rosenbrock methods: adaptive rodas4, and ros3p on fixed grids (issue 15, item 2)."""

import math

import numpy as np
import pytest
import torch

import neurode
from neurode.framework.errors import InvalidInputError, NonFiniteStateError
from neurode.framework.rosenbrock import Rosenbrock
from neurode.framework.vector_field import VectorField
from neurode.plugins.solvers.tableaus.rosenbrock import METHODS, RODAS4, RODAS5P, ROS3P
from neurode.testing.tableaus import rooted_trees, tree_density, tree_order

F64 = torch.float64
NAMES = [tableau.name for tableau in METHODS]
ADAPTIVE = [tableau.name for tableau in METHODS if tableau.adaptive]


# --------------------------------------------------------------------------- the coefficients


def _phi(tree, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Rosenbrock elementary weights (Hairer & Wanner II, §IV.7, Table 7.1): a vertex with one child couples
    through ``β = α + Γ`` (the ``J`` terms), one with several children through ``α`` (``f``'s higher derivatives)."""
    if not tree:
        return np.ones(alpha.shape[0])
    if len(tree) == 1:
        return beta @ _phi(tree[0], alpha, beta)
    out = np.ones(alpha.shape[0])
    for child in tree:
        out = out * (alpha @ _phi(child, alpha, beta))
    return out


def _order_residual(tableau, weights, order: int) -> float:
    alpha, gamma, _, _ = tableau.standard_form()
    alpha, beta = np.array(alpha), np.array(alpha) + np.array(gamma)
    w = np.array(weights)
    return max(abs(float(w @ _phi(tree, alpha, beta)) - 1.0 / tree_density(tree)) for tree in rooted_trees(order))


@pytest.mark.parametrize("tableau", METHODS, ids=NAMES)
def test_the_solution_and_the_embedded_weights_meet_the_rosenbrock_order_conditions(tableau):
    _, _, b, b_hat = tableau.standard_form()
    for q in range(1, tableau.order + 1):
        assert _order_residual(tableau, b, q) < 1e-12, q
    for q in range(1, tableau.embedded_order + 1):
        assert _order_residual(tableau, b_hat, q) < 1e-12, q
    # and no more: the embedded solution is of exactly its order (else the error estimate would vanish)
    assert _order_residual(tableau, b_hat, tableau.embedded_order + 1) > 1e-4


@pytest.mark.parametrize("tableau", METHODS, ids=NAMES)
def test_the_nodes_and_the_time_coefficients_are_the_row_sums_of_the_standard_form(tableau):
    alpha, gamma, _, _ = tableau.standard_form()
    np.testing.assert_allclose(np.array(alpha).sum(axis=1), tableau.alpha, atol=1e-12)
    np.testing.assert_allclose(np.array(gamma).sum(axis=1), tableau.gamma_sums, atol=1e-12)


def _stability(tableau, z: np.ndarray) -> np.ndarray:
    """``R(z) = 1 + z bᵀ (I - z B)⁻¹ 1`` with ``B = α + Γ`` (Hairer & Wanner II, §IV.7)."""
    alpha, gamma, b, _ = tableau.standard_form()
    big_b = np.array(alpha) + np.array(gamma)
    s = len(b)
    return np.array([1 + zi * np.array(b) @ np.linalg.solve(np.eye(s) - zi * big_b, np.ones(s)) for zi in z])


@pytest.mark.parametrize("tableau", METHODS, ids=NAMES)
def test_the_stability_function_is_a_stable_on_the_imaginary_axis_and_l_stable_where_published(tableau):
    y = np.concatenate([np.linspace(0, 10, 401), np.logspace(1, 8, 200)])
    assert np.abs(_stability(tableau, 1j * y)).max() <= 1 + 1e-12  # with the only pole at 1/γ > 0: A-stable
    at_infinity = abs(_stability(tableau, np.array([-1e12]))[0])
    if tableau.l_stable:
        assert at_infinity < 1e-9
    else:
        assert tableau is ROS3P and at_infinity == pytest.approx(0.732, abs=1e-3)  # Lang & Verwer: R(∞) ≈ -0.73


@pytest.mark.parametrize("tableau", METHODS, ids=NAMES)
def test_dense_output_is_of_its_order(tableau):
    # one step from the exact state: the interpolant's local error at θ = 0.4 falls like h^(q+1) for order q
    # (rodas4: Hairer's third-order one; ros3p: the order-2 extension from its stages)
    def f(t, y):
        return -y * (1 + y * y) + torch.sin(3 * t)

    solver = Rosenbrock(tableau)
    y0 = torch.tensor([0.7], dtype=F64)
    errors = []
    for h in (0.025, 0.0125, 0.00625):
        exact = neurode.solve(f, y0, torch.tensor([0.0, 0.4 * h], dtype=F64), solver="dopri8", rtol=1e-14,
                              atol=1e-15).ys[-1]
        step = solver.step(VectorField(f, y0), 0.0, h, y0, ())
        errors.append(float((solver.interpolate(step, 0.4) - exact).abs()))
    slopes = [math.log2(e0 / e1) for e0, e1 in zip(errors, errors[1:])]
    assert min(slopes) > tableau.dense_order + 0.5, slopes


def test_ros3p_dense_weights_meet_the_order_conditions_at_every_theta():
    # in the standard form the weights are b(θ) = Γᵀ w(θ), w(θ) = θ m + θ(1 - θ) d2 + θ²(1 - θ) d3 (RODAS's form):
    # Σ b_j(θ) Φ_j(τ) = θ^|τ|/γ(τ) for |τ| <= 2, and one order more fails
    _, gamma, _, _ = ROS3P.standard_form()
    gamma = np.array(gamma)
    m, d2, d3 = (np.array(x) for x in (ROS3P.m, *ROS3P.dense))
    alpha = np.array(ROS3P.standard_form()[0])
    beta = alpha + gamma
    for theta in np.linspace(0.1, 1.0, 7):
        b = gamma.T @ (theta * m + theta * (1 - theta) * d2 + theta**2 * (1 - theta) * d3)
        for tree in (*rooted_trees(1), *rooted_trees(2)):
            assert abs(b @ _phi(tree, alpha, beta) - theta ** tree_order(tree) / tree_density(tree)) < 1e-13
    b = gamma.T @ (0.5 * m + 0.25 * d2 + 0.125 * d3)
    assert max(abs(b @ _phi(tree, alpha, beta) - 0.125 / tree_density(tree)) for tree in rooted_trees(3)) > 1e-3


def test_ros3p_output_inside_a_step_is_no_worse_than_the_steps_ends():
    # ros3p is only A-stable (R(-10) = -0.49): a stiff transient decays slowly through its steps, and the cubic
    # Hermite's f(t1, y1) multiplied that error by h lambda inside a step (adaptively on Robertson: 37 tolerances
    # off at t = 1e5 where the step's end was 1.6). The continuous extension from its stages does not
    a = torch.tensor([[-1.0, 0.0], [1.0, -1000.0]], dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    times = torch.tensor([0.0, 0.1, 0.105, 0.11], dtype=F64)
    exact = torch.stack([torch.linalg.matrix_exp(t * a) @ y0 for t in times])
    errors = (neurode.solve(lambda t, y: a @ y, y0, times, solver="ros3p", step_size=0.01).ys - exact).abs()
    ends, inside = errors[[1, 3]].max(), errors[2].max()
    assert inside <= ends and ends < 1e-3


# --------------------------------------------------------------------------- convergence


def _order(name, f, y0, exact, t_end, steps=(8, 16, 32)):
    errors = []
    for n in steps:
        ys = neurode.solve(f, y0, torch.tensor([0.0, t_end], dtype=F64), solver=name, step_size=t_end / n).ys
        errors.append(float((ys[-1] - exact).abs().max()))
    return math.log2(errors[-2] / errors[-1])


@pytest.mark.parametrize("tableau", METHODS, ids=NAMES)
def test_measured_order_on_a_non_autonomous_linear_problem(tableau):
    # y' = A y + (sin t, cos t): the f_t term matters; exact solution by a tight dopri8 solve
    a = torch.tensor([[-2.0, 1.0], [1.0, -3.0]], dtype=F64)

    def f(t, y):
        return y @ a.T + torch.stack([torch.sin(t), torch.cos(t)])

    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    exact = neurode.solve(f, y0, torch.tensor([0.0, 2.0], dtype=F64), solver="dopri8", rtol=1e-13, atol=1e-14).ys[-1]
    assert abs(_order(tableau.name, f, y0, exact, 2.0) - tableau.order) < 0.3


@pytest.mark.parametrize("tableau", METHODS, ids=NAMES)
def test_measured_order_on_a_nonlinear_problem(tableau):
    def lotka(t, y):
        x, z = y.unbind(-1)
        return torch.stack([x * (1.5 - z), z * (x - 3.0)], -1)

    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    exact = neurode.solve(lotka, y0, torch.tensor([0.0, 1.0], dtype=F64), solver="dopri8", rtol=1e-13,
                          atol=1e-14).ys[-1]
    # at least the order (rodas4 is a little better than 4 in this range of steps on this problem)
    assert tableau.order - 0.3 < _order(tableau.name, lotka, y0, exact, 1.0, steps=(8, 16, 32)) < tableau.order + 1.2


# --------------------------------------------------------------------------- stiff problems


def robertson(t, y, k=None):
    k1, k2, k3 = (0.04, 1e4, 3e7) if k is None else k.unbind(-1)
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-k1 * y1 + k2 * y2 * y3, k1 * y1 - k2 * y2 * y3 - k3 * y2 * y2, k3 * y2 * y2], -1)


def test_robertson_to_1e5_matches_scipy_radau_at_tight_tolerance():
    scipy_integrate = pytest.importorskip("scipy.integrate")

    def rhs(t, y):
        return robertson(None, torch.from_numpy(y)).numpy()

    ref = scipy_integrate.solve_ivp(rhs, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau", rtol=1e-10, atol=1e-14).y[:, -1]
    for name in ADAPTIVE:
        sol = neurode.solve(robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 1e5], dtype=F64),
                            solver=name, rtol=1e-6, atol=1e-10, autonomous=True)
        # within the tolerance asked for: the global error, in units of the local tolerance rtol |y| + atol, is
        # a modest multiple (errors of ~700 steps accumulate)
        scaled = np.abs(sol.ys[-1].numpy() - ref) / (1e-6 * np.abs(ref) + 1e-10)
        assert scaled.max() < 50, (name, scaled)
        assert sol.stats.n_jac == sol.stats.n_steps and sol.stats.n_lu == sol.stats.n_steps


def test_van_der_pol_mu_1000_takes_over_100_times_fewer_steps_than_dopri5():
    def vdp(t, y):
        x, v = y.unbind(-1)
        return torch.stack([v, 1000.0 * (1 - x * x) * v - x], -1)

    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    rodas = neurode.solve(vdp, y0, torch.tensor([0.0, 3000.0], dtype=F64), solver="rodas4", rtol=1e-6, atol=1e-6)
    assert rodas.ys[-1][0] == pytest.approx(-1.5106, abs=2e-3)  # scipy Radau at rtol 1e-10: -1.51060...
    # dopri5 cannot finish (millions of steps at its stability limit): its step count on the slow, smooth first
    # 1% of the span, scaled to the span, is a lower bound of what it needs (the fast transitions need more)
    dopri = neurode.solve(vdp, y0, torch.tensor([0.0, 3.0], dtype=F64), solver="dopri5", rtol=1e-6, atol=1e-6,
                          nstiff=0)
    assert dopri.stats.n_steps * 1000 >= 100 * rodas.stats.n_steps


def test_per_sample_robertson_with_spread_rate_constants_matches_solving_each_alone():
    scale = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    k = torch.tensor([0.04, 1e4, 3e7], dtype=F64) * scale[:, None]
    y0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64).expand(3, 3).clone()
    t = torch.tensor([0.0, 1.0, 40.0], dtype=F64)
    batch = neurode.solve(robertson, y0, t, solver="rodas4", rtol=1e-7, atol=1e-11, per_sample=True, args=k)
    for b in range(3):
        alone = neurode.solve(robertson, y0[b], t, solver="rodas4", rtol=1e-7, atol=1e-11, args=k[b])
        # the same problem, controlled per sample: the same solution to within the tolerance
        torch.testing.assert_close(batch.ys[:, b], alone.ys, rtol=1e-6, atol=1e-11)
    assert batch.stats.n_jac > 0 and batch.stats.nfe_rows > 0


def test_a_user_jacobian_gives_the_autograd_solution():
    def jac(t, y):
        y1, y2, y3 = y.unbind(-1)
        zero = torch.zeros_like(y1)
        rows = [torch.stack([-0.04 + zero, 1e4 * y3, 1e4 * y2], -1),
                torch.stack([0.04 + zero, -1e4 * y3 - 6e7 * y2, -1e4 * y2], -1),
                torch.stack([zero, 6e7 * y2, zero], -1)]
        return torch.stack(rows, -2)

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 1.0, 100.0], dtype=F64)
    auto = neurode.solve(robertson, y0, t, solver="rodas4", rtol=1e-6, atol=1e-10)
    user = neurode.solve(robertson, y0, t, solver="rodas4", rtol=1e-6, atol=1e-10, jac=jac)
    torch.testing.assert_close(user.ys, auto.ys, rtol=1e-10, atol=1e-14)
    assert user.stats.n_jac == auto.stats.n_jac
    assert user.stats.nfe < auto.stats.nfe  # no forward pass for the Jacobian
    # per sample: blocks (B, d, d)
    batch = neurode.solve(robertson, y0.expand(4, 3), t, solver="rodas4", rtol=1e-6, atol=1e-10, jac=jac,
                          per_sample=True)
    torch.testing.assert_close(batch.ys[:, 2], auto.ys, rtol=1e-5, atol=1e-10)
    with pytest.raises(InvalidInputError, match="jac"):
        neurode.solve(robertson, y0, t, solver="rodas4", jac=lambda t, y: torch.eye(2, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ADAPTIVE)
def test_float32_and_float64_on_a_stiff_problem(name, dtype):
    def f(t, y):
        return -1000.0 * (y - torch.cos(t))

    ys = neurode.solve(f, torch.zeros(2, dtype=dtype), torch.linspace(0, 2, 5, dtype=dtype), solver=name,
                       rtol=1e-5, atol=1e-6).ys
    assert ys.dtype == dtype
    exact = torch.cos(torch.linspace(0, 2, 5, dtype=F64))[1:, None] + torch.sin(torch.linspace(0, 2, 5, dtype=F64))[
        1:, None] / 1000  # the slow manifold to first order in 1/1000
    assert (ys[1:].double() - exact).abs().max() < 1e-4


# --------------------------------------------------------------------------- failures


def test_a_singular_iteration_matrix_rejects_the_step_instead_of_crashing():
    # y' = y: W = 1 - hγ is singular at h = 1/γ
    solver = Rosenbrock(RODAS4)
    y0 = torch.ones(1, dtype=F64)
    step = solver.step(VectorField(lambda t, y: y, y0), 0.0, 1 / RODAS4.gamma, y0, ())
    assert torch.isinf(step.error).all() and torch.equal(step.y1, y0)
    # per sample: only the singular sample is rejected
    ys = torch.ones(2, 1, dtype=F64)
    h = torch.tensor([1 / RODAS4.gamma, 0.1], dtype=F64)
    step = solver.step(VectorField(lambda t, y: y, ys), torch.zeros(2, dtype=F64), h, ys, ())
    assert torch.isinf(step.error[0]).all() and torch.isfinite(step.error[1]).all()
    assert float(step.y1[1]) == pytest.approx(math.exp(0.1), rel=1e-6)
    # and a solve with a first step onto the singularity recovers
    sol = neurode.solve(lambda t, y: y, y0, torch.tensor([0.0, 5.0], dtype=F64), solver="rodas4",
                        first_step=1 / RODAS4.gamma, rtol=1e-8, atol=1e-10)
    assert float(sol.ys[-1]) == pytest.approx(math.exp(5.0), rel=1e-6) and sol.stats.n_rejected >= 1


def test_an_unrecoverable_sample_fails_with_a_typed_error_naming_it():
    def f(t, y, breakdown):  # f turns NaN past each sample's breakdown time
        return torch.where(t[:, None] > breakdown[:, None], torch.nan, -y)

    y0 = torch.ones(2, 1, dtype=F64)
    with pytest.raises(NonFiniteStateError, match="sample 0") as caught:
        neurode.solve(f, y0, torch.tensor([0.0, 3.0], dtype=F64), solver="rodas4", per_sample=True,
                      args=torch.tensor([0.5, 5.0], dtype=F64))
    assert caught.value.t == pytest.approx(0.5, abs=1e-3)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ADAPTIVE)
def test_direct_gradients_agree_with_finite_differences_on_a_stiff_linear_problem(name):
    # y' = A(θ) y + θ_2 sin t, stiffness ratio 1000; θ enters the Jacobian, so dJ/dθ must be in the gradient
    base = torch.tensor([[-1000.0, 1.0], [0.5, -1.0]], dtype=F64)

    def loss(theta, y0):
        a = torch.stack([base[0] * theta[0], base[1]])

        def f(t, y):
            return y @ a.T + theta[1] * torch.sin(t)

        # fixed steps: the derivative of the computed map is what is checked (adaptive step sizes move with θ)
        ys = neurode.solve(f, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), solver=name, step_size=0.05).ys
        return ys[1:].sum(dim=-1)

    theta = torch.tensor([1.3, 0.7], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (theta, y0), eps=1e-6, atol=1e-6, rtol=1e-4)


class _Square(torch.autograd.Function):
    """y² with a reverse-mode derivative only (no jvp): forward-mode AD cannot differentiate it."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y * y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return 2 * y * grad


def test_direct_gradients_without_forward_mode_fall_back_to_double_backward():
    # after the first step y0 carries the solve's history, and J's correction and f_t are taken by forward mode;
    # an f with an operation forward mode cannot differentiate gets the double-backward products, same gradient
    theta = torch.tensor([0.4, 50.0], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)

    def gradient(square):
        def f(t, y):
            return torch.stack([-theta[1] * y[0] + theta[0] * square(y[1]), -y[1] + torch.cos(t) * y[0]])

        ys = neurode.solve(f, y0, torch.tensor([0.0, 0.5], dtype=F64), solver="rodas4", step_size=0.05).ys
        return torch.autograd.grad(ys[-1].sum(), (theta, y0))

    with pytest.raises(RuntimeError):  # the premise: forward mode cannot go through _Square
        import torch.autograd.forward_ad as fwAD

        with fwAD.dual_level():
            _Square.apply(fwAD.make_dual(torch.ones(1, dtype=F64), torch.ones(1, dtype=F64)))
    for plain, fallback in zip(gradient(lambda v: v * v), gradient(_Square.apply)):
        torch.testing.assert_close(fallback, plain, rtol=1e-12, atol=1e-14)


def test_per_sample_rows_count_every_evaluation_of_a_step():
    # identical samples finish together: rows evaluated = evaluations x batch (the Jacobian's forward pass included)
    y0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64).expand(4, 3).clone()
    sol = neurode.solve(robertson, y0, torch.tensor([0.0, 10.0], dtype=F64), solver="rodas4", rtol=1e-5,
                        atol=1e-9, per_sample=True)
    assert sol.stats.nfe_rows == 4 * sol.stats.nfe


def test_ros3p_is_fixed_step_because_its_embedded_estimate_vanishes_on_linear_problems():
    # R(z) - R_hat(z) from the data: the published pair shares its stability function, so the estimate is zero on
    # y' = z y whatever the step (SciML/OrdinaryDiffEq.jl issue 4291); as an adaptive method it took 6 steps and
    # returned an error of 2.2 at rtol 1e-8 on the problem below
    solver = Rosenbrock(ROS3P)
    assert not solver.adaptive and not solver.supports_per_sample and Rosenbrock(RODAS4).adaptive
    for z in (-0.1, -10.0, -1e4):
        step = solver.step(VectorField(lambda t, y: z * y, torch.ones(1, dtype=F64), None), 0.0, 1.0,
                           torch.ones(1, dtype=F64), ())
        assert float(step.error.abs().max()) < 1e-12
    a = torch.tensor([[-1.0, 0.0], [1.0, -1000.0]], dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([0.0, 0.05, 0.1], dtype=F64)
    exact = torch.stack([torch.linalg.matrix_exp(s * a) @ y0 for s in t])
    errors = [float((neurode.solve(lambda s, y: a @ y, y0, t, solver="ros3p", step_size=h).ys - exact).abs().max())
              for h in (1e-3, 5e-4)]
    assert errors[0] < 1e-4 and 6 < errors[0] / errors[1] < 10  # third order on a fixed grid


# --------------------------------------------------------------------------- banded Jacobians (lband, uband)


def reaction_diffusion(t, y, rate=None):
    """``y' = D Δy + y(1 - y) - y³`` on a 1-d grid (Dirichlet ends): tridiagonal Jacobian, stiff (D = 400)."""
    padded = torch.nn.functional.pad(y, (1, 1))
    laplacian = padded[..., 2:] - 2 * y + padded[..., :-2]
    rate = 1.0 if rate is None else rate[..., None]
    return 400.0 * laplacian + rate * y * (1 - y) - y**3


@pytest.mark.parametrize("name", ADAPTIVE)
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_a_banded_jacobian_gives_the_dense_solution(name, per_sample):
    y0 = torch.sin(torch.linspace(0.3, 2.8, 16, dtype=F64)).expand(3, 16) * torch.tensor([[1.0], [0.5], [2.0]],
                                                                                            dtype=F64)
    rate = torch.tensor([1.0, 10.0, 0.1], dtype=F64)
    t = torch.tensor([0.0, 0.01, 0.2], dtype=F64)
    kwargs = dict(solver=name, rtol=1e-7, atol=1e-10, per_sample=per_sample, args=rate if per_sample else None)
    field = reaction_diffusion if per_sample else (lambda t, y: reaction_diffusion(t, y, rate))
    dense = neurode.solve(field, y0, t, **kwargs)
    band = neurode.solve(field, y0, t, lband=1, uband=1, **kwargs)
    # the band is the whole Jacobian: the same steps and the same solution to round-off
    torch.testing.assert_close(band.ys, dense.ys, rtol=1e-12, atol=1e-13)
    assert (band.stats.n_steps, band.stats.nfe, band.stats.n_lu) == (dense.stats.n_steps, dense.stats.nfe,
                                                                      dense.stats.n_lu)


@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_banded_gradients_pass_gradcheck(adjoint, name="rodas5p"):  # (the band's code is the same for rodas4)
    # on a fixed grid (a smooth discrete map): the band's factors carry the gradient like the dense LU's. The
    # matrix's three diagonals are the inputs (perturbing an entry outside the band would make J not banded)
    inputs = tuple(x.requires_grad_(True) for x in (torch.linspace(0.1, 1.0, 5, dtype=F64),
                                                     torch.full((4,), 140.0, dtype=F64),
                                                     torch.full((5,), -400.0, dtype=F64),
                                                     torch.full((4,), 260.0, dtype=F64)))

    def outputs(y0, lower, diagonal, upper):
        a_ = torch.diag(diagonal) + torch.diag(upper, 1) + torch.diag(lower, -1)
        return neurode.solve(lambda t, y: a_ @ y + 0.1 * y**2, y0, torch.tensor([0.0, 0.02, 0.04], dtype=F64),
                             solver=name, step_size=0.01, adjoint=adjoint, lband=1, uband=1).ys

    assert torch.autograd.gradcheck(outputs, inputs)


def test_banded_backsolve_agrees_with_checkpoint(name="rodas5p"):
    # the adjoint's Jacobian -Jᵀ is banded with the bandwidths swapped (lband 2, uband 1 here)
    d = 10
    a = (torch.diag(torch.full((d,), -2.0, dtype=F64)) + torch.diag(torch.full((d - 1,), 1.3, dtype=F64), 1)
         + torch.diag(torch.full((d - 1,), 0.7, dtype=F64), -1) + torch.diag(torch.full((d - 2,), 0.2, dtype=F64), -2))
    a = (200.0 * a).requires_grad_(True)
    y0 = torch.linspace(0.1, 1.0, d, dtype=F64).requires_grad_(True)
    weights = torch.randn(3, d, dtype=F64, generator=torch.Generator().manual_seed(0))
    grads = {}
    for adjoint in ("checkpoint", "backsolve"):
        ys = neurode.solve(lambda t, y: a @ y + 0.1 * y**2, y0, torch.tensor([0.0, 0.05, 0.1], dtype=F64),
                           solver=name, rtol=1e-9, atol=1e-11, adjoint=adjoint, lband=2, uband=1).ys
        grads[adjoint] = torch.autograd.grad((ys * weights).sum(), (y0, a))
    for got, want in zip(grads["backsolve"], grads["checkpoint"]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8 * float(want.abs().max()))


def test_a_field_without_a_graph_gets_its_band_by_differences():
    def numpy_field(t, y):  # no autograd graph: the band by grouped forward differences instead
        return torch.from_numpy(reaction_diffusion(t, torch.from_numpy(y.detach().numpy())).numpy())

    y0 = torch.sin(torch.linspace(0.3, 2.8, 12, dtype=F64))
    t = torch.tensor([0.0, 0.1], dtype=F64)
    exact = neurode.solve(reaction_diffusion, y0, t, solver="rodas5p", rtol=1e-8, atol=1e-11).ys
    differences = neurode.solve(numpy_field, y0, t, solver="rodas5p", rtol=1e-8, atol=1e-11, lband=1, uband=1).ys
    torch.testing.assert_close(differences, exact, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("options, match", [
    ({"lband": 0, "uband": 1}, r"lband=0, uband=1, but the Jacobian has entries outside that band \(column \d+: a "
                               r"weighted sum of its entries differs.*true bandwidths"),
    ({"lband": 1, "uband": 1, "jac": lambda t, y: torch.eye(16, dtype=F64)}, "jac and lband=1, uband=1 both"),
    ({"lband": -1}, "lband .* must be an integer >= 0, got -1"),
    ({"uband": 16}, "uband=16 must be less than the 16 components"),
])
def test_bad_bandwidths_are_refused_saying_what_is_wrong(options, match):
    y0 = torch.sin(torch.linspace(0.3, 2.8, 16, dtype=F64))
    with pytest.raises(InvalidInputError, match=match):
        neurode.solve(reaction_diffusion, y0, torch.tensor([0.0, 0.1], dtype=F64), solver="rodas5p", **options)


def test_a_band_factorisation_that_solves_inaccurately_rejects_the_step():
    # cyclic reduction pivots within blocks only: a tiny odd diagonal entry of a well-conditioned W (cond 24)
    # loses 4e-4 of accuracy without a singular block; the probe solve catches it (the step is then rejected
    # and retried smaller, as for a singular W), and passes a diagonally dominant W
    from neurode.framework.banded import BandFactors

    d = 8
    w = torch.eye(d, dtype=F64) + torch.diag(torch.ones(d - 1, dtype=F64), 1) + torch.diag(torch.ones(d - 1,
                                                                                                    dtype=F64), -1)
    w[1, 1] = 1e-13
    solver = Rosenbrock(RODAS5P, lband=1, uband=1)
    for matrix, accurate in ((w, False), (torch.eye(d, dtype=F64) + 0.1 * (w - torch.diag(w.diagonal())), True)):
        jac = torch.eye(d, dtype=F64) - matrix  # W = I - c J with c = 1
        band = torch.stack([torch.cat([jac.diagonal(-1).new_zeros(1), jac.diagonal(-1)]), jac.diagonal(),
                            torch.cat([jac.diagonal(1), jac.diagonal(1).new_zeros(1)])], -1)[None]
        c = torch.ones(1, dtype=F64)
        factors = BandFactors.factor(band, 1, 1, c)
        assert bool(factors.usable) and bool(solver._band_solves_accurately(factors, band, c)) is accurate


def test_a_banded_jacobian_in_float32_gives_the_dense_solution():
    # the out-of-band check's threshold scales with the dtype's round-off (a fixed 1e-10 refused float32 bands)
    y0 = torch.sin(torch.linspace(0.3, 2.8, 16, dtype=torch.float32))
    t = torch.tensor([0.0, 0.2], dtype=torch.float32)
    dense = neurode.solve(reaction_diffusion, y0, t, solver="rodas5p", rtol=1e-4, atol=1e-6)
    band = neurode.solve(reaction_diffusion, y0, t, solver="rodas5p", rtol=1e-4, atol=1e-6, lband=1, uband=1)
    assert band.ys.dtype == torch.float32 and band.stats.n_steps == dense.stats.n_steps
    torch.testing.assert_close(band.ys, dense.ys, rtol=1e-5, atol=1e-6)
