"""The batch-parallel loop: per-sample time grids, step sizes, compaction and status."""

import math
import re

import pytest
import torch

import neurode
from neurode.framework.batch_loop import MAX_STEPS, NON_FINITE, SUCCESS, UNDERFLOW
from neurode.framework.errors import InvalidInputError

F64 = torch.float64


def oscillators(n, low=0.1, high=100.0, zeta=0.05):
    w = torch.logspace(math.log10(low), math.log10(high), n, dtype=F64)

    def f(t, y, args):
        (ww,) = args
        return torch.stack([y[:, 1], -2 * zeta * ww * y[:, 1] - ww**2 * y[:, 0]], dim=1)

    def exact(t):
        wd = w * math.sqrt(1 - zeta**2)
        return torch.exp(-zeta * w * t) * (torch.cos(wd * t) + zeta * w / wd * torch.sin(wd * t))

    y0 = torch.stack([torch.ones(n, dtype=F64), torch.zeros(n, dtype=F64)], dim=1)
    return f, w, exact, y0


def test_every_sample_meets_its_tolerance_on_a_heterogeneous_batch():
    f, w, exact, y0 = oscillators(64)
    t = torch.linspace(0, 5, 6, dtype=F64)
    sol = neurode.solve(f, y0, t, per_sample=True, args=(w,), rtol=1e-7, atol=1e-9)
    truth = torch.stack([exact(float(tt)) for tt in t])
    assert sol.ys.shape == (6, 64, 2)
    assert (sol.ys[..., 0] - truth).abs().max() < 1e-5
    assert (sol.status == SUCCESS).all()
    # slow samples take far fewer steps than fast ones: each has its own step size
    acc = sol.sample_stats["n_accepted"]
    assert acc[0] * 10 < acc[-1]


def test_finished_samples_stop_costing_evaluations():
    f, w, exact, y0 = oscillators(32)
    t = torch.linspace(0, 5, 3, dtype=F64)
    sol = neurode.solve(f, y0, t, per_sample=True, args=(w,), rtol=1e-6, atol=1e-8)
    rows_if_all_stayed = sol.stats.nfe * 32
    assert sol.stats.nfe_rows < 0.6 * rows_if_all_stayed
    # and each row is accounted for: the total is the per-sample steps times the stages evaluated
    per_step = 6  # dopri5 with FSAL
    expected = int((sol.sample_stats["n_accepted"] + sol.sample_stats["n_rejected"]).sum()) * per_step + 2 * 32
    assert sol.stats.nfe_rows == expected


