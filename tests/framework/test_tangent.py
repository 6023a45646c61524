"""Tangent error control: gradients through adaptive solves match closed forms where a component is exactly zero.

The problem of issue 10: a state component that starts at exactly zero in a
linear oscillator stays zero, every error estimate is zero, the steps grow by
``ifactor`` at every step and backpropagation returns the derivative of a
wildly unstable discrete map (1e24 instead of 1e-3). Here
``y' = A(ω) y`` with ``A = diag(-1/2, [[0, ω], [-ω, 0]])`` and
``y0 = (1, 0, 0)``: the exact gradients of ``L = Σ_i <w_i, y(t_i)>`` are
``∂L/∂y0 = Σ_i exp(A t_i)ᵀ w_i`` and ``∂L/∂ω`` through ``exp(A(ω) t_i)``
(``torch.linalg.matrix_exp``, differentiated to round-off).
"""

import math

import pytest
import torch

import neurode
from neurode.framework.errors import InvalidInputError
from neurode.framework.registry import get_registry
from neurode.framework.tangent import PlainStepper, TangentStepper, _rms, _Variational, make_stepper

F64 = torch.float64
OMEGA = 2 * math.pi
ADAPTIVE_TABLEAUS = ["adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8"]


def _matrix(omega: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros((), dtype=F64)
    return torch.stack([
        torch.stack([zero - 0.5, zero, zero]),
        torch.stack([zero, zero, omega]),
        torch.stack([zero, -omega, zero]),
    ])


class Oscillator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.omega = torch.nn.Parameter(torch.tensor(OMEGA, dtype=F64))

    def forward(self, t, y):
        return y @ _matrix(self.omega).T


def _times(per_sample: bool) -> torch.Tensor:
    t = torch.linspace(0.0, 3.0, 13, dtype=F64)
    if not per_sample:
        return t
    return torch.stack([t, torch.linspace(0.0, 2.5, 13, dtype=F64)])


Y0 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=F64)


def _weights(shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64)


def _exact(t: torch.Tensor, weights: torch.Tensor):
    """Closed-form ``(∂L/∂y0, ∂L/∂ω)``; ``t`` is (T,) or per sample (B, T), ``weights`` (T, B, 3)."""
    omega = torch.tensor(OMEGA, dtype=F64, requires_grad=True)
    y0 = Y0.clone().requires_grad_(True)
    rows = t if t.ndim == 2 else t.expand(Y0.shape[0], -1)
    A = _matrix(omega)
    loss = sum((torch.linalg.matrix_exp(A * ti) @ y0[b]) @ weights[i, b]
               for b in range(Y0.shape[0]) for i, ti in enumerate(rows[b]))
    return torch.autograd.grad(loss, (y0, omega))


def _solve_grad(solver, adjoint, per_sample, rtol=1e-5, atol=1e-8, **kwargs):
    func = Oscillator()
    y0 = Y0.clone().requires_grad_(True)
    t = _times(per_sample)
    sol = neurode.solve(func, y0, t, solver=solver, adjoint=adjoint, rtol=rtol, atol=atol, **kwargs)
    weights = _weights(sol.ys.shape)
    grads = torch.autograd.grad((sol.ys * weights).sum(), (y0, func.omega))
    (exact_y0, exact_omega) = _exact(t, weights)
    assert exact_omega == 0  # the oscillator stays at rest: ω moves nothing (and must not move the gradient)
    return [float((grads[0] - exact_y0).abs().max() / exact_y0.abs().max()), float(grads[1].abs())], sol


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint", "backsolve"])
@pytest.mark.parametrize("solver", ADAPTIVE_TABLEAUS)
def test_gradients_with_zero_components_match_the_closed_form(solver, adjoint, per_sample):
    errors, _ = _solve_grad(solver, adjoint, per_sample)
    # at rtol 1e-5 over three periods: 1e-5 and below for the higher-order pairs, a few 1e-4 for adaptive_heun and
    # bosh3; fehlberg2 (order 2 propagated on a first-order estimate) drifts to ~1e-2 for every method alike
    bound = 3e-2 if solver == "fehlberg2" else 3e-3
    assert errors[0] < bound and errors[1] < 1e-12, errors


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_without_tangent_control_the_steps_run_away_and_the_gradient_is_wrong(per_sample):
    # the failure tangent control prevents (and torchdiffeq shares): every error estimate is zero, the step grows
    # tenfold per step, and the derivative of the discrete map is off by orders of magnitude
    errors, sol = _solve_grad("dopri5", "direct", per_sample, tangent_control=False)
    assert errors[0] > 1.0
    fixed, controlled = sol.stats.n_steps, _solve_grad("dopri5", "direct", per_sample)[1].stats.n_steps
    assert controlled > 5 * fixed


