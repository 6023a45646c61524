"""Built-in plugin: the Adams multistep methods ``explicit_adams`` and ``implicit_adams``.

Fixed-grid Adams methods with torchdiffeq's semantics (``AdamsBashforth``,
``AdamsBashforthMoulton`` in ``torchdiffeq/_impl/fixed_adams.py``), so that
``neurode.odeint(..., method="implicit_adams")`` reproduces torchdiffeq to
round-off:

* every step evaluates ``f(t_n, y_n)`` and pushes it onto the derivative
  history (newest first, at most ``max_order - 1`` values);
* with fewer than three values in the history the step is an RK4 step
  (Kutta's 3/8 rule, torchdiffeq's ``rk4_alt_step_func``) that reuses
  ``f(t_n, y_n)``; this bootstraps the history;
* otherwise the k-value history gives the k-step Adams–Bashforth predictor
  and, for ``implicit_adams``, the Adams–Moulton corrector of order k + 1,
  solved by functional iteration (at most ``max_iters`` evaluations of ``f``)
  until successive increments agree to ``rtol``/``atol`` in the max norm; if
  they do not, a warning is issued and the oldest history value is dropped,
  which lowers the order of the next step.

The coefficients are data (``tableaus/adams.py``; Hairer, Nørsett & Wanner I,
§III.1). The derivative history is the step's carried ``state``: ``step`` is a
pure function ``(y0, history0) -> (y1, history1)``, so the checkpointed
adjoint can recompute any step and one solver instance can serve any number of
solves.
"""

from __future__ import annotations

import warnings

import torch

from neurode import hookimpl
from neurode.framework.errors import NonFiniteStateError
from neurode.framework.explicit_rk import ExplicitRungeKutta
from neurode.framework.solver import PERTURB_NEXT, PERTURB_NONE, PERTURB_PREV, AbstractSolver, Step
from neurode.plugins.solvers.tableaus.adams import ADAMS_BASHFORTH, ADAMS_MOULTON, MAX_ORDER
from neurode.plugins.solvers.tableaus.low_order import RK4_38

#: explicit_adams's default max_order: the 4-step Adams–Bashforth formula, stable for h|λ| < 0.3 on the real axis
STABLE_EXPLICIT_ORDER = 5
#: an explicit step whose order-k and order-(k-1) predictions differ by this fraction of the state is unstable
INSTABILITY_FRACTION = 0.1
#: Fewest history values an Adams step uses (torchdiffeq's ``_MIN_ORDER - 1``); fewer: an RK4 step.
MIN_HISTORY = 3
#: Corrector tolerances when the solve's are not handed to the solver (torchdiffeq's ``odeint`` defaults).
DEFAULT_RTOL, DEFAULT_ATOL = 1e-7, 1e-9
_ONE_THIRD, _TWO_THIRDS = 1 / 3, 2 / 3

_BASHFORTH = tuple(tuple(float(c) for c in row) for row in ADAMS_BASHFORTH)
_MOULTON = tuple(tuple(float(c) for c in row) for row in ADAMS_MOULTON)


def _weighted_sum(coeffs, values, scale: float = 1.0) -> torch.Tensor:
    """``Σ_j (scale c_j) v_j``, multiplied and added in torchdiffeq's order (unfused, for equal round-off)."""
    acc = values[0] * (scale * coeffs[0])
    for c, v in zip(coeffs[1:], values[1:]):
        acc = acc + v * (scale * c)
    return acc


