"""The batch-parallel integration loop: every sample of a batch is its own problem.

torchdiffeq steps a whole batch with one step size chosen from one error norm
over all samples, so the fastest sample sets the pace for all and the others
may drift; irregular per-sample output times force a union grid. Here each
sample has its own output times (a row of ``t``), its own step size, its own
accept/reject decision, step count and status:

* the error norm is taken per sample (RMS over that sample's components);
* the step-size controller acts on a vector of step sizes;
* a sample whose outputs are all produced leaves the *active set*: the state
  is compacted (``index_select``), so finished samples cost no evaluations;
* a sample that fails (step limit, step-size underflow, non-finite state) is
  removed with its status recorded, while the others complete; the caller
  chooses to raise or to report.

One host synchronisation per step: a small vector of counters read to decide
how many outputs to interpolate and whether to compact. Time is float64
whatever the state dtype. The stepping, error estimate and dense output are
the solver's (``ExplicitRungeKutta._step_per_sample`` /
``interpolate_per_sample``), so every adaptive tableau works unchanged, and
all operations are differentiable (``direct`` gradients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neurode.framework.controller import IController, PIController, PIDController, newton_step_size
from neurode.framework.errors import (
    InvalidInputError,
    MaxStepsError,
    NewtonConvergenceError,
    NonFiniteStateError,
    SolverError,
    StepSizeUnderflowError,
    StiffProblemError,
)
from neurode.framework.loop import LoopConfig
from neurode.framework.solution import SolveStats
from neurode.framework.solver import AbstractSolver
from neurode.framework.stiffness import StiffnessDetector, stiff_advice
from neurode.framework.tangent import make_stepper
from neurode.framework.vector_field import VectorField, slice_args

#: per-sample status codes of a batch-parallel solve
RUNNING, SUCCESS, MAX_STEPS, UNDERFLOW, NON_FINITE, STIFF, NEWTON = -1, 0, 1, 2, 3, 4, 5
STATUS_NAMES = {SUCCESS: "success", MAX_STEPS: "max_num_steps reached", UNDERFLOW: "step size underflow",
                NON_FINITE: "non-finite state", RUNNING: "running",
                STIFF: "stiff (steps held at the explicit method's stability limit; max_num_steps would not finish)",
                NEWTON: "the Newton iteration of the implicit stages did not converge, whatever the step size"}
_ERRORS = {MAX_STEPS: MaxStepsError, UNDERFLOW: StepSizeUnderflowError, NON_FINITE: NonFiniteStateError,
           STIFF: StiffProblemError, NEWTON: NewtonConvergenceError}


@dataclass
class BatchResult:
    ys: torch.Tensor  # (T, B, *state): output j of sample b at ys[j, b]; NaN where t[b, j] is padding or failed
    status: torch.Tensor  # (B,) int64
    n_accepted: torch.Tensor  # (B,)
    n_rejected: torch.Tensor  # (B,)
    h_last: torch.Tensor  # (B,) float64, signed
    fail_t: torch.Tensor  # (B,) float64: where a failed sample stopped (NaN otherwise)
    records: list["IterationRecord"] | None = None  # with record=True: what the checkpointed adjoint replays
    #: (B,) float64: a sample that failed by Newton: its last scaled Newton increment norm (NaN otherwise)
    fail_residual: torch.Tensor | None = None
    #: (B,) float64, signed: the step size a failed sample last tried (NaN otherwise)
    fail_dt: torch.Tensor | None = None


@dataclass
class IterationRecord:
    """One iteration of the batch loop, as the checkpointed adjoint replays it.

    ``keep`` is the compaction applied before the step (a mask over the
    previous active set, or ``None``); ``act``, ``y`` and ``state`` are the
    active samples and their state going into the step; ``t0``/``h`` the
    signed per-sample step; ``accept`` the decisions; ``emits`` the outputs
    produced (rows within the active set, theta, flat output index).
    """

    keep: torch.Tensor | None
    act: torch.Tensor
    y: torch.Tensor
    state: tuple[torch.Tensor, ...]
    t0: torch.Tensor
    h: torch.Tensor
    accept: torch.Tensor | None = None
    emits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None


def check_batch_times(t: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Validate per-sample output times ``t`` of shape ``(batch, T)``.

    Rows may end in NaN padding (ragged grids); the finite prefix of every row
    must be strictly monotone, all rows in the same direction. Returns
    ``(t as float64, number of outputs per row, direction)``.
    """
    if t.ndim != 2:
        raise InvalidInputError(f"per-sample times must have shape (batch, times), got {tuple(t.shape)}")
    if t.shape[0] != batch:
        raise InvalidInputError(
            f"per-sample times t of shape {tuple(t.shape)} need y0 of shape ({t.shape[0]}, ...): one row of t per "
            f"sample, but y0's leading (batch) dimension is {batch}"
        )
    tt = t.detach().to(torch.float64)
    finite = torch.isfinite(tt)
    n_out = finite.sum(dim=1)
    # padding only at the end: the finite entries form a prefix
    prefix = torch.arange(tt.shape[1], device=tt.device)[None, :] < n_out[:, None]
    diff = tt[:, 1:] - tt[:, :-1]
    valid = prefix[:, 1:]
    increasing, decreasing = valid & (diff > 0), valid & (diff < 0)
    # every check's verdict in one host read (a solve's only one before its loop); the details on failure only
    has_inf, bad_padding, empty_row, any_increasing, any_decreasing, repeated = torch.stack([
        torch.isinf(tt).any(), (finite != prefix).any(), (n_out == 0).any(), increasing.any(), decreasing.any(),
        (valid & ~(increasing | decreasing)).any()]).tolist()
    if has_inf:
        rows = torch.nonzero(torch.isinf(tt).any(dim=1)).flatten().tolist()[:8]
        raise InvalidInputError(f"rows {rows} of t hold an infinite time; times must be finite (NaN only as padding "
                                "at the end of a row)")
    if bad_padding:
        raise InvalidInputError("per-sample times may only be padded with NaN at the end of a row")
    if empty_row:
        rows = torch.nonzero(n_out == 0).flatten().tolist()[:8]
        raise InvalidInputError(f"rows {rows} of t have no finite time; every sample needs at least its start time")
    if any_increasing and any_decreasing:
        raise InvalidInputError("all rows of t must run in the same direction (all increasing or all decreasing)")
    direction = -1.0 if any_decreasing else 1.0
    if repeated:
        bad = torch.nonzero((valid & ~(increasing | decreasing)).any(dim=1)).flatten().tolist()[:8]
        raise InvalidInputError(f"rows {bad} of t are not strictly monotone")
    return tt, n_out, direction


