"""Built-in plugin: ``backsolve``, the continuous adjoint method.

Chen, Rubanova, Bettencourt & Duvenaud (2018), "Neural Ordinary Differential
Equations", Algorithm 1: the forward solve keeps only the outputs; the
backward pass integrates the augmented system

    d/dt [y, a, g_θ, g_t] = [f(t, y), -aᵀ ∂f/∂y, -aᵀ ∂f/∂θ, -aᵀ ∂f/∂t]

from the last output time back to the first, adding each output's
cotangent to ``a`` as it passes (eq. 4–5 and §B of the paper). Memory is
independent of the number of steps; the gradients are those of the exact
ODE solved to the adjoint tolerances, so they differ from ``direct`` by about
the tolerance.

The error norm of the backward solve leaves the parameter part ``g_θ`` out
by default — the seminorm of Kidger, Chen & Lyons (2021, "Hey, that's not an
ODE"), safe because ``g_θ`` never feeds back into the dynamics: on the
gradient benchmark it takes about a quarter of the backward steps at equal
accuracy. ``options={"norm": "full"}`` includes it, as torchdiffeq does by
default (``neurode.odeint_adjoint`` keeps torchdiffeq's default, for parity).

With an implicit method (a solver taking a ``jac`` option) the backward
solve is stepped by the same method — the adjoint of a stiff problem is
stiff too, and an explicit method would crawl. With adaptive steps the
state is *not* integrated back: backwards in time a stiff problem's decaying
modes grow, and a reconstructed ``y`` leaves the forward trajectory (the
gradient was measured 500× off). The adjoint runs instead along the forward
solution, redone one output interval at a time and read from its dense
output, with the exact Jacobian ``-Jᵀ`` (CVODES's checkpointed adjoint;
``interpolated.py``); memory then holds one output interval's steps. On a
fixed grid (``step_size``) the augmented system is stepped back as above,
given its Jacobian by structure (``augmented_jacobian``: the diagonal blocks
``J`` and ``-Jᵀ``, the quadratures left out; ``framework/partitioned_jacobian.py``),
one ``n × n`` Jacobian per step whatever the number of parameters; there the
reconstruction is exact on the slow manifold, and for fast transients on a
coarse grid ``checkpoint`` gives the exact discrete gradient. Per-sample
backsolve with an implicit method solves each output interval again, all
samples at once, and differentiates that re-solve step by step
(``_BacksolveBatchInterpolated``): memory again holds one interval's steps.

The tensors to differentiate are found by watching the forward solve
(``framework/capture.py``): parameters, what a closure captures, ``args``;
``adjoint_params`` given by the user replace that search.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable

import torch

from neurode import hookimpl
from neurode.framework.adjoint import AbstractAdjoint, AdjointResult, Problem
from neurode.framework.batch_loop import integrate_batch, raise_for_status
from neurode.framework.capture import tensors_requiring_grad
from neurode.framework.errors import InvalidInputError
from neurode.framework.jacobian import dense_jacobian, user_jacobian
from neurode.framework.loop import integrate, rms_norm
from neurode.framework.partitioned_jacobian import PartitionedJacobian
from neurode.framework.registry import get_registry
from neurode.framework.solution import SolveStats
from neurode.framework.solve import CONTROLLER_OPTIONS, build_problem, make_solver, signature_parameters
from neurode.framework.vector_field import VectorField, flatten_state, slice_args, unflatten_state
from neurode.plugins.adjoints.interpolated import interpolated_adjoint


class Backsolve(AbstractAdjoint):
    """Continuous adjoint (Chen et al. 2018): O(1) memory in the number of steps.

    Args:
        rtol, atol: tolerances of the backward solve (default: the forward ones).
        solver: solver name for the backward solve (default: the forward one).
        options: loop/solver options of the backward solve; ``norm`` may be
            ``"seminorm"`` (the default), ``"full"`` (torchdiffeq's default) or
            a callable on the tuple ``(g_t, y, a, *g_θ)``.
    """

    def __init__(self, *, rtol=None, atol=None, solver: str | None = None, options: dict | None = None) -> None:
        self.rtol = rtol
        self.atol = atol
        self.solver = solver
        # None: inherit the forward options (e.g. step_size), as torchdiffeq's odeint_adjoint does
        self.options = None if options is None else dict(options)
        norm = (self.options or {}).get("norm")
        if norm is not None and norm not in _NORMS and not callable(norm):
            raise InvalidInputError(f"backsolve norm must be one of {list(_NORMS)} or a callable, got {norm!r}")

    def solve(self, problem: Problem) -> AdjointResult:
        holder = _Holder(problem, self)
        func, capture = problem.watched_vector_field()
        if problem.per_sample:
            if tensors_requiring_grad(problem.args):
                raise InvalidInputError(
                    "per-sample backsolve does not differentiate the tensors of args (some require grad); use "
                    "adjoint='checkpoint' or 'direct', or detach them")
            with torch.no_grad():
                holder.batch = integrate_batch(problem.solver, func, problem.y0, problem.t, problem.config,
                                               stats=problem.stats)
            # an implicit method's adjoint runs along the stored forward solution (see the module docstring)
            stiff = takes_jacobian(self.solver if self.solver is not None else problem.solver_name)
            function = _BacksolveBatchInterpolated if stiff else _BacksolveBatchFunction
            ys = function.apply(holder, problem.y0, *problem.gradient_inputs(capture))
            return AdjointResult(ys, batch=holder.batch)
        with torch.no_grad():
            holder.result = problem.run_loop(func)
        out = _BacksolveFunction.apply(holder, problem.y0, problem.t, *problem.gradient_inputs(capture))
        ys = out[0] if problem.event_fn is not None else out
        if problem.event_fn is not None:
            return AdjointResult(ys, out[1])
        return AdjointResult(ys, None)


class _Holder:
    """Non-tensor context for the autograd function (autograd cannot take it as an input)."""

    def __init__(self, problem: Problem, method: Backsolve) -> None:
        self.problem = problem
        self.method = method
        self.event_t: float | None = None
        self.batch = None
        self.result = None  # the forward solve, run before the autograd function (its inputs are known then)


class _BacksolveFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, holder: _Holder, y0, t, *params):
        problem = holder.problem
        result, holder.result = holder.result, None
        ys = torch.stack(result.ys)
        ctx.holder = holder
        ctx.t_requires_grad = t.requires_grad
        if problem.event_fn is not None:
            event_t = torch.tensor(result.event_t, dtype=t.dtype, device=t.device)
            t_eff = torch.stack([t[0].detach(), event_t])
            ctx.save_for_backward(t_eff, ys, *params)
            ctx.event = True
            return ys, event_t
        ctx.save_for_backward(t.detach(), ys, *params)
        ctx.event = False
        return ys

    @staticmethod
    def backward(ctx, *grads):
        holder = ctx.holder
        problem = holder.problem
        method = holder.method
        t, ys, *params = ctx.saved_tensors
        grad_ys = grads[0]
        if grad_ys is None:
            grad_ys = torch.zeros_like(ys)
        params = tuple(params)
        t_requires_grad = ctx.t_requires_grad and not ctx.event

        inner = VectorField(problem.func, problem.y0, problem.shapes, problem.args)
        y_shape = ys.shape[1:]

        def augmented_dynamics(t_, aug):
            _, y, a, *_ = aug
            with torch.enable_grad():
                t_in = t_.detach().requires_grad_(t_requires_grad)
                y_in = y.detach().requires_grad_(True)  # a view of the flat state with the forward solve's strides
                f = inner(t_in, y_in)
                inputs = (t_in, y_in, *params) if t_requires_grad else (y_in, *params)
                if f.requires_grad:
                    vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True)
                else:  # f depends on none of them (dy/dt = g(t), t not differentiated): every product is zero
                    vjps = (None,) * len(inputs)
            if t_requires_grad:
                vjp_t, vjp_y, *vjp_params = vjps
                vjp_t = torch.zeros((), dtype=y.dtype, device=y.device) if vjp_t is None else vjp_t.to(y.dtype)
            else:
                vjp_y, *vjp_params = vjps
                vjp_t = torch.zeros((), dtype=y.dtype, device=y.device)
            vjp_y = torch.zeros_like(y) if vjp_y is None else vjp_y
            vjp_params = [torch.zeros_like(p) if g is None else g for p, g in zip(params, vjp_params)]
            return (vjp_t.reshape(()), f.detach(), vjp_y, *vjp_params)

        # torchdiffeq's adjoint callbacks: func's callback_*_adjoint are the backward solve's step callbacks,
        # called with the augmented state (g_t, y, a, *g_θ)
        for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
            callback = getattr(problem.func, name + "_adjoint", None)
            if callback is not None:
                setattr(augmented_dynamics, name, callback)

        # the backward problem: same machinery, augmented state, reverse time
        aug0 = (torch.zeros((), dtype=ys.dtype, device=ys.device), ys[-1], grad_ys[-1],
                *[torch.zeros_like(p, dtype=ys.dtype) for p in params])
        if method.options is not None:
            options = dict(method.options)
        elif method.solver is None:
            options = dict(problem.options)
        else:
            options = {}
        norm_choice = options.pop("norm", None)
        aug_norm = _augmented_norm(norm_choice, problem.config.norm, y_shape, [p.shape for p in params])
        # the backward solve keeps the forward step-size controller, unless its own options configure one
        if method.options is None:
            options = {k: v for k, v in options.items() if k not in CONTROLLER_OPTIONS}
        controller = None if CONTROLLER_OPTIONS & options.keys() else problem.config.controller
        backward_solver = method.solver if method.solver is not None else (problem.solver_name or problem.solver)
        rtol = method.rtol if method.rtol is not None else problem.config.rtol
        atol = method.atol if method.atol is not None else problem.config.atol
        state_jac = options.pop("jac", None)  # f's Jacobian: an implicit backward solve builds the adjoint's from it
        fixed_grid = (options.get("step_size") is not None or options.get("grid_constructor") is not None
                      or not getattr(problem.solver, "adaptive", True))
        if takes_jacobian(backward_solver) and not fixed_grid:
            # a stiff problem's state cannot be integrated back in time: the adjoint runs along the stored
            # forward solution instead (interpolated.py)
            adj_y0, time_vjps, adj_params = interpolated_adjoint(
                inner=inner, solver=problem.solver, config=problem.config, backward_solver=backward_solver,
                options=options, rtol=rtol, atol=atol, controller=controller, t=t, ys=ys, grad_ys=grad_ys,
                params=params, t_requires_grad=t_requires_grad, state_jac=state_jac, stats=problem.stats)
            problem.stats.nfe_backward += inner.nfe
            return (None, adj_y0, time_vjps, *adj_params)
        if takes_jacobian(backward_solver):
            # on a fixed grid the implicit method steps the augmented system back, with its Jacobian by structure
            options["jac"] = augmented_jacobian(inner, state_jac, y_shape)
        backward_problem, _ = build_problem(
            augmented_dynamics, aug0, t[-2:].flip(0) if len(t) >= 2 else t,
            solver=backward_solver,
            rtol=rtol, atol=atol, controller=controller, params=(), options=options,
        )
        backward_problem.config.norm = aug_norm
        shapes = backward_problem.shapes
        vf = VectorField(augmented_dynamics, backward_problem.y0, shapes)

        aug = list(aug0)
        time_vjps = torch.zeros(len(t), dtype=t.dtype, device=t.device) if t_requires_grad else None
        drift = 0.0
        fixed_grid = backward_problem.config.step_size or backward_problem.config.grid_constructor
        with torch.no_grad():
            for i in range(len(t) - 1, 0, -1):
                if t_requires_grad:
                    # moving an output time moves that output along f (dL/dt_i = <dL/dy_i, f(t_i, y_i)>)
                    f_i = inner(t[i], ys[i])
                    dLd_cur_t = torch.sum(f_i * grad_ys[i])
                    aug[0] = aug[0] - dLd_cur_t
                    time_vjps[i] = dLd_cur_t
                aug_flat, _ = flatten_state(tuple(aug))
                span = torch.stack([t[i], t[i - 1]])
                result = integrate(backward_problem.solver, vf, aug_flat, span, backward_problem.config,
                                   stats=backward_problem.stats)
                # carry the step size into the next interval instead of re-running the starting-step
                # heuristic (2 evaluations) at every output time, as torchdiffeq does
                h_next = abs(backward_problem.stats.h_next)
                if options.get("first_step") is None and h_next > 0 and h_next == h_next:
                    backward_problem.config.first_step = h_next
                aug = list(unflatten_state(result.ys[-1], shapes))
                if fixed_grid is None:  # a fixed grid's accuracy is not its tolerances'
                    drift = max(drift, _drift(aug[1], ys[i - 1], backward_problem.config))
                aug[1] = ys[i - 1]  # the forward solution is the better estimate of y
                aug[2] = aug[2] + grad_ys[i - 1]
            if t_requires_grad:
                time_vjps[0] = aug[0]

        if drift > _DRIFT_LIMIT:
            warnings.warn(
                f"backsolve: the state reconstructed backwards left the forward solution by {drift:.3g} times the "
                f"tolerance (atol + rtol |y|) at an output time, so the adjoint was integrated along a wrong "
                f"trajectory and the gradient is unreliable. This happens on stiff problems, whose decaying modes grow "
                f"backwards in time; use adjoint='checkpoint' (exact discrete gradients), or more output times",
                RuntimeWarning, stacklevel=2)
        stats = problem.stats
        stats.nfe_backward += inner.nfe
        stats.n_steps_backward += backward_problem.stats.n_steps  # summed over the output intervals
        stats.n_jac_backward += backward_problem.stats.n_jac
        stats.n_lu_backward += backward_problem.stats.n_lu
        adj_y0 = aug[2]
        adj_params = aug[3:]
        return (None, adj_y0, time_vjps, *adj_params)


class _BacksolveBatchFunction(torch.autograd.Function):
    """The continuous adjoint for the batch-parallel loop (per-sample time grids and step sizes).

    Backward, every sample runs its own adjoint ``[y, a]`` back through its
    own output times, one output interval per round (all samples that have
    that interval, in one batch-parallel solve), adding each output's
    cotangent to ``a`` as it passes (Chen et al. 2018, Algorithm 1). The
    parameter integral ``∫ aᵀ ∂f/∂θ dt`` is shared by all samples, so it is
    not part of the per-sample state: it is accumulated as the quadrature of
    each accepted backward step at the method's own nodes and weights — what
    integrating it in the state would give, with the seminorm (Kidger et al.
    2021). The quadrature reuses the graphs of the step's own stage
    evaluations (kept for that one step), so only the carried first stage is
    evaluated again: about 7 evaluations per backward step for dopri5's 6.
    Memory stays independent of the number of steps.
    """

    @staticmethod
    def forward(ctx, holder: _Holder, y0, *params):
        batch = holder.batch
        ctx.holder = holder
        ctx.save_for_backward(batch.ys, *params)
        return batch.ys

    @staticmethod
    def backward(ctx, grad_ys):
        holder = ctx.holder
        problem, method = holder.problem, holder.method
        ys, *params = ctx.saved_tensors
        params = tuple(params)
        options = dict(method.options or {})
        norm = options.pop("norm", None)
        if norm is not None and norm != "seminorm":
            raise InvalidInputError(
                f"per-sample backsolve's norm is per sample and a seminorm; norm={norm!r} is not supported")
        solver = problem.solver
        if method.solver is not None:
            solver, _ = make_solver(method.solver, {})
        if not getattr(solver, "supports_per_sample", False):
            raise InvalidInputError(f"per-sample backsolve needs a per-sample adaptive solver, got {solver!r}")
        config = dataclasses.replace(
            problem.config,
            rtol=problem.config.rtol if method.rtol is None else method.rtol,
            atol=problem.config.atol if method.atol is None else method.atol,
            first_step=options.get("first_step"),
            max_num_steps=int(options.get("max_num_steps", problem.config.max_num_steps)),
        )
        func, args = problem.func, problem.args
        counter = [0]

        def call(t_, y, a_args):
            counter[0] += 1
            return func(t_, y) if a_args is None else func(t_, y, a_args)

        # the stage evaluations of the current backward step, with their graphs, keyed by the stage tensor the
        # solver keeps (``step.dense``): the parameter quadrature reuses them instead of evaluating f again
        # (holding the stage tensor itself keeps its id from being reused while the entry exists)
        stage_graphs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

        def augmented_dynamics(t_, z, *maybe_args):
            a_args = maybe_args[0] if maybe_args else None
            y, a = z[:, 0], z[:, 1]
            with torch.enable_grad():
                # with the forward solve's strides: a compiled f would otherwise compile again for them
                y_in = y.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
                f = call(t_, y_in, a_args)
                (vjp_y,) = torch.autograd.grad(f, y_in, -a, allow_unused=True, retain_graph=bool(params))
            if vjp_y is None:
                vjp_y = torch.zeros_like(y)
            k = torch.stack([f.detach(), vjp_y], dim=1)
            if params:
                stage_graphs[id(k)] = (k, f, a)
            return k

        param_grads = [torch.zeros_like(p) for p in params]
        round_args = [None]

        def parameter_quadrature(step, accept, act):
            # g_θ += h Σ_i b_i (-a_iᵀ ∂f/∂θ(t_i, y_i)) for accepted samples (Chen et al. 2018, eq. 5)
            if not params:
                return
            a_args = slice_args(round_args[0], act)
            weight = step.h.to(ys.dtype) * accept.to(ys.dtype)
            outs, cotangents = [], []
            kept = {}  # stage index -> (f with its graph, a), for the stages this step evaluated
            for i, k_i in enumerate(step.dense):
                entry = stage_graphs.get(id(k_i))
                if entry is not None and entry[0] is k_i:
                    kept[i] = entry[1:]
            weights = solver.stage_weights
            # the other stages (the carried first stage, FSAL, of an earlier iteration) are evaluated again
            missing = [i for i, b_i in enumerate(weights) if b_i != 0.0 and i not in kept]
            points = dict(zip(missing, solver.stage_points_per_sample(step, missing)))
            with torch.enable_grad():
                for i, b_i in enumerate(weights):
                    if b_i == 0.0:
                        continue
                    if i in kept:
                        f_i, a_i = kept[i]
                    else:
                        t_i, z_i, _ = points[i]
                        # y requires grad as in every other evaluation under grad mode (one graph of a compiled f)
                        y_i = z_i[:, 0].detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
                        f_i, a_i = call(t_i, y_i, a_args), z_i[:, 1]
                    outs.append(f_i)
                    w = (weight * b_i).view(-1, *([1] * (a_i.ndim - 1)))
                    cotangents.append(-a_i * w)
                grads = torch.autograd.grad(outs, params, cotangents, allow_unused=True)
            stage_graphs.clear()  # one step's graphs at a time: memory stays independent of the number of steps
            for k, g in enumerate(grads):
                if g is not None:
                    param_grads[k] = param_grads[k] + g

        t = problem.t.detach().to(torch.float64)
        n_out = torch.isfinite(t).sum(dim=1)
        batch = t.shape[0]
        rows = torch.arange(batch, device=t.device)
        a = grad_ys[n_out - 1, rows].clone()
        stats = SolveStats()
        with torch.no_grad():
            for r in range(1, int(n_out.max())):
                members = torch.nonzero(n_out - 1 >= r).flatten()
                j_start = n_out[members] - r
                j_end = j_start - 1
                t_seg = torch.stack([t[members, j_start], t[members, j_end]], dim=1)
                z0 = torch.stack([ys[j_start, members], a[members]], dim=1)
                round_args[0] = slice_args(args, members)
                vf = VectorField(augmented_dynamics, z0, None, round_args[0])
                result = integrate_batch(solver, vf, z0, t_seg, config, stats=stats, on_step=parameter_quadrature)
                raise_for_status(result, stats)
                a[members] = result.ys[-1][:, 1] + grad_ys[j_end, members]
        problem.stats.nfe_backward += counter[0]
        problem.stats.n_steps_backward += stats.n_steps
        return (None, a, *param_grads)


class _BacksolveBatchInterpolated(_BacksolveBatchFunction):
    """Per-sample backsolve with an implicit method: every sample at once, one output interval per round.

    Integrating the adjoint of a stiff problem back beside ``y`` follows the stiff modes, which grow backwards
    (the module docstring). Per sample, each output interval is instead solved again from its stored start, in
    one batch-parallel solve of all the samples that have that interval, and differentiated step by step
    (``checkpoint``'s pass over that interval: the discrete adjoint of the re-solve, exact for it, and within the
    tolerance of the continuous adjoint, as the re-solve is within it of the forward solve). Memory holds one
    interval's step states, as backsolve's interpolated mode in the shared loop holds one interval's steps; the
    cost is about two forward solves and one backward pass (was one sample after another: 6.3 s against 0.7 s
    for checkpoint per training step of ``neurode train --solver rodas4``). The forward pass is the parent's.
    """

    @staticmethod
    def forward(ctx, holder: _Holder, y0, *params):
        ctx.inputs = params  # the very tensors f reads: the re-solves' graphs reach these objects
        return _BacksolveBatchFunction.forward(ctx, holder, y0, *params)

    @staticmethod
    def backward(ctx, grad_ys):
        from neurode.plugins.adjoints.checkpoint import Checkpoint

        problem, method = ctx.holder.problem, ctx.holder.method
        ys = ctx.saved_tensors[0]
        params = ctx.inputs
        options = dict(method.options or {})
        options.pop("norm", None)  # the adjoint alone is integrated: there is no parameter part to leave out
        if options or (method.solver is not None and method.solver != problem.solver_name):
            raise InvalidInputError(
                "per-sample backsolve with an implicit method differentiates the forward method's own re-solve of "
                f"each output interval: it takes no backward solver or options, got solver={method.solver!r}, "
                f"options {sorted(options)}")
        config = dataclasses.replace(
            problem.config, rtol=problem.config.rtol if method.rtol is None else method.rtol,
            atol=problem.config.atol if method.atol is None else method.atol)
        t = problem.t.detach()
        n_out = torch.isfinite(t).sum(dim=1)
        rows = torch.arange(t.shape[0], device=t.device)
        a = grad_ys[n_out - 1, rows].clone()
        param_grads = [torch.zeros_like(p) for p in params]
        stats = problem.stats
        for r in range(1, int(n_out.max())):
            members = torch.nonzero(n_out - 1 >= r).flatten()
            j_end = n_out[members] - r
            j_start = j_end - 1
            y_in = ys[j_start, members].detach().requires_grad_(True)
            interval = dataclasses.replace(
                problem, y0=y_in, t=torch.stack([t[members, j_start], t[members, j_end]], dim=1), config=config,
                args=slice_args(problem.args, members), stats=SolveStats(), dense=False)
            with torch.enable_grad():
                y_end = Checkpoint().solve(interval).ys[-1]
                grads = torch.autograd.grad(y_end, (y_in, *params), a[members], allow_unused=True)
            a[members] = grads[0] + grad_ys[j_start, members]
            for k, g in enumerate(grads[1:]):
                if g is not None:
                    param_grads[k] = param_grads[k] + g
            done = interval.stats
            stats.nfe_backward += done.nfe + done.nfe_backward
            stats.n_steps_backward += done.n_steps + done.n_steps_backward
            stats.n_jac_backward += done.n_jac + done.n_jac_backward
            stats.n_lu_backward += done.n_lu + done.n_lu_backward
        return (None, a, *param_grads)


#: how far (in units of the tolerance) the backward-reconstructed state may leave the forward one before the
#: gradient is reported unreliable: far above an accurate solve's drift (a few tolerances), far below a wrong one's
_DRIFT_LIMIT = 1e6


def _drift(y_back: torch.Tensor, y_forward: torch.Tensor, config) -> float:
    """``max |y_back - y_forward| / (atol + rtol |y_forward|)``, with the solve's tolerances (their smallest entries
    where they are per component)."""
    rtol = float(torch.as_tensor(config.rtol).min())
    atol = float(torch.as_tensor(config.atol).min())
    scale = atol + rtol * y_forward.abs()
    return float(((y_back - y_forward).abs() / scale).max()) if y_forward.numel() else 0.0


def takes_jacobian(solver) -> bool:
    """Whether the registered solver ``solver`` (a name) takes a ``jac`` option (an implicit method)."""
    if not isinstance(solver, str):
        return False  # an instance is configured by its maker
    factory = get_registry().get("solver", solver).obj
    bound = factory.keywords if isinstance(factory, functools.partial) else {}
    return "jac" not in bound and any(p.name == "jac" for p in signature_parameters(factory))


def augmented_jacobian(field: VectorField, state_jac: Callable | None, y_shape) -> Callable:
    """``jac(t, x)`` of the adjoint's augmented system ``x = (g_t, y, a, *g_θ)`` (flattened) as a
    :class:`PartitionedJacobian`: the diagonal blocks ``J`` (for ``y``) and ``-Jᵀ`` (for ``a``) of its block
    lower-triangular Jacobian, the quadratures ``g_t``, ``g_θ`` left out (``partitioned_jacobian.py``).

    One ``n × n`` Jacobian ``J = ∂f/∂y`` per call — ``state_jac(t, y)`` when the user gave ``f``'s, else
    autograd of ``field`` — whatever the number of parameters; dense over the augmented state it would be
    one evaluation per parameter and a factorisation cubic in their number.
    """
    n = math.prod(y_shape)

    def jac(t_, x):
        y = x[1 : 1 + n].view(y_shape)
        if state_jac is not None:
            state = user_jacobian(state_jac, t_, y, per_sample=False)
        else:
            state = dense_jacobian(lambda z: field(t_, z), y)
        return PartitionedJacobian(x.numel(), (1, 1 + n), torch.stack([state, -state.mT]))

    return jac


#: the named norms of the backward solve: without (default) or with the parameter part
_NORMS = ("seminorm", "full")


def _augmented_norm(choice, state_norm: Callable | None, y_shape, param_shapes):
    """Error norm of the augmented state ``(g_t, y, a, *g_θ)`` (torchdiffeq ``handle_adjoint_norm_``).

    Returns a 0-d tensor, so the loop reads it with the step's one host sync.
    """
    base = state_norm if state_norm is not None else rms_norm
    n_y = math.prod(y_shape)
    sizes = [1, n_y, n_y, *(math.prod(s) for s in param_shapes)]

    if callable(choice):
        def custom(x):
            g_t, y, a, *gp = x.split(sizes)
            return choice((g_t.reshape(()), y.view(y_shape), a.view(y_shape), *gp))
        return custom

    seminorm = choice in (None, "seminorm")

    def norm(x):
        g_t, y, a, *gp = x.split(sizes)
        values = [g_t.abs().max()] + [torch.as_tensor(base(v.view(y_shape)), dtype=x.dtype, device=x.device)
                                      for v in (y, a)]
        if not seminorm:
            values.extend(rms_norm(p) for p in gp)
        return torch.stack(values).max()

    return norm


@hookimpl
def register_adjoints(register):
    register("backsolve", Backsolve)