class AdamsBashforthMoulton(AbstractSolver):
    """Adams–Bashforth predictor, Adams–Moulton corrector by functional iteration (fixed grid).

    Options (torchdiffeq's):
        implicit: apply the Adams–Moulton corrector (default ``True``; ``False``
            is ``explicit_adams``).
        max_iters: most corrector evaluations per step (default 4).
        max_order: at most ``max_order - 1`` past derivatives are kept, so the
            predictor has order ``<= max_order - 1`` and the corrector order
            ``<= max_order`` (default and largest 12; ``explicit_adams`` defaults to 5, see
            :class:`AdamsBashforth`). Below 4 every step is RK4.
        interp: ``"linear"`` (default) or ``"cubic"`` Hermite output between grid points.
        perturb: evaluate ``f`` just after ``t_n`` and just before ``t_{n+1}``.
        rtol, atol: the corrector's convergence tolerances; neurode's
            ``odeint``/``solve`` tolerances once the framework hands them to
            solvers, else ``1e-7``/``1e-9`` (torchdiffeq's defaults).

    Order. ``order = 4``, as torchdiffeq declares. A fixed number of low-order
    steps (the RK4 start-up, then the 3-step predictor and order-4 corrector)
    limits the order of the whole solve, whatever the later high-order steps
    do. Measured (slope of log error against log step size on a smooth linear
    problem, tests/plugins/solvers/test_adams.py), the global error falls as

    * ``explicit_adams``: ``h^3`` with ``max_order=4`` (3-step Adams–Bashforth
      throughout); ``h^4`` with ``max_order >= 5`` (the one 3-step step after
      start-up dominates). With ``max_order=12`` (torchdiffeq's default) the 11-step
      formula's stability region is tiny, so ``h |λ|`` must be small (below
      about 0.003 here) before any convergence shows.
    * ``implicit_adams``: ``h^4`` with ``max_order=4``; ``h^5`` with
      ``max_order >= 5`` (the RK4 start-up steps' O(h^5) local errors), down
      to the floor set by the corrector's ``rtol``/``atol``. A corrector
      that does not converge drops history and falls back towards order 4.
    """

    name = "implicit_adams"
    order = 4
    adaptive = False

    def __init__(
        self,
        *,
        implicit: bool = True,
        max_iters: int = 4,
        max_order: int = MAX_ORDER,
        interp: str = "linear",
        perturb: bool = False,
        rtol: float | torch.Tensor | None = None,
        atol: float | torch.Tensor | None = None,
    ) -> None:
        if isinstance(max_order, bool) or not isinstance(max_order, int) or not 1 <= max_order <= MAX_ORDER:
            raise ValueError(f"max_order must be an integer from 1 to {MAX_ORDER}, got {max_order!r}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
        for label, tol in (("rtol", rtol), ("atol", atol)):
            if tol is not None and not isinstance(tol, (int, float, torch.Tensor)):
                raise ValueError(f"{label} must be a number or a tensor, got {tol!r}")
        if max_order < MIN_HISTORY + 1:
            warnings.warn(f"max_order is below {MIN_HISTORY + 1}, so the solver reduces to `rk4`.", stacklevel=2)
        self.implicit = bool(implicit)
        self.max_iters = max_iters
        self.max_order = max_order
        self.perturb = bool(perturb)
        self.rtol = DEFAULT_RTOL if rtol is None else rtol
        self.atol = DEFAULT_ATOL if atol is None else atol
        # Between grid points an Adams step is interpolated as torchdiffeq's FixedGridODESolver interpolates
        # any fixed-grid method (linear, or cubic Hermite from f at both ends); the generic RK solver does
        # exactly that for a tableau without dense output, so it serves as the interpolant here.
        self._output = ExplicitRungeKutta(RK4_38, interp=interp)
        self.interp = interp

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(max_order={self.max_order}, max_iters={self.max_iters}, "
                f"interp={self.interp!r}, perturb={self.perturb})")

    def init(self, func, t0, y0):
        return ()  # the derivative history, newest first

    def step(self, func, t0, h, y0, state):
        perturb = self.perturb
        f0 = func(t0, y0, PERTURB_NEXT if perturb else PERTURB_NONE)
        history = ((f0,) + tuple(state))[: self.max_order - 1]
        k = len(history)
        t1 = t0 + h
        if k < MIN_HISTORY:
            dy = self._rk4_increment(func, t0, h, t1, y0, f0)
        else:
            dy = _weighted_sum(_BASHFORTH[k], history, h)
            if not self.implicit:
                self._check_stable(dy, _weighted_sum(_BASHFORTH[k - 1], history[:-1], h), y0, t0, h, k)
            if self.implicit:
                dy, converged = self._correct(func, t1, h, y0, dy, history)
                if not converged:
                    warnings.warn(
                        f"Functional iteration did not converge. Solution may be incorrect: the Adams–Moulton "
                        f"corrector did not meet rtol/atol within max_iters={self.max_iters} in the step from "
                        f"t={t0:.9g} with step size {h:.3g} (reduce step_size or raise max_iters); the next step "
                        f"uses one past derivative fewer.",
                        stacklevel=2,
                    )
                    history = history[:-1]
        return Step(t0, h, y0, y0 + dy, tuple(state), history, None, dense=[f0], func=func)

    @staticmethod
    def _check_stable(dy, dy_lower, y0, t0, h, k) -> None:
        """Raise when the k-step prediction departs from the (k-1)-step one by a fraction of the state.

        On a resolved solution the two differ by O(h^k) (the leading error term); a parasitic root of the
        multistep formula outside the unit circle makes the backward differences of the history, and so the
        difference, grow geometrically until they are as large as the state itself.
        """
        with torch.no_grad():
            scale = y0.abs().max() + (y0 + dy).abs().max()
            unstable = bool((dy - dy_lower).abs().max() > INSTABILITY_FRACTION * scale)
        if unstable:
            raise NonFiniteStateError(
                f"explicit_adams became unstable in the step from t={t0:.9g} with step_size={abs(h):.3g}: the "
                f"{k}-step Adams–Bashforth formula is outside its stability region (its parasitic solutions grow); "
                "use a smaller step_size or a lower max_order (the default 5 is stable for h|lambda| < 0.3)",
                t=t0, dt=h)

    def _correct(self, func, t1, h, y0, dy, history):
        """Functional iteration on ``dy = h β*_0 f(t1, y0 + dy) + h Σ_j β*_j f_{n+1-j}`` (HNW I, §III.1)."""
        moulton = _MOULTON[len(history) + 1]
        delta = _weighted_sum(moulton[1:], history) * h
        h_beta0 = h * moulton[0]
        perturb = PERTURB_PREV if self.perturb else PERTURB_NONE
        converged = False
        for _ in range(self.max_iters):
            dy_old = dy
            dy = func(t1, y0 + dy, perturb) * h_beta0 + delta
            with torch.no_grad():
                # torchdiffeq's _compute_error_ratio with the max norm, on successive increments
                scale = torch.maximum(dy_old.abs(), dy.abs()) * self.rtol + self.atol
                converged = bool(((dy_old - dy).abs() / scale).max() < 1)
            if converged:
                break
        return dy, converged

    def _rk4_increment(self, func, t0, h, t1, y0, k1):
        # Kutta's 3/8 rule written as torchdiffeq's rk4_alt_step_func, so that round-off agrees.
        k2 = func(t0 + h * _ONE_THIRD, y0 + k1 * h * _ONE_THIRD)
        k3 = func(t0 + h * _TWO_THIRDS, y0 + (k2 - k1 * _ONE_THIRD) * h)
        k4 = func(t1, y0 + (k1 - k2 + k3) * h, PERTURB_PREV if self.perturb else PERTURB_NONE)
        return (k1 + (k2 + k3) * 3 + k4) * h * 0.125

    def interpolate(self, step: Step, theta):
        return self._output.interpolate(step, theta)


class AdamsBashforth(AdamsBashforthMoulton):
    """Adams–Bashforth (explicit) multistep method on a fixed grid; RK4 start-up (torchdiffeq's ``explicit_adams``).

    The default ``max_order`` is 5 (the 4-step formula), not torchdiffeq's 12: the stability interval of the
    k-step Adams–Bashforth formula shrinks fast with k (Hairer & Wanner II, §V.1, Fig. 1.1), and with 11 steps
    y' = A y at h = 0.01 grows by 1e8 while h = 0.001 is fine. An unstable solve is not returned: a step
    whose difference between the k-step and the (k-1)-step prediction (the parasitic solutions' signature) is
    comparable to the state raises :class:`~neurode.framework.errors.NonFiniteStateError`.
    """

    name = "explicit_adams"

    def __init__(
        self,
        *,
        max_iters: int = 4,
        max_order: int = STABLE_EXPLICIT_ORDER,
        interp: str = "linear",
        perturb: bool = False,
        rtol: float | torch.Tensor | None = None,
        atol: float | torch.Tensor | None = None,
    ) -> None:
        super().__init__(implicit=False, max_iters=max_iters, max_order=max_order, interp=interp, perturb=perturb,
                         rtol=rtol, atol=atol)


@hookimpl
def register_solvers(register):
    register("explicit_adams", AdamsBashforth,
             description="Adams–Bashforth multistep, up to 11 steps, RK4 start-up (fixed step)")
    register("implicit_adams", AdamsBashforthMoulton,
             description="Adams–Bashforth–Moulton predictor-corrector, functional iteration (fixed step)")