def _controller_state(controller, batch: int, device) -> torch.Tensor:
    """Each sample's controller memory, a ``(2, batch)`` float64 tensor compacted with the active set.

    PID: the last two accepted error ratios (NaN where absent). PI: the
    previous accepted ratio already raised to ``beta`` (one power per step
    fewer), and the cap on the next accepted step's growth (1 right after a
    rejection, ``ifactor`` otherwise). The I controller keeps nothing.
    """
    if isinstance(controller, PIController):
        return torch.tensor([[1e-4**controller.beta], [controller.ifactor]], dtype=torch.float64,
                            device=device).expand(2, batch).clone()
    return torch.full((2, batch), math.nan, dtype=torch.float64, device=device)


def _adapt(controller, h, ratio, order, history=None):
    """Vectorised step-size control per sample: ``(accept, h_next, history)``.

    Elementwise the same as the controller's own ``adapt`` (``IController``,
    ``PIController``, ``PIDController``), with the per-sample memory in
    ``history`` (see :func:`_controller_state`). Written with few tensor
    operations: with a cheap vector field they are the cost of an iteration.
    """
    accept = ratio <= 1.0  # NaN compares False: a non-finite error rejects
    if isinstance(controller, PIController):
        # Hairer's DOPRI5: accepted h * clip(safety r^-expo r_prev^beta, dfactor, ifactor), no growth right after
        # a rejection; rejected h * clip(safety r^-expo, dfactor, 1) (Hairer & Wanner II, §IV.2)
        integral = ratio.clamp_min(1e-300).pow_(-controller.exponent(order)).mul_(controller.safety)
        kept = (integral * history[0]).clamp_(controller.dfactor, controller.ifactor)
        factor = torch.where(accept, torch.minimum(kept, history[1]), integral.clamp_(controller.dfactor, 1.0))
        factor.nan_to_num_(nan=controller.dfactor)
        prev_beta = torch.where(accept, ratio.clamp_min(1e-4).pow_(controller.beta), history[0])
        history = torch.stack([prev_beta, torch.where(accept, controller.ifactor, 1.0)])
        return accept, h * factor, history
    if isinstance(controller, PIDController):
        r = ratio.clamp_min(1e-10)
        prev1 = torch.where(torch.isnan(history[0]), r, history[0])
        prev2 = torch.where(torch.isnan(history[1]), prev1, history[1])
        beta1 = (controller.pcoeff + controller.icoeff + controller.dcoeff) / order
        beta2 = -(controller.pcoeff + 2 * controller.dcoeff) / order
        beta3 = controller.dcoeff / order
        factor = r.pow(-beta1).mul_(prev1.pow(-beta2)).mul_(controller.safety)
        if beta3:
            factor.mul_(prev2.pow(-beta3))
        history = torch.where(accept[None, :], torch.stack([r, history[0]]), history)
    elif isinstance(controller, IController):
        factor = ratio.clamp_min(1e-300).pow_(-1.0 / order).mul_(controller.safety)
    else:
        raise InvalidInputError(
            f"the batch-parallel loop needs an IController, PIController or PIDController, got {controller!r}")
    # clip to [dfactor, ifactor], and to >= 1 where the step is kept (the I controller: where the error is below
    # the tolerance, as torchdiffeq has it); a NaN ratio (non-finite state) shrinks by dfactor
    factor.clamp_(controller.dfactor, controller.ifactor)
    kept = ratio < 1.0 if isinstance(controller, IController) else accept
    factor = torch.maximum(factor, kept.to(factor.dtype)).nan_to_num_(nan=controller.dfactor)
    return accept, h * factor, history


