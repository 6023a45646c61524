"""What the trajectory models check of their inputs, and the per-sample grid a forecast is solved on.

Shared by ``neural_ode``, ``latent_ode`` and the recurrent models so that a
batch or a set of prediction times is refused with the same words whichever
model receives it.
"""

from __future__ import annotations

import torch

from neurode.datasets.batch import PADDED
from neurode.framework.errors import InvalidInputError


def check_batch(model, batch, name: str | None = None) -> None:
    """Refuse a batch that is not padded or has the wrong number of features or statics."""
    name = type(model).__name__ if name is None else name
    if batch.mode != PADDED:
        raise InvalidInputError(f"{name} takes padded batches (each trajectory on its own times), "
                                f"got mode {batch.mode!r}")
    if batch.values.shape[-1] != model.n_features or batch.static.shape[-1] != model.n_static:
        raise InvalidInputError(
            f"{name} was built for {model.n_features} features and {model.n_static} static variables, "
            f"got a batch with {batch.values.shape[-1]} and {batch.static.shape[-1]}")


def check_times(times, reference: torch.Tensor, model: str, *, t0: torch.Tensor | None = None,
                after_t0: str = "") -> torch.Tensor:
    """Prediction ``times`` (``[T]`` or ``[batch, T]``) as ``[batch, T]`` in ``reference``'s dtype and device.

    Refused unless finite and strictly increasing along each row; with ``t0``
    (``[batch]``), also any time before that row's ``t0`` (``after_t0`` says why).
    """
    batch = reference.shape[0]
    times = torch.as_tensor(times, dtype=reference.dtype, device=reference.device)
    if times.ndim == 1:
        times = times.expand(batch, -1)
    if times.ndim != 2 or times.shape[0] != batch or times.shape[1] == 0:
        raise InvalidInputError(f"{model}: prediction times must be [T] or [{batch}, T] with T >= 1, "
                                f"got shape {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise InvalidInputError(f"{model}: prediction times must be finite")
    if times.shape[1] > 1 and not bool((times[:, 1:] > times[:, :-1]).all()):
        raise InvalidInputError(f"{model}: prediction times must be strictly increasing along each row")
    if t0 is not None:
        early = times < t0[:, None]
        if bool(early.any()):
            row = int(early.any(1).nonzero()[0])
            raise InvalidInputError(
                f"{model}: prediction time {float(times[row][early[row]][0]):g} is before trajectory {row}'s first "
                f"observation at t0={float(t0[row]):g}; {after_t0}")
    return times


def forecast_grid(t0: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample solve grid from ``t0`` ``[batch]`` through ``times`` ``[batch, T]`` (increasing, >= t0).

    Returns ``grid`` ``[batch, T + 1]`` — ``t0``, then each row's times after
    ``t0``, NaN-padded — and ``position`` ``[batch, T]``, where each requested
    time sits in ``grid`` (0 for a time equal to ``t0``: that is the initial state itself).
    """
    later = times > t0[:, None]
    at_start = (~later).sum(1, keepdim=True)
    column = torch.arange(times.shape[1], device=times.device)[None, :]
    position = torch.where(later, 1 + column - at_start, torch.zeros_like(column))
    grid = torch.full((times.shape[0], times.shape[1] + 1), float("nan"), dtype=times.dtype, device=times.device)
    grid[:, 0] = t0
    grid.scatter_(1, position, torch.where(later, times, t0[:, None].expand_as(times)))
    return grid, position