def test_ragged_per_sample_grids_match_separate_solves():
    t = torch.full((3, 4), math.nan, dtype=F64)
    t[0, :3] = torch.tensor([0.0, 0.7, 2.0])
    t[1, :4] = torch.tensor([0.5, 1.0, 1.5, 3.0])
    t[2, :1] = 1.0
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5], [2.0, -1.0]], dtype=F64)
    A = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=F64)
    sol = neurode.solve(lambda t_, y: y @ A.T, y0, t, rtol=1e-10, atol=1e-12)
    assert torch.equal(torch.isnan(sol.ys[..., 0]), torch.isnan(t.T))
    for b in range(3):
        n = int(torch.isfinite(t[b]).sum())
        own = neurode.odeint(lambda t_, y: y @ A.T, y0[b], t[b, :n], rtol=1e-10, atol=1e-12)
        assert torch.allclose(sol.ys[:n, b], own, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("controller", ["i", "pi", "pid"])
def test_per_sample_steps_are_those_of_each_sample_solved_alone(controller):
    # the per-sample error norm and controller are the shared loop's, sample by sample
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5], [2.0, -1.0], [0.0, 3.0]], dtype=F64)
    omega = torch.tensor([0.3, 1.0, 4.0, 20.0], dtype=F64)
    t = torch.linspace(0.0, 3.0, 4, dtype=F64)

    def f(t_, y, w):
        return torch.stack([y[..., 1], -(w**2) * y[..., 0]], dim=-1)

    sol = neurode.solve(f, y0, t, per_sample=True, args=omega, rtol=1e-7, atol=1e-9, controller=controller)
    for b in range(4):
        alone = neurode.solve(f, y0[b], t, args=omega[b], rtol=1e-7, atol=1e-9, controller=controller)
        assert int(sol.sample_stats["n_accepted"][b]) == alone.stats.n_accepted
        assert int(sol.sample_stats["n_rejected"][b]) == alone.stats.n_rejected
        # the batch loop ends each sample's last step on its last output time (the shared loop steps past it and
        # interpolates), so the values agree to the solve's tolerance, not to round-off
        assert torch.allclose(sol.ys[:, b], alone.ys, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("controller", ["i", "pi", "pid"])
@pytest.mark.parametrize("solver", ["adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8"])
def test_a_sample_takes_the_same_steps_in_any_batch(solver, controller):
    # batch independence: a sample's steps and decisions do not depend on the other samples, exactly, and its
    # values only to round-off (the stage combinations' kernels differ with the batch size); unlike the comparison
    # with the shared loop above, which steps past the last output time and may take one step more or less
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5], [2.0, -1.0], [0.0, 3.0]], dtype=F64)
    omega = torch.tensor([0.3, 1.0, 4.0, 20.0], dtype=F64)
    t = torch.linspace(0.0, 3.0, 4, dtype=F64)

    def f(t_, y, w):
        return torch.stack([y[..., 1], -(w**2) * y[..., 0]], dim=-1)

    rtol = 1e-3 if solver in ("adaptive_heun", "fehlberg2") else 1e-4  # second order: thousands of steps at 1e-4
    options = {"solver": solver, "controller": controller, "rtol": rtol, "atol": rtol * 1e-2, "per_sample": True}
    batch = neurode.solve(f, y0, t, args=omega, **options)
    for b in range(4):
        alone = neurode.solve(f, y0[b:b + 1], t, args=omega[b:b + 1], **options)
        for key in ("n_accepted", "n_rejected"):
            assert int(batch.sample_stats[key][b]) == int(alone.sample_stats[key][0])
        assert torch.allclose(batch.ys[:, b], alone.ys[:, 0], rtol=1e-13, atol=1e-15)


def test_several_outputs_in_one_step_values_and_checkpoint_gradients():
    # the slow sample passes several outputs per step: they are interpolated as one batch of (row, output) pairs,
    # a row repeated once per output, and the checkpointed adjoint replays the same pairs
    w = torch.tensor([0.2, 5.0], dtype=F64)
    y0 = torch.tensor([[1.0, 0.0], [0.5, -0.5]], dtype=F64)
    t = torch.linspace(0.0, 4.0, 41, dtype=F64)

    def f(t_, y, w_):
        return torch.stack([y[..., 1], -(w_**2) * y[..., 0]], dim=-1)

    grads, solutions = [], []
    for adjoint in ("direct", "checkpoint"):
        y = y0.clone().requires_grad_(True)
        sol = neurode.solve(f, y, t, per_sample=True, args=w, adjoint=adjoint, rtol=1e-8, atol=1e-10)
        grads.append(torch.autograd.grad((sol.ys**2).sum(), y)[0])
        solutions.append(sol)
    assert int(solutions[0].sample_stats["n_accepted"][0]) < len(t) // 3  # about 3 or more outputs per step
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    for b in range(2):
        own = neurode.odeint(lambda t_, y: f(t_, y, w[b]), y0[b], t, rtol=1e-8, atol=1e-10)
        assert torch.allclose(solutions[0].ys[:, b], own.detach(), rtol=1e-6, atol=1e-8)


def test_decreasing_per_sample_times():
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([[1.0, 0.0], [2.0, 1.5]], dtype=F64)
    sol = neurode.solve(lambda t_, y: -y, y0, t, rtol=1e-10, atol=1e-12)
    expected = y0[:, 0] * torch.exp(torch.tensor([1.0, 0.5], dtype=F64))
    assert torch.allclose(sol.ys[1, :, 0], expected, rtol=1e-8)


