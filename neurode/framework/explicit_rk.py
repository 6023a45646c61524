"""The generic explicit Runge–Kutta solver: any :class:`ButcherTableau`, one class.

Stage combinations are chains of ``acc.add_(k_j, alpha=a_ij)`` over the
non-zero coefficients only, added to ``y0`` once with the step size as the
scalar (``torch.add(y0, acc, alpha=h)``): on small states every tensor
operation costs microseconds of dispatch, and this is the cheapest form that
autograd can still differentiate (in-place adds on a fresh accumulator need no
saved tensors) and that rounds at ``|y0|`` once per combination.
"""

from __future__ import annotations

import math
import struct

import torch

from neurode.framework.solver import PERTURB_NEXT, PERTURB_NONE, PERTURB_PREV, AbstractSolver, Step
from neurode.framework.tableau import ButcherTableau

_INTERPS = ("linear", "cubic")
_F32, _I32 = struct.Struct("<f"), struct.Struct("<i")
_F32_MAX = 3.4028234663852886e38  # the largest finite float32
_F32_TINY = 1.401298464324817e-45  # the smallest positive (subnormal) float32
_F32_MAX_ROUNDING = 3.4028235677973366e38  # from here up, rounding to float32 gives inf


def _combine(base: torch.Tensor | None, terms, k: list[torch.Tensor], h: float) -> torch.Tensor:
    """``base + h Σ coef_j k_j`` over ``terms = ((j, coef_j), ...)``.

    The increment is summed first and added to ``base`` once, as torchdiffeq does: adding each term to
    ``base`` in turn rounds at ``|base|`` once per term, a systematic drift that in float32 over a few
    hundred steps is several times that of one rounding per combination.
    """
    if not terms:
        return torch.zeros_like(k[0]) if base is None else base.clone()
    j, coef = terms[0]
    if len(terms) == 1:
        return torch.mul(k[j], coef * h) if base is None else torch.add(base, k[j], alpha=coef * h)
    acc = torch.mul(k[j], coef)
    for j, coef in terms[1:]:
        acc.add_(k[j], alpha=coef)
    return acc.mul_(h) if base is None else torch.add(base, acc, alpha=h)