@torch.no_grad()
def _error_ratios(step, rtol_n, atol_n, feature_dims) -> torch.Tensor:
    """RMS over each sample of error / (atol + rtol max(|y0|, |y1|)) (Hairer et al. I, eq. 4.10-4.11), in float64,
    with the RMS's sqrt(n) folded into the tolerances ``rtol_n``/``atol_n``."""
    scale = torch.maximum(step.y0.abs(), step.y1.abs()).mul_(rtol_n).add_(atol_n)
    scaled = step.error / scale
    ratio = scaled.abs() if feature_dims is None else torch.linalg.vector_norm(scaled, dim=feature_dims)
    return ratio if ratio.dtype == torch.float64 else ratio.double()


def _classify(finished, stuck, ratio, stiff, out_of_steps: bool, newton_failed=None) -> torch.Tensor:
    """Each active sample's status after an iteration: running, success, or why it stopped."""
    code = torch.where(stuck, MAX_STEPS if out_of_steps else UNDERFLOW, RUNNING)
    code = torch.where(stuck & ~torch.isfinite(ratio), NON_FINITE, code)
    if newton_failed is not None:  # an implicit method's stage solve failed at the last step size tried
        code = torch.where(stuck & newton_failed, NEWTON, code)
    if stiff is not None:
        code = torch.where(stiff, STIFF, code)
    return torch.where(finished, SUCCESS, code)


def _per_sample_rms(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    return torch.linalg.vector_norm(flat, dim=1) / math.sqrt(max(flat.shape[1], 1))


def _initial_steps(func, solver, t0, y0, f0, rtol, atol, direction):
    """Hairer's starting step per sample (Hairer, Nørsett & Wanner I, §II.4), vectorised."""
    with torch.no_grad():
        scale = atol + y0.abs() * rtol
        d0 = _per_sample_rms(y0 / scale).double()
        d1 = _per_sample_rms(f0 / scale).double()
        small = (d0 < 1e-5) | (d1 < 1e-5)
        h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / torch.where(small, torch.ones_like(d1), d1))
        shape = (-1, *([1] * (y0.ndim - 1)))
        y1 = y0 + (direction * h0).to(y0.dtype).view(shape) * f0
        f1 = func(t0 + direction * h0, y1)
        d2 = _per_sample_rms((f1 - f0) / scale).double() / h0
        both_small = (d1 <= 1e-15) & (d2 <= 1e-15)
        h1 = torch.where(
            both_small,
            torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
            (0.01 / torch.maximum(d1, d2).clamp_min(1e-300)) ** (1.0 / solver.initial_step_order),
        )
        return torch.minimum(100 * h0, h1)