def test_the_issue_reproduction_gives_the_closed_form_gradient():
    # issue 10's level-plus-oscillator fit: float64 dopri5 at rtol 1e-4, the oscillator started at zero
    ty = torch.linspace(0, 44, 2284, dtype=F64)
    target = torch.sin(ty)

    class Level(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.r = torch.nn.Parameter(torch.tensor(0.0, dtype=F64))

        def forward(self, t, y):
            return torch.stack([self.r.expand_as(y[..., 0]), OMEGA * y[..., 2], -OMEGA * y[..., 1]], -1)

    residual = 2 * (-1.5 - target)  # dL/dy(t) for y = (-1.5, 0, 0), per output
    exact = torch.stack([residual.mean(), (residual * torch.cos(OMEGA * ty)).mean(),
                         (residual * torch.sin(OMEGA * ty)).mean()])
    for adjoint in ("direct", "checkpoint", "backsolve"):
        y0 = torch.tensor([[-1.5, 0.0, 0.0]], dtype=F64, requires_grad=True)
        sol = neurode.solve(Level(), y0, ty, adjoint=adjoint, rtol=1e-4, atol=1e-6)
        ((sol.ys[:, 0, 0] + sol.ys[:, 0, 1] - target) ** 2).mean().backward()
        # the gradient entries are averages of oscillating terms of size ~3: absolute error ~ rtol * 3
        assert torch.allclose(y0.grad[0], exact, atol=2e-3), (adjoint, y0.grad, exact)


def test_tangent_control_is_on_only_where_gradients_are_recorded():
    func = Oscillator()
    t = _times(False)
    with torch.no_grad():
        plain = neurode.solve(func, Y0, t, rtol=1e-5, atol=1e-8)
    recorded = neurode.solve(func, Y0, t, rtol=1e-5, atol=1e-8)  # the parameter requires grad
    assert recorded.stats.n_steps > 5 * plain.stats.n_steps
    # a closure that reads no tensor requiring grad: decided at the first evaluation, no tangent
    free = neurode.solve(lambda t_, y: y @ _matrix(torch.tensor(OMEGA, dtype=F64)).T, Y0, t, rtol=1e-5, atol=1e-8)
    assert free.stats.n_steps == plain.stats.n_steps and free.stats.nfe == plain.stats.nfe
    # a closure over a parameter: the first evaluation shows it, the tangent is controlled
    captured = neurode.solve(lambda t_, y: func(t_, y), Y0, t, rtol=1e-5, atol=1e-8)
    assert captured.stats.n_steps == recorded.stats.n_steps
    # odeint keeps torchdiffeq's steps (parity); solve's option turns the control off or on
    assert neurode.solve(func, Y0, t, rtol=1e-5, atol=1e-8, tangent_control=False).stats.n_steps == \
        plain.stats.n_steps
    with torch.no_grad():
        forced = neurode.solve(func, Y0, t, rtol=1e-5, atol=1e-8, tangent_control=True)
    assert forced.stats.n_steps == recorded.stats.n_steps


def test_odeint_keeps_torchdiffeqs_step_sizes():
    func = Oscillator()
    y0 = Y0.clone().requires_grad_(True)
    ys = neurode.odeint(func, y0, _times(False), rtol=1e-5, atol=1e-8)
    with torch.no_grad():
        plain = neurode.odeint(func, Y0, _times(False), rtol=1e-5, atol=1e-8)
    assert torch.equal(ys.detach(), plain)


def test_a_sample_takes_the_same_steps_in_any_batch_with_tangent_control():
    # the tangent direction is the same for every sample, so a sample's steps do not depend on its neighbours
    func = Oscillator()
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.2, 0.0], [2.0, 0.0, 1.0]], dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    together = neurode.solve(func, y0, t, per_sample=True, rtol=1e-6, atol=1e-9)
    for b in range(3):
        alone = neurode.solve(func, y0[b:b + 1], t, per_sample=True, rtol=1e-6, atol=1e-9)
        assert int(alone.sample_stats["n_accepted"][0]) == int(together.sample_stats["n_accepted"][b])
        assert torch.equal(alone.ys[:, 0], together.ys[:, b])


