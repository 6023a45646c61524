"""Stiffness detection for explicit Runge–Kutta pairs, as Hairer's DOPRI5 does it.

On a stiff problem an explicit method's step size is set by the stability of
the method, not by the accuracy asked for: every step sits near the edge of the
stability region, ``h |λ| ≈`` its boundary on the negative real axis, and the
solve crawls to the step limit (van der Pol with μ = 1e4 takes millions of
steps). Hairer, Nørsett & Wanner (Solving ODEs I, §IV.2, and the DOPRI5 code,
``IDID = -4``) estimate the dominant eigenvalue from two stages evaluated at the
same time, ``λ ≈ ||k_i - k_j|| / ||Y_i - Y_j||`` (for DOPRI5 the last two
stages, both at ``t + h``), and stop when ``h |λ|`` exceeds the boundary (3.25
for DOPRI5) in 15 tests without 6 non-stiff tests in between. The test runs at
every ``nstiff``-th accepted step (default 1000) and then at every step while a
stiff sign is pending, so a non-stiff solve pays nothing below 1000 steps.

Unlike DOPRI5, a stiff stretch that the remaining step budget finishes anyway
at the current step size is left to finish; only a solve that would run into
``max_num_steps`` is stopped.

The boundary here is computed from the tableau itself (the real stability
interval of the stability polynomial ``R(z) = 1 + Σ_k z^k b^T A^(k-1) 1``), so
any registered tableau with two stages at one node gets the test.
"""

from __future__ import annotations

import functools

import torch

from neurode.framework.errors import StiffProblemError
from neurode.framework.registry import get_registry
from neurode.framework.tableau import ButcherTableau

#: accepted steps between two tests (Hairer's NSTIFF)
DEFAULT_NSTIFF = 1000
#: h|λ| above this fraction of the stability boundary counts as stiff. Hairer's DOPRI5 uses 3.25, 98% of its
#: boundary 3.31, under its PI controller's steady steps; the I controller (the default here) makes stability-
#: limited steps cycle about 10% around the boundary (h|λ| = 2.9 ... 3.7 for DOPRI5), so the test takes 85%. A
#: false alarm costs nothing: the verdict is only given when the step limit would be reached anyway.
THRESHOLD = 0.85
#: stiff tests in a row before the solve is stopped, and non-stiff tests that clear the count (Hairer's 15 and 6)
STIFF_TESTS, NONSTIFF_TESTS = 15, 6


@functools.lru_cache(maxsize=64)
def real_stability_boundary(a: tuple[tuple[float, ...], ...], b: tuple[float, ...]) -> float:
    """The largest ``x`` with ``|R(-x')| <= 1`` for all ``0 < x' <= x`` (explicit tableau ``a``, weights ``b``)."""
    s = len(b)
    # gamma_k = b^T A^(k-1) 1: the coefficients of the stability polynomial of an explicit method
    v = [1.0] * s
    gammas = [1.0]
    for _ in range(s):
        gammas.append(sum(bi * vi for bi, vi in zip(b, v)))
        v = [sum(row[j] * v[j] for j in range(len(row))) for row in a]
    x, step, last = 0.0, 1e-3, 0.0
    while x < 50.0:
        x += step
        if abs(sum(g * (-x) ** k for k, g in enumerate(gammas))) > 1.0 + 1e-12:
            break
        last = x
    return last


