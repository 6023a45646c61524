"""Events for the shared integration loop: where ``event_fn(t, y)`` first changes sign, within a horizon.

As in torchdiffeq (``combine_event_functions``, ``find_event``), every
component of ``event_fn`` is made to start positive and the minimum is
tracked; after each accepted step a sign change of that minimum is located by
bisection on the method's dense interpolant. Added here: what ``event_fn``
returns is checked (a real tensor without NaN: a NaN has no sign to change),
and the search ends at a horizon ``t_max`` with :class:`EventNotFoundError`,
so that an event that never comes (or is only touched, without a sign change)
is reported at the horizon rather than after ``max_num_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from neurode.framework.errors import EventNotFoundError, InvalidInputError, InvalidTypeError, NonFiniteStateError


class EventSearch:
    """The event of one solve; the loop works in ``tau = direction * t`` (increasing)."""

    def __init__(self, event_fn: Callable, direction: float, tau0: float, y0: torch.Tensor, t_max: float | None):
        self.direction = direction
        self.t0, self.t_max = direction * tau0, t_max
        t0_tensor = torch.scalar_tensor(self.t0, dtype=y0.real.dtype if y0.is_complex() else y0.dtype,
                                        device=y0.device)
        with torch.no_grad():
            initial_signs = torch.sign(_event_tensor(event_fn, t0_tensor, y0))

        def combined(t, y):
            return torch.min(_event_tensor(event_fn, t, y) * initial_signs)

        self.combined = combined
        with torch.no_grad():
            self.sign0 = float(torch.sign(combined(t0_tensor, y0)))  # 0: on the event at t0
        self.tau_horizon = math.inf if t_max is None else direction * t_max
        if not self.tau_horizon > tau0:
            raise InvalidInputError(f"t_max={t_max!r} must lie after t0={self.t0!r} in the direction of integration")

    def locate(self, solver, step, func, tau0: float, tau1: float, y1: torch.Tensor, tol, stats):
        """After the accepted step ``[tau0, tau1]``: ``(event tau, theta)`` if the event is inside it, else ``None``.

        Raises :class:`EventNotFoundError` when the step ends at the horizon without a sign change.
        """
        with torch.no_grad():
            value1 = float(self.combined(func.time(self.direction * tau1), y1))
        if math.copysign(1.0, value1) != math.copysign(1.0, self.sign0) or value1 == 0.0:
            return self._bisect(solver, step, func, tau0, tau1, tol)
        if tau1 >= self.tau_horizon:
            raise EventNotFoundError(
                f"the event function did not change sign between t0={self.t0:.9g} and t_max={self.t_max:.9g} "
                "(a root it only touches without changing sign is not an event); integrate further with a later "
                "t_max", t=self.direction * tau1, dt=self.direction * (tau1 - tau0), stats=stats)
        return None

    def _bisect(self, solver, step, func, tau0, tau1, tol):
        """Bisection on the dense interpolant down to ``atol`` (torchdiffeq ``find_event``)."""
        tol_value = float(tol.max()) if isinstance(tol, torch.Tensor) else float(tol)
        tol_value = max(tol_value, 1e-15 * max(1.0, abs(tau1)))
        n_iter = max(0, int(math.ceil(math.log((tau1 - tau0) / tol_value) / math.log(2.0))))
        lo, hi = tau0, tau1
        with torch.no_grad():
            for _ in range(n_iter):
                mid = 0.5 * (lo + hi)
                y_mid = solver.interpolate(step, (mid - tau0) / (tau1 - tau0))
                if float(torch.sign(self.combined(func.time(self.direction * mid), y_mid))) == self.sign0:
                    lo = mid
                else:
                    hi = mid
        event_tau = 0.5 * (lo + hi)
        return event_tau, (event_tau - tau0) / (tau1 - tau0)


def _event_tensor(event_fn: Callable, t, y) -> torch.Tensor:
    """``event_fn(t, y)``, checked: a real, non-empty tensor with no NaN (a NaN has no sign to change)."""
    value = event_fn(t, y)
    if not isinstance(value, torch.Tensor):
        raise InvalidTypeError(f"event_fn must return a tensor (0-d, or one value per event), got "
                               f"{type(value).__name__} at t={float(t):.9g}")
    if value.numel() == 0 or value.is_complex():
        raise InvalidInputError(f"event_fn must return a non-empty real tensor, got dtype {value.dtype} and shape "
                                f"{tuple(value.shape)}")
    if bool(torch.isnan(value).any()):
        raise NonFiniteStateError(
            f"event_fn returned NaN at t={float(t):.9g}: a NaN has no sign, so no event can be located", t=float(t))
    return value