def test_compile_and_tangent_control_cannot_be_combined():
    with pytest.raises(InvalidInputError, match="tangent_control"):
        neurode.solve(Oscillator(), Y0, _times(False), compile=True, tangent_control=True)


def test_tangent_control_must_be_a_boolean_or_none():
    with pytest.raises(InvalidInputError, match="tangent_control"):
        neurode.solve(Oscillator(), Y0, _times(False), tangent_control="yes")


def test_make_stepper_chooses_by_the_solver():
    registry = get_registry()
    dopri5 = registry.get("solver", "dopri5").obj()
    rk4 = registry.get("solver", "rk4").obj()
    assert isinstance(make_stepper(dopri5, Y0, tangent=True, per_sample=False), TangentStepper)
    assert isinstance(make_stepper(dopri5, Y0, tangent=False, per_sample=False), PlainStepper)
    assert isinstance(make_stepper(rk4, Y0, tangent=True, per_sample=False), PlainStepper)  # fixed steps
    with pytest.raises(ValueError, match="tangent"):
        make_stepper(dopri5, Y0, tangent="sometimes", per_sample=False)


def test_a_non_finite_tangent_error_does_not_reject_a_step():
    # an infinite derivative of f (sqrt at 0, an overflow in the difference) says nothing about the step
    dopri5 = get_registry().get("solver", "dopri5").obj()
    for per_sample in (False, True):
        stepper = TangentStepper(dopri5, Y0, per_sample=per_sample)
        stepper._pending = (stepper.v, ())
        error = torch.full_like(Y0, math.nan)
        ratio = stepper.ratio(error, 1e-6, 1e-9)
        assert (ratio == 0.0) if not per_sample else bool((ratio == 0.0).all())


def test_a_solver_whose_evaluations_depend_on_the_values_is_refused_clearly():
    # the tangent step replays the stage points of the step of y; a method that evaluates f more often on the
    # second call (as a Newton iteration might) cannot be replayed, and says what to do
    from neurode.framework.explicit_rk import ExplicitRungeKutta

    dopri5 = get_registry().get("solver", "dopri5").obj()

    class Irregular(ExplicitRungeKutta):
        calls = 0

        def step(self, func, t0, h, y0, state):
            Irregular.calls += 1
            if Irregular.calls % 2 == 0:
                func(t0, y0)  # one evaluation more on the tangent pass
            return super().step(func, t0, h, y0, state)

    with pytest.raises(neurode.SolverError, match="supports_tangent"):
        neurode.solve(Oscillator(), Y0, _times(False), solver=Irregular(dopri5.tableau))


@pytest.mark.parametrize("tangent_control", [False, True])
@pytest.mark.parametrize("solver", ["dopri5", "bosh3", "adaptive_heun"])
def test_rows_evaluated_count_the_tangents_evaluations(solver, tangent_control):
    # with one sample every evaluation is one row: nfe_rows must equal nfe, tangent differences included
    sol = neurode.solve(Oscillator(), Y0[:1], _times(False)[:5], solver=solver, per_sample=True, rtol=1e-4,
                        atol=1e-6, tangent_control=tangent_control)
    assert sol.stats.nfe_rows == sol.stats.nfe


def test_a_scalar_sample_takes_the_same_steps_in_any_batch():
    # a per-sample state of shape (batch,): the forward difference's step is per sample, not over the batch
    rate = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1e-3, 50.0, -2.0], dtype=F64)
    t = torch.linspace(0, 3, 4, dtype=F64)

    def f(t_, y):
        return -rate * torch.sin(y) * y

    together = neurode.solve(f, y0, t, per_sample=True, rtol=1e-6, atol=1e-9)
    for b in range(3):
        alone = neurode.solve(f, y0[b:b + 1], t, per_sample=True, rtol=1e-6, atol=1e-9)
        assert torch.equal(alone.ys[:, 0], together.ys[:, b])


