"""A Runge–Kutta step compiled together with the vector field (``neurode.solve(..., compile=True)``).

In eager mode every stage combination of a step is a separate PyTorch
operation, each costing about a microsecond of dispatch: on small problems
(a 2-d state, batch 1) a dopri5 step then adds ~40 such operations to its six
evaluations of ``f``. Compiling the whole step — the six evaluations of the
user's ``f`` *and* the stage combinations, as diffrax does under ``jax.jit`` —
turns it into one call of generated code. The loop (controller, outputs,
events) stays eager: it branches on every accept/reject decision.

What is compiled is a pure function ``(t0, h, y0, k0) -> (y1, error, stages)``
of tensors: ``t0`` and ``h`` enter as 0-d float64 tensors, so a new step size
does not recompile. It recompiles when the state's shape or dtype changes
(``torch.compile``'s guards, ``dynamic=False``); the first call costs seconds.
The method and its step sequence are the eager ones; the stage arithmetic is
done in the state's dtype (eager folds ``a_ij * h`` in float64 first), so
results agree with the eager solve to round-off, not bit for bit.
Supported: explicit Runge–Kutta tableaus, tensor (not tuple) states, the
``direct``, ``checkpoint`` and ``backsolve`` gradient methods (backsolve's
backward solve stays eager). Not supported: per-sample solving, ``perturb``.
"""

from __future__ import annotations

import torch

from neurode.framework.errors import InvalidInputError, NeurodeError
from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.framework.solver import AbstractSolver, Step


class CompileError(NeurodeError):
    """``compile=True`` was asked for, but ``torch.compile`` could not build the step."""


def _step_function(tableau, with_args: bool, time_dtype: torch.dtype):
    """The step of ``tableau`` as one pure function of ``f`` and tensors (the thing that is compiled).

    ``f`` is an argument, not a closure variable: the compiled function then holds no reference to it, and
    one compiled function serves every vector field (``torch.compile`` guards on which one it traced).
    """
    stages = [(tableau.stage_terms[i], tableau.c[i]) for i in range(1, tableau.stages)]
    error_terms = tableau.error_terms
    last_is_solution, solution_terms = tableau.solution_is_last_stage, tableau.solution_terms
    # torchdiffeq evaluates stages with c == 1 just before t1 (Perturb.PREV) in adaptive solves
    before_end = tableau.adaptive

    def combine(base, terms, k, h):
        # the increment first, then base once (as eager's _combine: one rounding at |base|)
        increment = None
        for j, coef in terms:
            term = coef * k[j]
            increment = term if increment is None else increment + term
        if increment is None:
            return base
        return h * increment if base is None else base + h * increment

    def step(user, t0: torch.Tensor, h: torch.Tensor, y0: torch.Tensor, k0: torch.Tensor, args=None):
        h_y = h.to(y0.dtype)
        k = [k0]
        y_stage = y0
        for terms, c in stages:
            y_stage = combine(y0, terms, k, h_y)
            if c == 1.0 and before_end:
                t_i = torch.nextafter((t0 + h).to(time_dtype), t0.to(time_dtype))
            else:
                t_i = (t0 + c * h).to(time_dtype)
            k.append(user(t_i, y_stage, args) if with_args else user(t_i, y_stage))
        y1 = y_stage if last_is_solution else combine(y0, solution_terms, k, h_y)
        error = None if error_terms is None else combine(None, error_terms, k, h_y)
        return y1, error, k

    return step  # the first stage k0 = f(t0, y0) is passed in: carried (FSAL) or evaluated eagerly


#: compiled steps by (tableau, args?, time dtype, compile options): a new solve reuses the compiled function
#: (creating a ``torch.compile`` wrapper costs about a millisecond); ``torch.compile`` keeps one entry per vector
#: field it has traced, up to ``torch._dynamo.config.cache_size_limit``, after which it runs the step eagerly
_COMPILED: dict = {}


class CompiledRungeKutta(AbstractSolver):
    """An :class:`ExplicitRungeKutta` whose step (evaluations of ``f`` included) runs as compiled code.

    ``compile_options`` go to ``torch.compile`` (default ``dynamic=False,
    options={"cpp_wrapper": True}``).
    """

    supports_per_sample = False
    #: the compiled step evaluates f inside generated code, where the tangent replay cannot see the stage points:
    #: no tangent error control (documented at ``solve(compile=...)``)
    supports_tangent = False

    def __init__(self, solver: ExplicitRungeKutta, **compile_options) -> None:
        if not isinstance(solver, ExplicitRungeKutta):
            raise InvalidInputError(f"compile=True needs an explicit Runge–Kutta solver, got {solver!r}")
        if solver.perturb:
            raise InvalidInputError("compile=True does not support perturb=True")
        self.inner = solver
        self.order, self.adaptive, self.error_order = solver.order, solver.adaptive, solver.error_order
        # cpp_wrapper: the generated code is called from C++, not through a Python wrapper; on small problems
        # that wrapper would cost as much as the stage arithmetic that compiling saves
        self.compile_options = {"dynamic": False, "options": {"cpp_wrapper": True}, **compile_options}

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def initial_step_order(self) -> int:
        return self.inner.initial_step_order

    def __repr__(self) -> str:
        return f"CompiledRungeKutta({self.inner.name!r})"

    def _function_for(self, func):
        if func.shapes is not None:
            raise InvalidInputError("compile=True needs a tensor state, not a tuple of tensors")
        key = (id(self.inner.tableau), func.args is not None, func.time_dtype, repr(self.compile_options))
        entry = _COMPILED.get(key)
        if entry is None or entry[0] is not self.inner.tableau:
            step = _step_function(self.inner.tableau, func.args is not None, func.time_dtype)
            entry = _COMPILED[key] = (self.inner.tableau, torch.compile(step, **self.compile_options))
        return entry[1]

    def init(self, func, t0, y0):
        return self.inner.init(func, t0, y0)

    def after_jump(self, func, t, y, state):
        return self.inner.after_jump(func, t, y, state)

    def step(self, func, t0, h, y0, state):
        tab = self.inner.tableau
        k0 = state[0] if tab.fsal else func(t0, y0)
        compiled = self._function_for(func)
        t0_t = torch.scalar_tensor(t0, dtype=torch.float64, device=y0.device)
        h_t = torch.scalar_tensor(h, dtype=torch.float64, device=y0.device)
        try:
            if func.args is None:
                y1, error, k = compiled(func.func, t0_t, h_t, y0, k0)
            else:
                y1, error, k = compiled(func.func, t0_t, h_t, y0, k0, func.args)
        except torch._dynamo.exc.BackendCompilerFailed as exc:
            raise CompileError(
                f"compile=True: torch.compile could not build the {self.inner.name} step ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); Inductor's CPU backend needs a working C++ "
                f"compiler. Solve without compile=True, or pass compile={{'backend': ...}} to choose another backend"
            ) from exc
        func.nfe += tab.stages - 1
        return Step(t0, h, y0, y1, state, (k[-1],) if tab.fsal else (), error, dense=list(k), func=func)

    def interpolate(self, step: Step, theta):
        return self.inner.interpolate(step, theta)
