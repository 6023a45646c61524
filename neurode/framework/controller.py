"""Step-size controllers: how big the next step is, and whether this one is kept.

A controller sees only numbers — the step just tried and its scaled error
ratio (the norm of ``error / (atol + rtol * max(|y0|, |y1|))``) — so it serves
every adaptive method. Three are provided:

* :class:`IController`, the classical integral controller, exactly as
  torchdiffeq implements it (so that step sequences match):
  ``h_new = h * clip(safety * r^(-1/q), dfactor, ifactor)``, where the lower
  bound is 1 when the step is accepted (Hairer, Nørsett & Wanner I, §II.4,
  eq. 4.13).
* :class:`PIDController`, the PID controller of Söderlind (2003, "Digital
  filters in adaptive time-stepping", ACM TOMS 29) in the form diffrax uses:
  ``h_new = h * safety * r_n^(-β1/q) * r_{n-1}^(-β2/q) * r_{n-2}^(-β3/q)`` with
  ``β1 = p + i + d``, ``β2 = -(p + 2d)``, ``β3 = d``.
* :class:`PIController`, the Lund-stabilised PI controller of Hairer's DOPRI5
  code (Gustafsson, Lundh & Söderlind 1988, BIT 28; Hairer & Wanner II,
  §IV.2; OrdinaryDiffEq.jl's ``PIController`` has the same form):
  ``h_new = h * clip(safety * r_n^-(1/q - 0.75 β) * r_{n-1}^β, dfactor, ifactor)``.
  Unlike the two above, an accepted step may be followed by a *smaller* one,
  so a rising error is answered before it causes a rejection; after a
  rejection the next step does not grow.

:func:`initial_step` is Hairer's starting-step heuristic (ibid., §II.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from neurode.framework.errors import InvalidInputError, NonFiniteStateError

#: Hairer & Wanner II, §IV.8 (RADAU5): the factor a step whose Newton iteration failed is retried with.
NEWTON_FAILURE_FACTOR = 0.5


def newton_step_size(h, h_next, accept, failed, failed_before):
    """The next step size once the Newton iteration of implicit stages has had its say (both loops call this).

    A step whose Newton iteration failed has no error estimate: it is retried with ``h / 2``
    (:data:`NEWTON_FAILURE_FACTOR`), not with the controller's strongest shrink for an infinite error (``dfactor``,
    0.2), which cost kvaerno5 a fifth of its step and an immediate regrowth into the same failure; and the step
    accepted right after a failure does not grow (Hairer & Wanner II, §IV.8, RADAU5's "after a rejection no
    growth"). Floats in the shared loop, ``(B,)`` tensors (``accept``, ``failed``, ``failed_before`` bool) per
    sample.
    """
    if isinstance(h_next, torch.Tensor):
        grown = accept & failed_before
        h_next = torch.where(grown, torch.minimum(h_next, h), h_next)
        return torch.where(failed, h * NEWTON_FAILURE_FACTOR, h_next)
    if failed:
        return h * NEWTON_FAILURE_FACTOR
    return min(h_next, h) if accept and failed_before else h_next


@dataclass
class IController:
    """Integral controller (torchdiffeq's defaults)."""

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2

    def __post_init__(self) -> None:
        _check_factors(self.safety, self.ifactor, self.dfactor)

    def start(self) -> "IController":
        return self  # stateless

    def adapt(self, h: float, ratio: float, error_order: int) -> tuple[bool, float]:
        """``(accept, next step size)`` for a step of size ``h > 0`` with error ratio ``ratio``."""
        accept = ratio <= 1.0
        if ratio == 0.0:
            return accept, h * self.ifactor
        if not math.isfinite(ratio):
            return False, h * self.dfactor
        dfactor = 1.0 if ratio < 1.0 else self.dfactor
        factor = min(self.ifactor, max(self.safety / ratio ** (1.0 / error_order), dfactor))
        return accept, h * factor


@dataclass
class PIDController:
    """PID controller (Söderlind 2003). ``pcoeff=icoeff=0, dcoeff=0`` reduces to I control with ``icoeff=1``.

    Good choices (diffrax documentation): ``(pcoeff, icoeff) = (0.4, 0.3)`` for
    non-stiff problems with high-order methods, ``(0.3, 0.3)`` for mildly stiff.
    """

    pcoeff: float = 0.4
    icoeff: float = 0.3
    dcoeff: float = 0.0
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    _history: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        _check_factors(self.safety, self.ifactor, self.dfactor)
        for name in ("pcoeff", "icoeff", "dcoeff"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.icoeff == 0 and self.pcoeff == 0 and self.dcoeff == 0:
            raise ValueError("PIDController needs a non-zero coefficient; got pcoeff=icoeff=dcoeff=0")

    def start(self) -> "PIDController":
        return PIDController(self.pcoeff, self.icoeff, self.dcoeff, self.safety, self.ifactor, self.dfactor)

    def adapt(self, h: float, ratio: float, error_order: int) -> tuple[bool, float]:
        accept = ratio <= 1.0
        if not math.isfinite(ratio):
            return False, h * self.dfactor
        r = max(ratio, 1e-10)  # a zero error grows by ifactor (after the clip) and is remembered as 1e-10
        prev1 = self._history[-1] if len(self._history) >= 1 else r
        prev2 = self._history[-2] if len(self._history) >= 2 else prev1
        beta1 = (self.pcoeff + self.icoeff + self.dcoeff) / error_order
        beta2 = -(self.pcoeff + 2 * self.dcoeff) / error_order
        beta3 = self.dcoeff / error_order
        factor = self.safety * r ** (-beta1) * prev1 ** (-beta2) * prev2 ** (-beta3)
        lower = 1.0 if accept else self.dfactor
        factor = min(self.ifactor, max(factor, lower))
        if accept:
            self._history.append(r)
            del self._history[:-2]
        return accept, h * factor


@dataclass
class PIController:
    """Hairer's DOPRI5 step-size control: PI with Lund stabilisation ``beta``.

    On an accepted step (``r <= 1``)::

        h_new = h * clip(safety * r^-(1/q - 0.75 beta) * r_prev^beta, dfactor, ifactor)

    where ``r_prev`` is the previous accepted ratio (``max(r, 1e-4)``; 1e-4
    before the first, as in DOPRI5), and ``h_new <= h`` right after a
    rejection. On a rejected step, ``h_new = h * max(dfactor, safety *
    r^-(1/q - 0.75 beta))``. ``beta = 0`` is DOP853's I control, which also
    lets an accepted step shrink. The default ``beta = 0.04`` is DOPRI5's.

    Why it matters: where a component's error rises steadily over a few
    steps (an oscillation's zero crossing under relative error control), the
    torchdiffeq/diffrax rule "an accepted step never shrinks" runs into one
    or two rejections per crossing; this controller shrinks ahead of them.
    """

    beta: float = 0.04
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    _prev: float = field(default=1e-4, repr=False)
    _rejected: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        _check_factors(self.safety, self.ifactor, self.dfactor)
        if not (math.isfinite(self.beta) and 0 <= self.beta <= 0.2):
            raise ValueError(f"beta must be in [0, 0.2] (DOPRI5's default is 0.04), got {self.beta!r}")

    def start(self) -> "PIController":
        return PIController(self.beta, self.safety, self.ifactor, self.dfactor)

    def exponent(self, error_order: int) -> float:
        """The integral exponent ``1/q - 0.75 beta`` (DOPRI5's ``expo1``) for an error of order ``q``."""
        expo = 1.0 / error_order - 0.75 * self.beta
        if not expo > 0:
            raise InvalidInputError(
                f"PIController(beta={self.beta}) gives a non-positive exponent 1/q - 0.75 beta = {expo:.3g} for a "
                f"method whose error estimate has order q = {error_order}; use beta < {1 / (0.75 * error_order):.3g}"
            )
        return expo

    def adapt(self, h: float, ratio: float, error_order: int) -> tuple[bool, float]:
        if not math.isfinite(ratio):
            self._rejected = True
            return False, h * self.dfactor
        r = max(ratio, 1e-300)
        integral = r ** -self.exponent(error_order)
        if ratio <= 1.0:
            factor = min(self.ifactor, max(self.dfactor, self.safety * integral * self._prev**self.beta))
            if self._rejected:
                factor = min(factor, 1.0)
            self._prev, self._rejected = max(ratio, 1e-4), False
            return True, h * factor
        self._rejected = True
        return False, h * max(self.dfactor, min(1.0, self.safety * integral))


def _check_factors(safety: float, ifactor: float, dfactor: float) -> None:
    if not 0 < safety <= 1:
        raise ValueError(f"safety must be in (0, 1], got {safety!r}")
    if not ifactor >= 1:
        raise ValueError(f"ifactor must be >= 1, got {ifactor!r}")
    if not 0 < dfactor <= 1:
        raise ValueError(f"dfactor must be in (0, 1], got {dfactor!r}")


def norm_value(x: torch.Tensor, norm) -> float:
    """``norm(x)`` as a float; ``norm=None`` is the RMS norm (Hairer et al. I, eq. 4.11).

    The RMS norm's ``1/sqrt(n)`` is applied to the float: one tensor operation
    fewer per call, which is measurable on small states.
    """
    if norm is None:
        return float(torch.linalg.vector_norm(x)) / math.sqrt(max(x.numel(), 1))
    return float(norm(x))


@torch.no_grad()
def initial_step(func, t0: float, y0: torch.Tensor, f0: torch.Tensor, order: int, rtol, atol, norm, direction: float):
    """Hairer's starting step (Hairer, Nørsett & Wanner I, §II.4, p. 169).

    Costs one evaluation of ``func``. Mirrors torchdiffeq's
    ``_select_initial_step`` so that both libraries start from the same step.
    ``norm=None`` is the RMS norm. Returns a positive float.
    """
    if isinstance(rtol, torch.Tensor) or isinstance(atol, torch.Tensor):
        scale = atol + torch.abs(y0) * rtol
    else:
        scale = torch.abs(y0).mul_(rtol).add_(atol)
    d0 = norm_value(y0 / scale, norm)
    d1 = norm_value(f0 / scale, norm)
    if not (math.isfinite(d0) and math.isfinite(d1)):
        if not bool(torch.isfinite(y0).all()):
            what = "the initial state y0 is"
        elif not bool(torch.isfinite(f0).all()):
            what = "the derivative f(t0, y0) is"
        else:  # finite state and derivative: the norm (a user's) or the tolerances made the error measure non-finite
            what = (f"the error norm of y0 / (atol + rtol |y0|) is {d0:g} and of f(t0, y0) / (...) is {d1:g} although "
                    "both are finite (check the norm option, and atol > 0 where y0 is 0): the error measure is")
        raise NonFiniteStateError(f"{what} not finite (NaN or inf) at t={t0:.9g}; cannot start the solve", t=t0)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    y1 = torch.add(y0, f0, alpha=direction * h0)
    f1 = func(t0 + direction * h0, y1)
    d2 = abs(norm_value((f1 - f0).div_(scale), norm) / h0)
    if not math.isfinite(d2):
        raise NonFiniteStateError(
            f"f became non-finite within {h0:.3g} of t={t0:.9g} while choosing the first step", t=t0, dt=h0)
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / float(order))
    return min(100 * h0, h1)