def _reference_difference(f, y, v, per_sample):
    """The tangent's stage product as the module docstring writes it, one plain operation per term."""
    real = y.real.dtype if y.is_complex() else y.dtype
    dims = tuple(range(1, y.ndim)) if per_sample and y.ndim > 1 else None

    def rms(x):
        if per_sample and x.ndim == 1:
            return x.abs()
        return x.abs().square().mean(dim=dims, keepdim=dims is not None).sqrt()

    eps = (1.0 + rms(y)) * math.sqrt(torch.finfo(real).eps) / rms(v).clamp_min(torch.finfo(real).tiny)
    return (f(y + eps * v) - f(y)) / eps


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("shape, per_sample", [((256, 16), True), ((32, 4, 16), True), ((300,), True),
                                               ((64, 16), False)])
def test_the_stage_difference_is_the_forward_difference_of_the_docstring(shape, per_sample, dtype):
    # the stage products are computed in place and with fused norms for speed; they must stay the forward
    # difference (f(Y + eps V) - f(Y)) / eps with eps = sqrt(machine eps) (1 + rms Y) / rms V, per sample in
    # the batch loop, and rounded as that expression is (a fused multiply-add in Y + eps V rounds differently)
    generator = torch.Generator().manual_seed(3)
    y = torch.randn(shape, generator=generator, dtype=dtype) * 3
    v = torch.randn(shape, generator=generator, dtype=dtype)
    weight = torch.randn(shape[-1], shape[-1], generator=generator, dtype=dtype)

    def f(t, x):
        return torch.tanh(x @ weight) if x.ndim > 1 else torch.tanh(x) * 2

    field = _Variational(f, [(0.0, y, (), f(0.0, y))], per_sample)
    with torch.no_grad():
        product = field(0.0, v)
    expected = _reference_difference(lambda x: f(0.0, x), y, v, per_sample)
    # the RMS as a vector norm over sqrt(n) may differ from sqrt(mean(x^2)) in the last bit; the difference is
    # then good to sqrt(machine eps) relative, as the docstring says
    torch.testing.assert_close(product, expected, rtol=10 * math.sqrt(torch.finfo(dtype).eps), atol=0.0)
    # and Y + eps V, the point f is evaluated at, is rounded as written, bit for bit
    points = []
    _Variational(lambda t, x: points.append(x) or f(t, x), [(0.0, y, (), f(0.0, y))], per_sample)(0.0, v)
    real = torch.finfo(dtype)
    eps = (1.0 + _rms(y, per_sample)) * math.sqrt(real.eps) / _rms(v, per_sample).clamp_min(real.tiny)
    assert torch.equal(points[0], y + eps * v)


def test_renormalisation_gives_each_sample_unit_rms_and_leaves_zero_and_non_finite_tangents():
    dopri5 = get_registry().get("solver", "dopri5").obj()
    y0 = torch.zeros(4, 3, dtype=F64)
    stepper = TangentStepper(dopri5, y0, per_sample=True)
    v1 = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [math.inf, 1.0, 1.0], [1e-3, -2e-3, 5e-4]], dtype=F64)
    stepper._pending = (v1.clone(), ())
    stepper.accept(torch.tensor([True, True, True, False]))
    expected_rms = v1[:3].square().mean(dim=1).sqrt()
    assert torch.equal(stepper.v[0], v1[0] * expected_rms[0].reciprocal())  # rounded as v (1 / rms)
    torch.testing.assert_close(stepper.v[0].square().mean(), torch.tensor(1.0, dtype=F64))
    assert torch.equal(stepper.v[1], v1[1])  # zero stays zero (factor 1)
    assert torch.equal(stepper.v[2], v1[2])  # non-finite: factor 1, not a NaN
    # a rejected sample keeps its old tangent, which had unit RMS already
    torch.testing.assert_close(stepper.v[3].square().mean(), torch.tensor(1.0, dtype=F64))