def integrate_batch(
    solver: AbstractSolver,
    func: VectorField,
    y0: torch.Tensor,
    t: torch.Tensor,
    config: LoopConfig,
    *,
    stats: SolveStats | None = None,
    record: bool = False,
    on_step=None,
    tangent: bool | str = False,
) -> BatchResult:
    """Integrate each sample ``y0[b]`` through its own output times ``t[b]`` (see the module docstring).

    With ``record=True`` every iteration is kept as an :class:`IterationRecord`
    (state going in, decisions, outputs) for the checkpointed adjoint.
    ``on_step(step, accept, act)``, if given, is called after every step's
    accept/reject decision (the continuous adjoint accumulates its parameter
    quadrature there). ``tangent``: steps also control the error of a tangent of
    each sample's solution (see ``tangent.py``).
    """
    stats = SolveStats() if stats is None else stats
    if y0.requires_grad and not torch.is_grad_enabled():
        y0 = y0.detach()  # f then sees the same kind of tensor at every call: no recompiles of a compiled f
    if not (solver.adaptive and getattr(solver, "supports_per_sample", False)):
        raise InvalidInputError(
            f"per-sample time grids need an adaptive solver with per-sample steps (an explicit Runge-Kutta pair "
            f"such as dopri5, tsit5, bosh3); got {solver!r}"
        )
    for name in ("step_t", "jump_t", "grid_constructor", "step_size"):
        if getattr(config, name):
            raise InvalidInputError(f"option {name!r} is not supported with per-sample time grids")
    if config.norm is not None:
        raise InvalidInputError("a custom norm is not supported with per-sample time grids (the norm is per sample)")
    if not isinstance(config.controller, (IController, PIController, PIDController)):
        raise InvalidInputError(
            f"the batch-parallel loop needs an IController, PIController or PIDController, got {config.controller!r}")
    batch = y0.shape[0]
    tt, n_out, direction = check_batch_times(t, batch)
    device = y0.device
    tt = tt.to(device)
    n_out = n_out.to(device)
    n_times = tt.shape[1]
    tau_out = direction * tt  # increasing along each row
    tau_out = torch.where(torch.isfinite(tau_out), tau_out, math.inf)  # padding sorts last
    order = solver.error_order
    rtol, atol = config.rtol, config.atol
    features = max(y0[0].numel(), 1) if batch else 1
    rtol_n, atol_n = rtol * math.sqrt(features), atol * math.sqrt(features)
    feature_dims = tuple(range(1, y0.ndim)) if y0.ndim > 1 else None
    controller = config.controller
    min_step, max_step = float(config.min_step), float(config.max_step)
    func.direction = direction
    nfe_start = func.counts()
    full_args = func.args
    state_ndim = y0.ndim

    # results over the whole batch, written when a sample leaves the active set
    status = torch.full((batch,), RUNNING, dtype=torch.int64, device=device)
    n_acc_all = torch.zeros(batch, dtype=torch.int64, device=device)
    n_rej_all = torch.zeros(batch, dtype=torch.int64, device=device)
    h_last_all = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    fail_t = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    fail_residual = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    fail_dt = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    newton_residual = None  # aligned with the active set: the last step's Newton failures (NaN where none)
    out_index: list[torch.Tensor] = [torch.arange(batch, device=device) * n_times]  # flat index b * T + j
    out_value: list[torch.Tensor] = [y0]

    # the active set: every tensor below is aligned with ``act`` and compacted with it
    act = torch.arange(batch, device=device)
    tau = tau_out[:, 0].clone()
    tau_end = tau_out.gather(1, (n_out - 1)[:, None]).squeeze(1)
    row_tau_out, row_n_out = tau_out, n_out
    ptr = torch.ones(batch, dtype=torch.int64, device=device)
    n_acc = torch.zeros(batch, dtype=torch.int64, device=device)
    iteration = 0  # every active sample attempts one step per iteration: its attempted steps
    h_last = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    y = y0
    stepper = make_stepper(solver, y0, tangent=tangent, per_sample=True)
    state = stepper.init(func, direction * tau, y0)
    if config.first_step is not None:
        h = torch.full((batch,), float(config.first_step), dtype=torch.float64, device=device)
    else:
        f0 = state[0] if state else func(direction * tau, y0)
        h = _initial_steps(func, solver, direction * tau, y0, f0, rtol, atol, direction)
    # rows evaluated: every evaluation of f is over the active samples, so rows = evaluations x active samples,
    # whatever the method evaluates per step (RK stages, a tangent's differences, a Jacobian's forward pass)
    rows = batch * (func.nfe - nfe_start[0])
    code = torch.where(ptr >= n_out, SUCCESS, RUNNING)  # single-output samples are done already
    # a state or f(t0, y0) that is not finite gives no finite first step: such a sample fails now, not after
    # max_num_steps retries (the shared loop raises at once, too)
    code = torch.where((code == RUNNING) & ~torch.isfinite(h), NON_FINITE, code)
    code = torch.where(torch.isfinite(y0.reshape(batch, -1)).all(dim=1), code, NON_FINITE)  # even with one output
    n_drop = int((code != RUNNING).sum())
    records: list[IterationRecord] | None = [] if record else None
    # several outputs of a sample per step as one block (explicit RK's dense output); the recorded path (the
    # per-sample checkpoint's replay) keeps (row, output) pairs
    padded_emission = records is None and hasattr(solver, "interpolate_per_sample_padded")
    discard = batch * n_times
    clamp = min_step > 0 or math.isfinite(max_step)
    stiffness = StiffnessDetector.for_solver(solver, config.nstiff)
    history = _controller_state(controller, batch, device)  # per-sample controller memory
    newton_before = torch.zeros(batch, dtype=torch.bool, device=device)  # the last attempt's Newton failed
    newton_pending = False  # whether the last step reported a Newton failure at all

    while True:
        # ---- samples that finished or failed leave the active set
        keep = None
        if n_drop:
            leaving = code != RUNNING
            keep = ~leaving
            # index_select with the positions found once, not a boolean mask per tensor (each mask indexing
            # finds the positions again, and its backward is an accumulating index_put)
            gone, kept = torch.nonzero(leaving).flatten(), torch.nonzero(keep).flatten()
            idx = act.index_select(0, gone)
            code_gone = code.index_select(0, gone)
            status[idx] = code_gone
            fail_t[idx] = torch.where(code_gone == SUCCESS, math.nan, direction * tau.index_select(0, gone))
            fail_dt[idx] = torch.where(code_gone == SUCCESS, math.nan, direction * h.index_select(0, gone))
            if newton_residual is not None:
                fail_residual[idx] = torch.where(code_gone == NEWTON, newton_residual.index_select(0, gone),
                                                 math.nan)
            n_acc_gone = n_acc.index_select(0, gone)
            n_acc_all[idx], h_last_all[idx] = n_acc_gone, direction * h_last.index_select(0, gone)
            n_rej_all[idx] = iteration - n_acc_gone
            act, tau, tau_end, h, ptr, n_acc, h_last, y, row_tau_out, row_n_out = (
                x.index_select(0, kept) for x in (act, tau, tau_end, h, ptr, n_acc, h_last, y, row_tau_out,
                                                  row_n_out))
            history, newton_before = history.index_select(1, kept), newton_before.index_select(0, kept)
            state = tuple(v.index_select(0, kept) for v in state)
            stepper.compact(kept)
            if stiffness is not None:
                stiffness.compact(kept)
            func.args = slice_args(full_args, act)
            if act.numel() == 0:
                break

        # ---- one step for every active sample, clipped to [min_step, max_step] and its last output
        if clamp:
            h = h.clamp(min=min_step, max=max_step)
        if solver.steps_onto_outputs:  # each sample's step ends on its next output (see AbstractSolver)
            h = torch.minimum(h, row_tau_out.gather(1, ptr[:, None]).squeeze(1) - tau)
        else:
            h = torch.minimum(h, tau_end - tau)
        t0, signed_h = (tau, h) if direction > 0 else (-tau, -h)
        if records is not None:
            records.append(IterationRecord(keep, act, y, state, t0, signed_h, emits=[]))
        step = None  # the last iteration's stages must not stay alive while this one runs
        nfe_before = func.nfe
        step, tangent_error = stepper.step(func, t0, signed_h, y, state)
        # rows f evaluated: an implicit method reports its own (its Newton iterations run on the rows still
        # iterating); otherwise every evaluation of the step covered the active samples
        rows += step.rows if step.rows is not None else act.numel() * (func.nfe - nfe_before)
        newton_failed = None if step.failure is None else step.failure.failed
        iteration += 1
        ratio = _error_ratios(step, rtol_n, atol_n, feature_dims)
        if tangent_error is not None:
            ratio = torch.maximum(ratio, stepper.ratio(tangent_error, rtol, atol))  # NaN stays NaN
        accept, h_next, history = _adapt(controller, h, ratio, order, history)
        if newton_failed is not None or newton_pending:  # (host-side flags: no synchronisation)
            failed = newton_failed if newton_failed is not None else torch.zeros_like(accept)
            h_next = newton_step_size(h, h_next, accept, failed, newton_before)
            newton_before, newton_pending = failed, newton_failed is not None
        if min_step > 0:  # steps at min_step are always taken (torchdiffeq), unless the state is non-finite
            accept = accept | ((h <= min_step) & torch.isfinite(ratio))

        if on_step is not None:
            on_step(step, accept, act)
        stepper.accept(accept)
        acc_col = accept.view(-1, *([1] * (state_ndim - 1)))
        tau_prev = tau
        y = torch.where(acc_col, step.y1, y)
        # a carried tensor need not have the state's dimensions (an implicit method's per-sample Jacobian blocks)
        # a rejected sample retries from state0, or from what the solver kept for the retry (an implicit
        # method's Jacobian formed at y0)
        retry = state if step.state_retry is None else step.state_retry
        state = tuple(torch.where(accept.view(-1, *([1] * (s1.ndim - 1))), s1, s0)
                      for s0, s1 in zip(retry, step.state1))
        tau = torch.where(accept, tau + h, tau)
        n_acc += accept
        h_last = torch.where(accept, h, h_last)

        # ---- outputs passed by accepted samples, and who is done or failed
        new_ptr = torch.searchsorted(row_tau_out, tau[:, None], right=True).squeeze(1)
        new_ptr = torch.where(accept, torch.minimum(new_ptr, row_n_out), ptr)
        count = new_ptr - ptr
        finished = new_ptr >= row_n_out
        stuck = ~(tau + h_next > tau)  # also where h_next is NaN (a non-finite first step): no retries until the limit
        if iteration >= config.max_num_steps:
            stuck = torch.ones_like(stuck)
        if min_step > 0:
            stuck = stuck | ((h <= min_step) & ~torch.isfinite(ratio))
        stiff = None
        if stiffness is not None and stiffness.due(iteration):
            stiff = stiffness.check_batch(step, accept, (tau_end - tau) / h_next, config.max_num_steps - iteration)
            stuck = stuck | stiff
        # the one sync per step
        n_emit, n_drop, n_emitting = torch.stack([count.max(), (finished | stuck).sum(), (count > 0).sum()]).tolist()
        if n_drop:  # classify only when someone leaves (rare): success, or why it failed
            code = _classify(finished, stuck, ratio, stiff, iteration >= config.max_num_steps, newton_failed)
            if newton_failed is not None:
                newton_residual = torch.where(newton_failed, step.failure.residual, math.nan)

        if n_emit and padded_emission:
            # every output passed in this step at once, as a (rows, n_emit) block: row r's k-th output is slot
            # (r, k), the slots past its count write to the discarded last row of the result (see
            # ``interpolate_per_sample_padded``: no gathers per output, dense sums in the backward pass)
            sel = None if n_emitting == count.numel() else torch.nonzero(count).flatten()
            take = (lambda x: x) if sel is None else (lambda x: x.index_select(0, sel))  # noqa: E731
            slots = torch.arange(n_emit, device=device)
            at = take(ptr)[:, None] + slots
            valid = slots < take(count)[:, None]
            end = take(row_tau_out).gather(1, torch.minimum(at, take(row_n_out)[:, None] - 1))
            start = take(tau_prev)[:, None]
            theta = torch.where(valid, ((end - start) / (take(tau)[:, None] - start)).clamp_(0.0, 1.0), 0.0)
            out_value.append(solver.interpolate_per_sample_padded(step, sel, theta).flatten(0, 1))
            out_index.append(torch.where(valid, take(act)[:, None] * n_times + at, discard).flatten())
        elif n_emit:
            # every output passed in this step at once, as (row, output) pairs: a sample that passed several
            # outputs in one step appears once per output (one round of tensor operations, not n_emit rounds)
            # (index_select: these gathers run every step that emits, and the advanced-indexing kernel costs more)
            if n_emit == 1:
                sel = torch.nonzero(count).flatten()
                at = ptr.index_select(0, sel)
            else:
                pairs = torch.nonzero(torch.arange(n_emit, device=device)[None, :] < count[:, None])
                sel = pairs[:, 0]
                at = ptr.index_select(0, sel) + pairs[:, 1]
            start = tau_prev.index_select(0, sel)
            end = row_tau_out.reshape(-1).index_select(0, sel * n_times + at)
            theta = ((end - start) / (tau.index_select(0, sel) - start)).clamp_(0.0, 1.0)
            out_value.append(solver.interpolate_per_sample(step, sel, theta))
            out_index.append(act.index_select(0, sel) * n_times + at)
            if records is not None:
                records[-1].emits.append((sel, theta, out_index[-1]))
        if records is not None:
            records[-1].accept = accept
        ptr = new_ptr
        if n_drop and newton_failed is None:
            newton_residual = None
        h = h_next

    feature_shape = y0.shape[1:]
    # one row more than the outputs: the padded emission's unused slots write there (``discard``)
    flat = torch.full((batch * n_times + 1, *feature_shape), math.nan, dtype=y0.dtype, device=device)
    ys = flat.index_put((torch.cat(out_index),), torch.cat(out_value))[:-1].view(batch, n_times, *feature_shape)
    func.args = full_args
    func.tally(stats, nfe_start)
    stats.nfe_rows += rows
    total_acc, total_rej = int(n_acc_all.sum()), int(n_rej_all.sum())
    stats.n_accepted += total_acc
    stats.n_rejected += total_rej
    stats.n_steps += total_acc + total_rej
    return BatchResult(ys.transpose(0, 1), status, n_acc_all, n_rej_all, h_last_all, fail_t,
                       fail_residual=fail_residual, fail_dt=fail_dt, records=records)