class StiffnessDetector:
    """Hairer's stiffness test for the adaptive loop; :meth:`check` after every accepted step."""

    def __init__(self, tableau, pair: tuple[int, int], nstiff: int) -> None:
        self.tableau = tableau
        self.i, self.j = pair
        self.nstiff = nstiff
        self.boundary = real_stability_boundary(tableau.a, tableau.b)
        self.threshold = THRESHOLD * self.boundary
        # Y_i - Y_j = h sum_m (a_im - a_jm) k_m
        row_i = tableau.a[self.i] + (0.0,) * (self.j - self.i)
        self.weights = tuple((m, x - y) for m, (x, y) in enumerate(zip(row_i, tableau.a[self.j])) if x != y)
        self.accepted = 0
        self.stiff = 0
        self.nonstiff = 0
        # the batch loop's per-sample counts (stiff, non-stiff tests), aligned with its active set
        self.counts: torch.Tensor | None = None
        self.suspect = False  # some sample's last test was stiff: test every iteration until it clears

    @classmethod
    def for_solver(cls, solver, nstiff: int = DEFAULT_NSTIFF) -> "StiffnessDetector | None":
        """A detector for an explicit RK solver with two stages at one node, else ``None`` (no test)."""
        tableau = getattr(solver, "tableau", None)
        # an explicit tableau only: an implicit method's stages at one node (an ESDIRK's c = 1 twice) say nothing
        # about h |lambda| against a stability limit
        if nstiff <= 0 or not isinstance(tableau, ButcherTableau):
            return None
        c = tableau.c
        pairs = [(i, j) for j in range(len(c)) for i in range(j) if c[i] == c[j] and c[i] > 0]
        if not pairs:
            return None
        return cls(tableau, pairs[-1], nstiff)

    def check(self, step, stats, unfinished) -> None:
        """Count this accepted step; on a test step, estimate ``h |λ|`` and raise once the problem looks stiff.

        ``unfinished()`` gives the time left to the goal and the steps left in the budget: a stiff stretch that
        the remaining steps finish anyway at this step size (y' = -y to t = 5000: 1500 steps at the stability
        limit) is not stopped; one that would run into ``max_num_steps`` is, at once.
        """
        self.accepted += 1
        if self.accepted % self.nstiff and not self.stiff:
            return
        k = step.dense
        if not isinstance(k, (list, tuple)) or len(k) <= self.j:
            return
        h_lambda = float(self._h_lambda(k, None))
        if h_lambda > self.threshold:
            self.nonstiff = 0
            self.stiff += 1
            if self.stiff >= STIFF_TESTS:
                time_left, steps_left = unfinished()
                if time_left / abs(float(step.h)) <= steps_left:
                    return
                t = step.t0 + step.h
                raise StiffProblemError(
                    f"the problem looks stiff at t={float(t):.9g}: for {STIFF_TESTS} tests in a row the step size "
                    f"{abs(float(step.h)):.3g} was held at the stability limit of the explicit method "
                    f"(h|lambda| = {h_lambda:.3g}, its stability boundary {self.boundary:.3g}), not by the tolerances, "
                    f"after {stats.n_steps} steps; an explicit solver would crawl to max_num_steps. {stiff_advice()}",
                    t=float(t), dt=float(step.h), stats=stats)
        elif self.stiff:
            self.nonstiff += 1
            if self.nonstiff >= NONSTIFF_TESTS:
                self.stiff = 0


    def _h_lambda(self, k, dims) -> torch.Tensor:
        """``h |λ| ≈ ||k_i - k_j|| / ||Σ_m (a_im - a_jm) k_m||`` (``h`` cancels), per sample over ``dims``."""
        with torch.no_grad():
            numerator = torch.linalg.vector_norm(k[self.i] - k[self.j], dim=dims)
            denominator = torch.linalg.vector_norm(sum(w * k[m] for m, w in self.weights), dim=dims)
            return torch.where(denominator > 0, numerator / denominator, torch.zeros_like(numerator))

    # ------------------------------------------------------------------ the batch-parallel loop

    def due(self, iteration: int) -> bool:
        """Whether the batch loop tests at this iteration: every ``nstiff``-th, and every one while a sample is
        under suspicion (each test costs one host sync; iterations without a test, none)."""
        return iteration % self.nstiff == 0 or self.suspect

    def check_batch(self, step, accept: torch.Tensor, steps_needed: torch.Tensor, steps_left: int) -> torch.Tensor:
        """Per sample of the active set: the test on accepted samples, and which ones to stop as stiff.

        ``steps_needed`` is each sample's time left over its step size: as in :meth:`check`, a sample is
        stopped only when it would not finish within the ``steps_left`` of the budget.
        """
        k = step.dense
        dims = tuple(range(1, k[0].ndim)) or None
        h_lambda = self._h_lambda(k, dims) if dims is not None else (k[self.i] - k[self.j]).abs() / sum(
            w * k[m] for m, w in self.weights).abs().clamp_min(torch.finfo(k[0].real.dtype).tiny)
        if self.counts is None or self.counts.shape[1] != accept.shape[0]:
            self.counts = torch.zeros(2, accept.shape[0], dtype=torch.int64, device=accept.device)
        stiff, nonstiff = self.counts
        over = accept & (h_lambda > self.threshold)
        under = accept & ~over & (stiff > 0)
        nonstiff = torch.where(over, 0, nonstiff + under.long())
        stiff = torch.where(over, stiff + 1, torch.where(nonstiff >= NONSTIFF_TESTS, 0, stiff))
        self.counts = torch.stack([stiff, nonstiff])
        self.suspect = bool((stiff > 0).any())  # the test's one host sync
        return (stiff >= STIFF_TESTS) & (steps_needed > steps_left)

    def compact(self, kept: torch.Tensor) -> None:
        """Keep the samples at positions ``kept`` (int64) of the active set."""
        if self.counts is not None:
            self.counts = self.counts.index_select(1, kept)


def stiff_advice() -> str:
    return (f"Use a stiff (implicit) method: {stiff_methods()}. (Hairer's DOPRI5 stiffness test; options "
            "{'nstiff': 0} turns it off.)")


def stiff_methods() -> str:
    """The registered solvers meant for stiff problems (a solver class declaring ``stiff = True``, registered
    as the class or as a ``functools.partial`` of it with its tableau): the adaptive ones first."""
    registry = get_registry()
    adaptive, fixed = [], []
    for name in registry.names("solver"):
        obj = registry.get("solver", name).obj
        cls = obj.func if isinstance(obj, functools.partial) else obj
        if not getattr(cls, "stiff", False):
            continue
        tableau = obj.args[0] if isinstance(obj, functools.partial) and obj.args else None
        steps_adaptively = getattr(cls, "adaptive", False) and getattr(tableau, "adaptive", True)
        (adaptive if steps_adaptively else fixed).append(repr(name))
    names = []
    if adaptive:
        names.append(f"adaptive: {', '.join(adaptive)}")
    if fixed:
        names.append(f"fixed-step: {', '.join(fixed)}")
    if ("solver", "torchdiffeq.scipy_solver") in registry:
        names.append("'torchdiffeq.scipy_solver' with solver='BDF', 'Radau' or 'LSODA' (scipy's implicit methods)")
    if not names:
        return ("none is registered in this installation: install a plugin with an implicit (BDF, Radau, "
                "Rosenbrock) solver, or use scipy.integrate.solve_ivp(method='BDF')")
    return "; ".join(names)