def _combine_per_sample(base: torch.Tensor | None, terms, k: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """``base + h_b Σ coef_j k_j``, a step size per sample (``h`` broadcastable to ``k``), summed as `_combine`."""
    if not terms:
        return torch.zeros_like(k[0]) if base is None else base.clone()
    j, coef = terms[0]
    if len(terms) == 1:
        return torch.mul(k[j], h).mul_(coef) if base is None else torch.addcmul(base, k[j], h, value=coef)
    acc = torch.mul(k[j], coef)
    for j, coef in terms[1:]:
        acc.add_(k[j], alpha=coef)
    return acc.mul_(h) if base is None else torch.addcmul(base, acc, h)


def prev_time(t: float, dtype: torch.dtype) -> float:
    """The largest time below ``t`` (rounded to ``dtype``) in ``dtype`` (torchdiffeq's ``Perturb.PREV``).

    Any dtype other than float64 uses float32's spacing, as before.
    """
    if dtype == torch.float64:
        return math.nextafter(t, -math.inf)
    # round to float32, then one float32 ulp down through the bit pattern (numpy scalars cost ~2 us per step)
    if abs(t) >= _F32_MAX_ROUNDING:
        x = math.copysign(math.inf, t)
    else:
        (x,) = _F32.unpack(_F32.pack(t))
    if x == 0.0:
        return -_F32_TINY
    if math.isnan(x) or x == -math.inf:
        return x
    if x == math.inf:
        return _F32_MAX
    (bits,) = _I32.unpack(_F32.pack(x))
    (below,) = _F32.unpack(_I32.pack(bits - 1 if x > 0 else bits + 1))
    return below


class ExplicitRungeKutta(AbstractSolver):
    """An explicit Runge–Kutta method given by its Butcher tableau.

    Options (torchdiffeq's, for methods without a dense interpolant):
        interp: ``"linear"`` (default) or ``"cubic"`` (Hermite, one extra
            evaluation of ``f`` per step that produces an output) between steps.
        perturb: evaluate ``f`` just after ``t0`` and just before ``t1`` so that
            discontinuities on the grid are seen from the right side.
        torchdiffeq_interpolant: interpolate outputs with the tableau's
            ``torchdiffeq_interpolant`` where it has one (dopri8's quartic), for
            outputs identical to torchdiffeq's; ``neurode.odeint`` sets it.
    """

    def __init__(self, tableau: ButcherTableau, *, interp: str = "linear", perturb: bool = False,
                 torchdiffeq_interpolant: bool = False) -> None:
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(f"tableau must be a ButcherTableau, got {type(tableau).__name__}")
        if interp not in _INTERPS:
            raise ValueError(f"interp must be one of {_INTERPS}, got {interp!r}")
        self.tableau = tableau
        self.order = tableau.order
        self.adaptive = tableau.adaptive
        self.error_order = tableau.error_order
        self.interp = interp
        self.perturb = bool(perturb)
        # torchdiffeq evaluates stages with c == 1 just before t1 (for jump_t).
        # stages 1..s-1 as (nonzero a_ij terms, c_i, evaluated just before t1?): torchdiffeq evaluates stages
        # with c == 1 just before t1 in adaptive (and perturbed) solves, so that jump_t discontinuities are seen
        # from the left
        self._stages = tuple(
            (tableau.stage_terms[i], tableau.c[i], tableau.c[i] == 1.0 and (tableau.adaptive or self.perturb))
            for i in range(1, tableau.stages)
        )
        self._interpolant_cache: dict = {}
        if torchdiffeq_interpolant and tableau.torchdiffeq_interpolant is not None:
            self._interpolant, self._dense_stages = tableau.torchdiffeq_interpolant, ()
        else:
            self._interpolant = tableau.interpolant
            self._dense_stages = tuple(zip(tableau.dense_c, tableau.dense_stage_terms))
        self._centered = None if self._interpolant is None else _end_exact_form(self._interpolant, tableau.b)

    @property
    def name(self) -> str:
        return self.tableau.name

    def __repr__(self) -> str:
        return f"ExplicitRungeKutta({self.tableau.name!r})"

    @property
    def initial_step_order(self) -> int:
        return self.tableau.error_order

    # ------------------------------------------------------------------ stepping

    def init(self, func, t0, y0):
        if self.tableau.fsal:
            return (func(t0, y0),)
        return ()

    def after_jump(self, func, t, y, state):
        # f is discontinuous at t: re-evaluate on the far side (torchdiffeq's Perturb.NEXT after jump_t)
        if self.tableau.fsal:
            return (func(t, y, PERTURB_NEXT),)
        return ()

    supports_per_sample = True

    def step(self, func, t0, h, y0, state):
        if isinstance(h, torch.Tensor):
            return self._step_per_sample(func, t0, h, y0, state)
        tab = self.tableau
        if tab.fsal:
            k = [state[0]]
        else:
            k = [func(t0, y0, PERTURB_NEXT if self.perturb else PERTURB_NONE)]
        y_stage = y0
        t_before_end = None
        for terms, c_i, before_end in self._stages:
            y_stage = _combine(y0, terms, k, h)
            if not before_end:
                k.append(func(t0 + c_i * h, y_stage))
                continue
            # just before t1 (torchdiffeq's Perturb.PREV), computed once per step
            if t_before_end is None:
                time = getattr(func, "time", None)
                if time is None:  # a plain f(t, y, perturb): let it perturb
                    k.append(func(t0 + h, y_stage, PERTURB_PREV))
                    continue
                t1, t_dtype = t0 + h, func.time_dtype
                t_before_end = time(prev_time(t1, t_dtype) if h > 0 else -prev_time(-t1, t_dtype))
            k.append(func(t_before_end, y_stage))
        y1 = y_stage if tab.solution_is_last_stage else _combine(y0, tab.solution_terms, k, h)
        error = _combine(None, tab.error_terms, k, h) if tab.error_terms is not None else None
        return Step(t0, h, y0, y1, state, (k[-1],) if tab.fsal else (), error, dense=k, func=func)

    def _step_per_sample(self, func, t0: torch.Tensor, h: torch.Tensor, y0, state):
        """One step for a batch whose samples have their own ``t0`` and ``h`` (float64 tensors ``[batch]``).

        ``func`` receives the stage times as a ``[batch]`` tensor. Used by the
        batch-parallel loop (``batch_loop.py``).
        """
        tab = self.tableau
        h_col = h.to(y0.dtype).view(-1, *([1] * (y0.ndim - 1)))
        k = [state[0]] if tab.fsal else [func(t0, y0)]
        y_stage = y0
        times = {}  # stage times t0 + c_i h, one tensor per distinct node
        for i in range(1, tab.stages):
            y_stage = _combine_per_sample(y0, tab.stage_terms[i], k, h_col)
            t_i = times.get(tab.c[i])
            if t_i is None:
                t_i = times[tab.c[i]] = torch.add(t0, h, alpha=tab.c[i])
            k.append(func(t_i, y_stage))
        y1 = y_stage if tab.solution_is_last_stage else _combine_per_sample(y0, tab.solution_terms, k, h_col)
        error = _combine_per_sample(None, tab.error_terms, k, h_col) if tab.error_terms is not None else None
        state1 = (k[-1],) if tab.fsal else ()
        return Step(t0, h, y0, y1, tuple(state), state1, error, dense=k, func=func)

    @property
    def stage_weights(self) -> tuple[float, ...]:
        """The solution weights ``b_i`` of the stages (the step's quadrature weights)."""
        return self.tableau.b

    def stage_points_per_sample(self, step: Step, stages=None) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """``(t_i, Y_i, b_i)`` of a per-sample step for the stages ``stages`` (default: all).

        The stage inputs are recomputed from the stored stages
        (``Y_i = y0 + h Σ_j a_ij k_j``), so that a quadrature along the step
        (the continuous adjoint's parameter integral) uses the method's own nodes.
        """
        tab = self.tableau
        y0, k = step.y0, step.dense
        h_col = step.h.to(y0.dtype).view(-1, *([1] * (y0.ndim - 1)))
        points = []
        for i in range(tab.stages) if stages is None else stages:
            y_i = y0 if i == 0 else _combine_per_sample(y0, tab.stage_terms[i], k, h_col)
            points.append((torch.add(step.t0, step.h, alpha=tab.c[i]), y_i, tab.b[i]))
        return points

    def interpolate_per_sample(self, step: Step, rows: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The state at ``t0_b + theta_b h_b`` for the samples ``rows`` of a per-sample step.

        The interpolant ``y0 + h sum_i w_i(theta) k_i``, ``w_i`` polynomials in
        ``theta`` (Hairer et al. I, sec. II.6), is evaluated in the form
        ``y0 + theta (y1 - y0) + theta (1 - theta) Q(theta)`` (see
        :func:`_end_exact_form`), ``Q`` in powers of ``u = theta - 1/2`` by
        Horner's rule with ``c_q = h sum_i D_qi k_i``: the coefficients are one
        matrix product per step, for all its samples, and each output then
        gathers ``P + 1`` rows and takes ``P + 1`` multiply-adds (a step passes
        many outputs, often all rows several), instead of a small matrix product
        per output.
        """
        th = theta.to(step.y0.dtype)
        if self._interpolant is None:
            # linear between the step's ends (fixed-step methods have no dense interpolant)
            return torch.lerp(step.y0[rows], step.y1[rows], th.view(-1, *([1] * (step.y0.ndim - 1))))
        # index_select, not c[rows]: the advanced-indexing kernel and its backward (index_put with accumulation)
        # cost about twice as much for these one-dimensional gathers
        coefficients = [c.index_select(0, rows) for c in self._power_form(step)]
        return self._horner(coefficients, th[:, None]).view(-1, *step.y0.shape[1:])

    def interpolate_per_sample_padded(self, step: Step, rows: torch.Tensor | None,
                                      theta: torch.Tensor) -> torch.Tensor:
        """The state at ``t0_b + theta_bk h_b`` for up to ``K`` outputs of each of the samples ``rows``
        (``None``: every sample of the step), ``theta`` of shape ``(R, K)``: ``(R, K, *state)``.

        The batch loop's emission when a step passes several outputs of a sample (a shared grid denser than
        the steps): the polynomial of :meth:`_horner` as one batched matrix product, each row's ``(K, P + 1)``
        basis ``[1, θ, w, w u, w u², ...]`` (``w = θ (1 - θ)``, ``u = θ - 1/2``) times its ``(P + 1, features)``
        power-form coefficients, instead of gathering the coefficients once per (row, output) pair: the
        backward pass is one more batched product into the coefficients instead of scattering ``P + 1``
        gradients back into the rows one pair at a time, and no ``(R, K, features)`` temporary is made per
        power (Horner's scheme over the block made four: on the spirals' latent solve, 1000 rows and 100
        outputs, emission forward and backward took 13.5 ms with Horner, 9 with the product). With every sample
        emitting (``rows=None``) nothing is gathered at all. The same values as Horner's to round-off. Unused
        slots of ``theta`` must be finite (0, say): their values are discarded, but a NaN there would reach the
        gradients through the products.
        """
        th = theta.to(step.y0.dtype)
        if self._interpolant is None:
            y0, y1 = (step.y0, step.y1) if rows is None else (step.y0[rows], step.y1[rows])
            flat0, flat1 = y0.reshape(y0.shape[0], 1, -1), y1.reshape(y1.shape[0], 1, -1)
            return torch.lerp(flat0, flat1, th[:, :, None]).view(*th.shape, *step.y0.shape[1:])
        coefficients = self._power_form(step)
        if rows is not None:
            coefficients = [c.index_select(0, rows) for c in coefficients]
        # the polynomial of _horner as a batched matrix product: each row's (K, P + 1) basis
        # [1, θ, w, w u, w u², ...] (w = θ (1 - θ), u = θ - 1/2) times its (P + 1, features) coefficients
        basis = [torch.ones_like(th), th]
        if len(coefficients) > 2:
            u = th - 0.5
            power = th * (1 - th)
            for _ in coefficients[2:]:
                basis.append(power)
                power = power * u
        return torch.bmm(torch.stack(basis, dim=-1), torch.stack(coefficients, dim=1)).view(*th.shape,
                                                                                             *step.y0.shape[1:])

    def _power_form(self, step: Step) -> tuple[torch.Tensor, ...]:
        """``(y0, y1 - y0, c_0, ..., c_{P-2})`` of a per-sample step, ``(batch, features)`` each, made once per
        step and kept in its cache."""
        if step.cache is None:
            step.cache = {}
        coefficients = step.cache.get("power_form")
        if coefficients is None:
            matrix = self._interpolant_matrix(step.y0.dtype, step.y0.device)
            stages = torch.stack([k.reshape(k.shape[0], -1) for k in self.dense_stages(step)])  # (s, batch, feat.)
            scaled = torch.tensordot(matrix, stages, dims=1)  # (P - 1, batch, features)
            scaled = scaled * step.h.to(scaled.dtype)[None, :, None]
            # one contiguous (batch, features) block per power: each gathers into a contiguous (M, features)
            y0 = step.y0.reshape(step.y0.shape[0], -1)
            coefficients = step.cache["power_form"] = (y0, step.y1.reshape(y0.shape) - y0, *scaled.unbind(0))
        return coefficients

    @staticmethod
    def _horner(coefficients, th: torch.Tensor) -> torch.Tensor:
        """``y0 + θ dy + θ (1 - θ) Q(θ - 1/2)`` from the power form, ``θ`` broadcasting over the coefficients."""
        y0, dy, *q = coefficients
        value = torch.addcmul(y0, dy, th)
        if q:
            u = th - 0.5
            bubble = q[-1]
            for c in q[-2::-1]:
                bubble = torch.addcmul(c, bubble, u)
            value = torch.addcmul(value, bubble, th * (1 - th))
        return value

    def _interpolant_matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The dense interpolant's ``(P - 1, s)`` matrix ``D`` of :func:`_end_exact_form`, cached per dtype and
        device."""
        key = (dtype, device)
        cached = self._interpolant_cache.get(key)
        if cached is None:
            cached = self._interpolant_cache[key] = torch.tensor(self._centered, dtype=dtype, device=device).T
        return cached

    # ------------------------------------------------------------------ dense output

    def dense_stages(self, step: Step) -> list[torch.Tensor]:
        """The step's stages and, for a continuous extension with stages of its own, those too.

        The extra stages (``tableau.dense_c``/``dense_a``) are evaluated the
        first time an output falls inside the step and kept in its cache: a
        step that produces no output costs no more than the method itself.
        """
        if not self._dense_stages:
            return step.dense
        if step.cache is None:
            step.cache = {}
        k = step.cache.get("dense_stages")
        if k is not None:
            return k
        k = list(step.dense)
        per_sample = isinstance(step.h, torch.Tensor)
        if per_sample:
            h_col = step.h.to(step.y0.dtype).view(-1, *([1] * (step.y0.ndim - 1)))
        for c_i, terms in self._dense_stages:
            if per_sample:
                y_i = _combine_per_sample(step.y0, terms, k, h_col)
                k.append(step.func(torch.add(step.t0, step.h, alpha=c_i), y_i))
            else:
                k.append(step.func(step.t0 + c_i * step.h, _combine(step.y0, terms, k, step.h)))
        step.cache["dense_stages"] = k
        return k

    def interpolate(self, step: Step, theta):
        tab = self.tableau
        if isinstance(theta, float):
            if theta == 0.0:
                return step.y0
            if theta == 1.0:
                return step.y1
        if self._interpolant is not None:
            k = self.dense_stages(step)
            if isinstance(theta, torch.Tensor):
                # differentiable in the output time: polynomial weights as tensors, in the end-exact form
                theta = theta.to(step.y0.dtype)
                u = theta - 0.5
                bubble = torch.zeros_like(step.y0)
                for i, row in enumerate(self._centered):
                    if any(row):
                        bubble = bubble + sum(coef * u**q for q, coef in enumerate(row)) * k[i]
                return step.y0 + theta * (step.y1 - step.y0) + (theta * (1 - theta) * step.h) * bubble
            weights = tab.interpolation_weights(theta, self._interpolant)
            return _combine(step.y0, tuple((i, w) for i, w in enumerate(weights) if w != 0.0), k, step.h)
        return grid_interpolate(step, theta, self.interp)


def _end_exact_form(interpolant, b) -> tuple[tuple[float, ...], ...]:
    """``D`` with ``w_i(θ) = θ b_i + θ (1 - θ) Σ_q D_qi (θ - 1/2)^q``: the interpolant as ``y0 + θ (y1 - y0) + θ (1 -
    θ) h Σ_i q_i(θ) k_i``.

    Both ends are then exact (``y0`` at θ = 0, ``y1`` at θ = 1, whatever the
    rounding of the coefficients), and the rest is well conditioned: a degree-7
    interpolant (dopri8's) has monomial coefficients up to 2.5e3 that cancel
    towards θ = 1, where ``θ (1 - θ) ≤ 1/4`` and powers of ``|θ - 1/2| ≤ 1/2``
    lose ~50 ulps instead (it matters in float32). ``q_i = (w_i/θ - b_i) / (1 -
    θ)`` by synthetic division (in float64; the remainder ``w_i(1) - b_i`` is
    the tableau's rounding, ~1e-13 for dopri8, and is dropped), then re-expanded
    about θ = 1/2 by the binomial theorem.
    """
    rows = []
    stages_b = tuple(b) + (0.0,) * (len(interpolant) - len(b))  # dense-output stages do not enter y1
    for row, b_i in zip(interpolant, stages_b, strict=True):
        shifted = (row[0] - b_i, *row[1:])  # w_i/θ - b_i, coefficients of θ^0 .. θ^(P-1)
        quotient, acc = [], 0.0
        for coef in shifted[:-1]:  # divided by (1 - θ): q_k = Σ_{j ≤ k} s_j
            acc += coef
            quotient.append(acc)
        n = len(quotient)
        rows.append(tuple(sum(quotient[p] * math.comb(p, m) * 0.5 ** (p - m) for p in range(m, n)) for m in range(n)))
    return tuple(rows)


def grid_interpolate(step: Step, theta, interp: str):
    """Between the ends of a step of a method without a dense interpolant: ``"linear"`` or ``"cubic"`` (Hermite),
    torchdiffeq's ``interp`` option; a tensor ``theta`` keeps the output time differentiable."""
    if interp == "linear":
        if isinstance(theta, torch.Tensor):
            theta = theta.to(step.y0.dtype)
            return step.y0 + theta * (step.y1 - step.y0)
        return torch.lerp(step.y0, step.y1, theta)
    return cubic_hermite(step, theta)


def hermite(y0, y1, f0, f1, h, theta):
    """The cubic Hermite interpolant on ``(y0, f0)``, ``(y1, f1)`` over a step ``h`` at ``theta`` (Hairer et al. I,
    §II.6): order 3, for any method that knows ``f`` at both ends of its step."""
    if isinstance(theta, torch.Tensor):
        theta = theta.to(y0.dtype)
    h00 = (1 + 2 * theta) * (1 - theta) * (1 - theta)
    h10 = theta * (1 - theta) * (1 - theta)
    h01 = theta * theta * (3 - 2 * theta)
    h11 = theta * theta * (theta - 1)
    return h00 * y0 + h10 * h * f0 + h01 * y1 + h11 * h * f1


def cubic_hermite(step: Step, theta):
    """The cubic Hermite interpolant on ``[t0, t1]`` from ``y0, y1, f(t0, y0) = step.dense[0]`` and ``f(t1, y1)``.

    torchdiffeq's ``FixedGridODESolver._cubic_hermite_interp``; ``f(t1, y1)``
    is evaluated once per step that produces outputs and kept in the step's cache.
    """
    f0 = step.dense[0]
    if step.cache is None:
        step.cache = {}
    f1 = step.cache.get("f1")
    if f1 is None:
        # one extra evaluation per step that produces outputs (torchdiffeq: one per output)
        f1 = step.cache["f1"] = step.func(step.t0 + step.h, step.y1)
    return hermite(step.y0, step.y1, f0, f1, step.h, theta)