def test_a_failing_sample_is_reported_while_the_others_complete():
    y0 = torch.tensor([[0.5], [2.0], [0.1]], dtype=F64)  # dy/dt = y^2 blows up at t = 1/y0
    t = torch.linspace(0, 1, 3, dtype=F64)
    sol = neurode.solve(lambda t_, y: y**2, y0, t, per_sample=True, on_failure="report")
    assert sol.status.tolist()[0] == SUCCESS and sol.status.tolist()[2] == SUCCESS
    assert sol.status.tolist()[1] in (UNDERFLOW, NON_FINITE)
    assert abs(float(sol.sample_stats["fail_t"][1]) - 0.5) < 1e-3
    assert torch.allclose(sol.ys[-1, 0, 0], torch.tensor(1 / (1 / 0.5 - 1.0), dtype=F64), rtol=1e-6)
    assert torch.isnan(sol.ys[-1, 1, 0])
    with pytest.raises(neurode.SolverError, match="1 of 3 samples failed"):
        neurode.solve(lambda t_, y: y**2, y0, t, per_sample=True)


def test_step_limit_is_per_sample():
    f, w, _, y0 = oscillators(4, low=0.1, high=50.0)
    t = torch.linspace(0, 10, 2, dtype=F64)
    sol = neurode.solve(f, y0, t, per_sample=True, args=(w,), max_num_steps=60, on_failure="report")
    assert sol.status[0] == SUCCESS and sol.status[-1] == MAX_STEPS


def test_direct_gradients_through_the_batch_loop():
    A = torch.tensor([[-0.2, -1.0], [1.0, -0.3]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64, requires_grad=True)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.0, 1.5, 2.0]], dtype=F64)

    def fn(y0_, A_):
        return neurode.solve(lambda t_, y: torch.tanh(y @ A_.T), y0_, t, rtol=1e-10, atol=1e-12).ys

    assert torch.autograd.gradcheck(fn, (y0, A), atol=1e-6, rtol=1e-4)


def test_direct_gradients_when_steps_pass_several_outputs():
    """The (row, output) pairs of a step that passes several outputs are gathered per pair: the gathers' backward
    must send every pair's gradient to its row's step."""
    w = torch.tensor([0.02, 1.0], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0, 0.0], [0.5, -0.5]], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)

    def solution(y0_, w_):
        return neurode.solve(lambda t_, y, w_: torch.stack([y[..., 1], -(w_**2) * y[..., 0]], dim=-1), y0_, t,
                             args=w_, per_sample=True, rtol=1e-10, atol=1e-12)

    assert int(solution(y0, w).sample_stats["n_accepted"][0]) <= 4  # the slow sample: two or more outputs a step
    assert torch.autograd.gradcheck(lambda *a: solution(*a).ys, (y0, w), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "dopri8"])