def raise_for_status(result: BatchResult, stats: SolveStats) -> None:
    """Raise the typed error of the first failed sample, naming how many failed."""
    failed = torch.nonzero(result.status != SUCCESS).flatten()
    if failed.numel() == 0:
        return
    first = int(failed[0])
    code = int(result.status[first])
    cls = _ERRORS.get(code, SolverError)
    where = float(result.fail_t[first])
    if code == NEWTON:
        residual, dt = float(result.fail_residual[first]), float(result.fail_dt[first])
        raise NewtonConvergenceError(
            f"{failed.numel()} of {result.status.numel()} samples failed; sample {first}: the Newton iteration of "
            f"the implicit stages did not converge at t={where:.9g} with step size {dt:.3g} (last scaled increment "
            f"norm {residual:.3g}) and shrinking the step did not help; f may be non-smooth or singular there. "
            "Pass on_failure='report' to get the others' results and per-sample status instead.",
            t=where, dt=dt, stats=stats, sample=first, residual=residual)
    raise cls(
        f"{failed.numel()} of {result.status.numel()} samples failed; sample {first}: {STATUS_NAMES[code]} at "
        f"t={where:.9g}.{' ' + stiff_advice() if code == STIFF else ''} Pass on_failure='report' to get the others' "
        "results and per-sample status instead.",
        t=where, dt=float(result.h_last[first]), stats=stats,
    )