def test_padded_emission_equals_one_gather_per_output(solver, monkeypatch):
    """A step passing several outputs of a sample emits them as one (rows, outputs) block (each row's basis of
    powers of theta times its power-form coefficients, one batched matrix product; unused slots written to a
    discarded row): values and gradients are those of the per-(row, output) gathers and Horner's scheme to
    round-off, on ragged grids where some rows emit and others do not."""
    from neurode.framework.explicit_rk import ExplicitRungeKutta

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    t = torch.sort(torch.rand(6, 17, dtype=F64) * 3, dim=1).values
    t[:, 0] = 0.0
    t[1, 9:] = math.nan  # a shorter grid
    t[4] = torch.linspace(0.0, 0.2, 17, dtype=F64)  # dense: many outputs in one step
    y0 = torch.randn(6, 3, dtype=F64, requires_grad=True)
    weights = torch.randn(17, 6, 3, dtype=F64)  # ys is (time, sample, state)

    def run():
        ys = neurode.solve(lambda s, y: net(y), y0, t, per_sample=True, solver=solver, rtol=1e-7, atol=1e-9).ys
        return ys, torch.autograd.grad((ys.nan_to_num() * weights).sum(), (y0, *net.parameters()))

    padded_ys, padded_grads = run()
    monkeypatch.delattr(ExplicitRungeKutta, "interpolate_per_sample_padded")
    pair_ys, pair_grads = run()
    torch.testing.assert_close(padded_ys.nan_to_num(7.0), pair_ys.nan_to_num(7.0), rtol=1e-13, atol=1e-14)
    assert torch.isnan(padded_ys[9:, 1]).all()  # nothing written past a row's own grid
    for got, want in zip(padded_grads, pair_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_float32_state_keeps_float64_time():
    y0 = torch.ones(3, 1)
    t = torch.tensor([[0.0, 1.0]] * 3, dtype=F64)
    seen = []

    def f(t_, y):
        seen.append(t_.dtype)
        return -y

    sol = neurode.solve(f, y0, t)
    assert sol.ys.dtype == torch.float32
    assert set(seen) == {torch.float32}  # f sees the state's dtype; the loop's clock stays float64
    assert torch.allclose(sol.ys[-1, :, 0], torch.full((3,), math.exp(-1.0)), rtol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64), "same direction"),
    (torch.tensor([[0.0, math.nan, 1.0], [0.0, 1.0, 2.0]], dtype=F64), "padded with NaN at the end"),
    (torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 2.0]], dtype=F64), "strictly monotone"),
    (torch.tensor([[0.0, 1.0]] * 3, dtype=F64), "one row of t per sample"),
])
def test_bad_per_sample_times_are_rejected(bad, match):
    with pytest.raises(neurode.NeurodeError, match=match):
        neurode.solve(lambda t_, y: -y, torch.ones(2, 1, dtype=F64), bad)


def test_unsupported_combinations_say_so():
    t = torch.tensor([[0.0, 1.0]] * 2, dtype=F64)
    y0 = torch.ones(2, 1, dtype=F64)
    with pytest.raises(neurode.NeurodeError, match="adaptive"):
        neurode.solve(lambda t_, y: -y, y0, t, solver="rk4")
    with pytest.raises(neurode.NeurodeError, match="controller"):
        neurode.solve(lambda t_, y: -y, y0, t, controller=object())


def test_odeint_accepts_per_sample_grids():
    y0 = torch.tensor([[1.0], [3.0]], dtype=F64)
    t = torch.tensor([[0.0, 1.0], [0.0, 2.0]], dtype=F64)
    ys = neurode.odeint(lambda t_, y: -y, y0, t, rtol=1e-10, atol=1e-12)
    assert ys.shape == (2, 2, 1)
    assert torch.allclose(ys[1, :, 0], torch.tensor([math.exp(-1.0), 3 * math.exp(-2.0)], dtype=F64))


def _ragged_problem():
    torch.manual_seed(0)
    A = torch.tensor([[-0.2, -1.0], [1.0, -0.3]], dtype=F64, requires_grad=True)
    y0 = torch.randn(5, 2, dtype=F64, requires_grad=True)
    t = torch.full((5, 4), math.nan, dtype=F64)
    t[0, :4] = torch.tensor([0.0, 0.5, 1.0, 2.0])
    t[1, :2] = torch.tensor([0.0, 3.0])
    t[2, :1] = 0.0
    t[3, :3] = torch.tensor([1.0, 1.2, 4.0])
    t[4, :4] = torch.tensor([0.0, 0.1, 0.2, 0.3])
    return A, y0, t


def _ragged_gradients(adjoint, rtol, atol):
    """Gradients w.r.t. (y0, A) on the ragged problem, and the solve's stats."""
    A, y0, t = _ragged_problem()
    sol = neurode.solve(lambda t_, y: torch.tanh(y @ A.T), y0, t, adjoint=adjoint, rtol=rtol, atol=atol,
                        adjoint_params=(A,))
    return torch.autograd.grad((sol.ys.nan_to_num() ** 2).sum(), (y0, A)), sol.stats


def test_backsolve_agrees_with_direct_in_the_batch_loop():
    direct, _ = _ragged_gradients("direct", 1e-10, 1e-12)
    backsolve, stats = _ragged_gradients("backsolve", 1e-10, 1e-12)
    assert stats.nfe_backward > 0 and stats.n_steps_backward > 0
    for d, b in zip(direct, backsolve):
        assert torch.allclose(d, b, rtol=1e-6, atol=1e-8)


def test_backsolve_reuses_the_stage_evaluations_for_the_parameter_integral():
    # the parameter quadrature takes the graphs of the backward step's own stages; only the carried first
    # stage is evaluated again, so the backward pass costs about 7/6 of the forward one, not 11/6
    _, stats = _ragged_gradients("backsolve", 1e-8, 1e-10)
    # 1.47 here (each ragged round starts anew); 2.31 when f was re-evaluated
    assert stats.nfe_backward <= 1.7 * stats.nfe


def test_checkpoint_equals_direct_in_the_batch_loop():
    direct, _ = _ragged_gradients("direct", 1e-9, 1e-11)
    checkpoint, stats = _ragged_gradients("checkpoint", 1e-9, 1e-11)
    assert stats.nfe_backward > 0 and stats.n_steps_backward > 0
    for d, c in zip(direct, checkpoint):
        assert torch.allclose(d, c, rtol=1e-12, atol=1e-12)


def test_checkpoint_gradcheck_in_the_batch_loop():
    A, y0, t = _ragged_problem()

    def fn(y0_, A_, tangent_control=False):
        return neurode.solve(lambda t_, y: torch.tanh(y @ A_.T), y0_, t, adjoint="checkpoint", rtol=1e-10,
                             atol=1e-12, adjoint_params=(A_,), tangent_control=tangent_control).ys.nan_to_num()

    # gradcheck differentiates the step sequence's response to its inputs too; the steps of tangent control come
    # from a forward difference whose rounding moves them at the 1e-8 level, so the tight check runs without it
    assert torch.autograd.gradcheck(fn, (y0, A), atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradcheck(lambda y0_, A_: fn(y0_, A_, True), (y0, A), atol=2e-5, rtol=1e-3)


@pytest.mark.parametrize("controller", ["i", "pi"])
@pytest.mark.parametrize("adjoint, tol", [("checkpoint", 1e-10), ("backsolve", 1e-5)])
def test_gradient_methods_with_args_and_compaction(adjoint, tol, controller):
    f, w, _, y0 = oscillators(8, low=0.1, high=10.0)
    scale = torch.tensor(1.0, dtype=F64, requires_grad=True)

    def g(t_, y, args):
        return f(t_, y, args) * scale

    grads = []
    for method in ("direct", adjoint):
        y = y0.clone().requires_grad_(True)
        sol = neurode.solve(g, y, torch.linspace(0, 3, 4, dtype=F64), per_sample=True, args=(w,), adjoint=method,
                            rtol=1e-9, atol=1e-11, adjoint_params=(scale,), controller=controller)
        grads.append(torch.autograd.grad((sol.ys ** 2).sum(), (y, scale)))
    for d, other in zip(*grads):
        assert torch.allclose(d, other, rtol=tol, atol=tol * 1e-2)

@pytest.mark.parametrize("controller, max_rejected, max_rows", [("pid", 1.0, 1.1), ("pi", 0.5, 0.95)])
def test_pid_and_pi_controllers_per_sample_reject_fewer_steps(controller, max_rejected, max_rows):
    # at a zero crossing the relative error of x or v rises over a few steps; the I controller never shrinks an
    # accepted step and runs into rejections there; PID damps them, PI (Hairer's) shrinks ahead of them and so
    # also evaluates fewer rows, with no larger error
    f, w, exact, y0 = oscillators(16, low=1.0, high=100.0)
    t = torch.linspace(0, 5, 6, dtype=F64)
    truth = torch.stack([exact(float(tt)) for tt in t])
    i_ctrl = neurode.solve(f, y0, t, per_sample=True, args=(w,), rtol=1e-6, atol=1e-8)
    other = neurode.solve(f, y0, t, per_sample=True, args=(w,), rtol=1e-6, atol=1e-8, controller=controller)
    assert other.stats.n_rejected < max_rejected * i_ctrl.stats.n_rejected
    assert other.stats.nfe_rows < max_rows * i_ctrl.stats.nfe_rows
    assert (other.ys[..., 0] - truth).abs().max() <= (i_ctrl.ys[..., 0] - truth).abs().max()


def test_padded_data_batches_feed_the_batch_loop_directly():
    from neurode.datasets import Trajectory, collate_padded

    A = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=F64)
    items = []
    for i, times in enumerate(([0.0, 0.4, 1.3], [0.2, 0.5, 0.9, 2.0, 2.5], [1.0])):
        tt = torch.tensor(times, dtype=F64)
        y0 = torch.tensor([1.0 + i, 0.5], dtype=F64)
        values = neurode.odeint(lambda t_, y: y @ A.T, y0, tt, rtol=1e-10, atol=1e-12) if len(times) > 1 else y0[None]
        items.append(Trajectory(i, tt, values, torch.ones_like(values, dtype=torch.bool), torch.zeros(0, dtype=F64)))
    batch = collate_padded(items)
    t = batch.solve_times()
    y0 = batch.values[:, 0]
    sol = neurode.solve(lambda t_, y: y @ A.T, y0, t, rtol=1e-10, atol=1e-12)
    pred = sol.ys.transpose(0, 1)  # (batch, N, features), like batch.values
    observed = batch.time_mask
    assert torch.allclose(pred[observed], batch.values[observed], rtol=1e-7, atol=1e-9)
    assert torch.isnan(pred[~observed]).all()


@pytest.mark.parametrize("solver", ["adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8"])
def test_every_adaptive_tableau_runs_per_sample(solver):
    y0 = torch.tensor([[1.0], [2.0], [0.5]], dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.0, 2.0, math.nan], [1.0, 1.5, 3.0]], dtype=F64)
    sol = neurode.solve(lambda t_, y: -y, y0, t, solver=solver, rtol=1e-8, atol=1e-10)
    expected = y0[:, 0] * torch.exp(-(t - t[:, :1])).T
    finite = torch.isfinite(t.T)
    assert torch.allclose(sol.ys[..., 0][finite], expected[finite], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("args, where", [(torch.ones(4, dtype=F64), "args has shape (4,)"),
                                         (torch.tensor(2.0, dtype=F64), "args has shape ()"),
                                         ((torch.ones(3, 2, dtype=F64), torch.ones(5, dtype=F64)),
                                          "args[1] has shape (5,)"),
                                         ({"rate": torch.ones(2, 3, dtype=F64)}, "args['rate'] has shape (2, 3)")])
def test_per_sample_args_not_indexed_by_sample_are_refused_saying_which_and_why(args, where):
    # per sample, tensors in args are sliced by sample as samples finish: a shared parameter there was either a
    # raw broadcasting error or, worse, silently sliced
    y0 = torch.ones(3, 2, dtype=F64)
    with pytest.raises(InvalidInputError, match=re.escape(where) + r".*expected a first dimension of 3.*expand"):
        neurode.solve(lambda t, y, a: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), per_sample=True, args=args)
    # per-sample ones pass, non-tensors are left alone
    neurode.solve(lambda t, y, a: -a[0][:, None] * y, y0, torch.tensor([0.0, 1.0], dtype=F64), per_sample=True,
                  args=(torch.ones(3, dtype=F64), "label", 2))
