"""Reading irregularly sampled, padded sequences with a recurrent cell, forwards or backwards in time.

The recurrent models of Rubanova, Chen and Duvenaud (2019) — the ODE-RNN, the
GRU fed the time gap (RNN-Δt) and the GRU-D-style decaying GRU (Che et al.,
2018) — and the recognition networks of the Latent ODE differ only in how a
hidden state ``h`` crosses the time between two observations and how it takes
in an observation. That is the :class:`RecurrentCell` contract:

- ``advance(h, t_from, t_to, moving)``: the state at ``t_to`` when nothing is
  observed in between (an ODE flow, an exponential decay, a GRU step fed an
  empty observation);
- ``observe(h, advanced, gap, values, mask)``: the state after taking in the
  observation ``values`` (0 where unobserved) with its mask, ``gap`` after the
  previous one.

:func:`scan` walks the columns of a padded batch, every trajectory on its own
times: padding leaves a trajectory's state untouched, a slot without any
observed variable only advances it, and missing variables enter as a zero
value with a zero mask bit — masks, never imputation. Backwards (``reverse``)
it reads each trajectory from its last observation to its first, as the
recognition networks of Chen et al. (2018, sec. 5) and Rubanova et al. (2019,
sec. 3.3) do. Query slots (:func:`merge_queries`) record the state advanced to
a requested time without changing what the cell carries on.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn

#: slot kinds of a scanned sequence
PADDING, OBSERVATION, QUERY = 0, 1, 2


class RecurrentCell(nn.Module, abc.ABC):
    """How a hidden state crosses time and takes in observations (see the module docstring)."""

    hidden_size: int
    #: True when ``observe`` reads the gap itself and never needs the advanced state
    #: (the RNN-Δt cell), so that :func:`scan` need not advance before observing.
    observes_from_previous: bool = False
    #: True when the cell also implements :meth:`observe_sequence` (it must observe from the previous
    #: state); :func:`scan` then reads every observation of a batch in that one call.
    reads_sequences: bool = False

    @abc.abstractmethod
    def advance(self, h: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor,
                moving: torch.Tensor) -> torch.Tensor:
        """The state at ``t_to`` ``[batch]`` from ``h`` at ``t_from``; rows where ``moving`` is False stay ``h``."""

    @abc.abstractmethod
    def observe(self, h: torch.Tensor, advanced: torch.Tensor | None, gap: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """The state after the observation ``values`` ``[batch, F]`` (mask ``[batch, F]``), ``gap`` after ``h``."""

    def observe_sequence(self, h0: torch.Tensor, gap: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                         last: torch.Tensor | None) -> torch.Tensor:
        """``observe`` applied over a whole sequence of observations ``[batch, K, ...]``, each from the state the
        previous one left (``h0`` before the first), ``gap`` ``[batch, K, 1]`` after its predecessor.

        Returns every state ``[batch, K, hidden]``, or with ``last`` ``[batch]``
        each row's state after its observation ``last`` (``h0`` where -1): the
        slots after it are padding, to be ignored. Must equal stepping
        :meth:`observe` (cells that set :attr:`reads_sequences`).
        """
        raise NotImplementedError(f"{type(self).__name__} reads one observation at a time")

    def stats(self) -> dict[str, float]:
        """Solver counters of the last scan (cells that solve ODEs); ``{}`` otherwise."""
        return {}

    def reset_stats(self) -> None:
        """Forget the counters before a new scan."""


@dataclass
class ScanResult:
    """What :func:`scan` returns.

    Attributes:
        final: ``[batch, hidden]`` the state after the last slot read (the first
            observation when reading backwards).
        before: ``[batch, M, hidden]`` the state advanced to each slot's time,
            before that slot's observation (a one-step-ahead state); the carried
            state at padding. ``None`` unless ``record``.
    """

    final: torch.Tensor
    before: torch.Tensor | None


def scan(cell: RecurrentCell, h0: torch.Tensor, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
         kind: torch.Tensor, *, reverse: bool = False, record: bool = False) -> ScanResult:
    """Run ``cell`` over a padded sequence.

    Args:
        h0: ``[batch, hidden]`` the state before the first slot read.
        times: ``[batch, M]`` slot times, non-decreasing over each row's non-padding slots.
        values, mask: ``[batch, M, F]``; ``values`` may hold anything (NaN
            included) where ``mask`` is False: it never reaches the cell.
        kind: ``[batch, M]`` :data:`PADDING`, :data:`OBSERVATION` or :data:`QUERY`.
        reverse: read each row from its last slot to its first.
        record: also return every slot's advanced state.
    """
    batch, length = kind.shape
    if reverse:
        # read order is column order flipped; records are flipped back at the end
        times, values, mask, kind = times.flip(1), values.flip(1), mask.flip(1), kind.flip(1)
    plan = _read_plan(times, values, mask, kind, h0.dtype)
    if cell.reads_sequences:
        return _scan_sequence(cell, h0, plan, reverse, record)
    # one host read for the whole scan: columns where every row observes (or every row
    # sees some variable) need no per-row selection, which saves two ops and their backward
    every_obs, every_seen = (flags.all(0).tolist() for flags in (plan.is_obs, plan.seen))
    # a cell that observes from the previous state never needs the advanced one inside the loop:
    # what a record asks for is advanced from the carried states afterwards, all slots in one call
    advance_after = record and cell.observes_from_previous
    h = h0
    records: list[torch.Tensor] = []
    for j in range(length):
        moving = plan.moving[:, j]
        advanced = None
        if advance_after:
            records.append(h)
        elif record or not cell.observes_from_previous:
            advanced = torch.where(moving.unsqueeze(-1), cell.advance(h, plan.t_from[:, j], plan.t_to[:, j], moving),
                                   h)
        updated = cell.observe(h, advanced, plan.gap[:, j], plan.x[:, j], plan.m[:, j])
        if cell.observes_from_previous:
            # the cell reads the gap itself: an all-missing observation is its own "advance"
            h_next = updated if every_obs[j] else torch.where(plan.is_obs[:, j].unsqueeze(-1), updated, h)
        elif every_seen[j]:
            h_next = updated
        else:
            h_next = torch.where(plan.seen[:, j].unsqueeze(-1), updated,
                                 torch.where(plan.is_obs[:, j].unsqueeze(-1), advanced, h))
        if record and not advance_after:
            records.append(advanced)
        h = h_next
    before = None
    if record:
        before = torch.stack(records, dim=1) if records else h0.new_zeros(batch, 0, h0.shape[-1])
        if advance_after and length:
            flat = before.reshape(batch * length, -1)
            moved = cell.advance(flat, plan.t_from.reshape(-1), plan.t_to.reshape(-1), plan.moving.reshape(-1))
            before = torch.where(plan.moving.unsqueeze(-1), moved.reshape_as(before), before)
        if reverse:
            before = before.flip(1)
    return ScanResult(final=h, before=before)


def _scan_sequence(cell: RecurrentCell, h0: torch.Tensor, plan: "_ReadPlan", reverse: bool,
                   record: bool) -> ScanResult:
    """:func:`scan` for a cell that reads all its observations in one call (:meth:`RecurrentCell.observe_sequence`).

    Such a cell observes from the state the previous observation left and no
    other slot changes it, so only the observation slots matter: they are
    moved to the front of each row in read order (padding and queries trail,
    fed zeros), read at once, and each row's final state taken at its last
    observation. A record's state before each slot is the state after the
    observations read before it, advanced to the slot's time in one call, as
    :func:`scan` does for these cells.
    """
    batch, length = plan.is_obs.shape
    count = plan.is_obs.sum(1)
    gap, x, m = plan.gap, plan.x, plan.m
    if not bool(plan.is_obs.all()):
        # stable: observations keep their read order; the zeros keep NaN times of padding out of the cell
        order = torch.sort((~plan.is_obs).to(torch.int8), dim=1, stable=True).indices
        gap = torch.where(plan.is_obs.unsqueeze(-1), gap, torch.zeros_like(gap)).gather(1, order.unsqueeze(-1))
        x = x.gather(1, order.unsqueeze(-1).expand_as(x))
        m = m.gather(1, order.unsqueeze(-1).expand_as(m))
    if not record:
        return ScanResult(final=cell.observe_sequence(h0, gap, x, m, count - 1), before=None)
    after = torch.cat([h0.unsqueeze(1), cell.observe_sequence(h0, gap, x, m, None)], dim=1)
    final = after.gather(1, count.view(batch, 1, 1).expand(-1, 1, after.shape[-1])).squeeze(1)
    # the state each slot sees: after the observations read strictly before it
    seen = (torch.cumsum(plan.is_obs, dim=1) - plan.is_obs.long()).unsqueeze(-1).expand(-1, -1, after.shape[-1])
    carried = after.gather(1, seen)
    flat = carried.reshape(batch * length, carried.shape[-1])
    moved = cell.advance(flat, plan.t_from.reshape(-1), plan.t_to.reshape(-1), plan.moving.reshape(-1))
    before = torch.where(plan.moving.unsqueeze(-1), moved.reshape_as(carried), carried)
    return ScanResult(final=final, before=before.flip(1) if reverse else before)


@dataclass
class _ReadPlan:
    """What each slot of a scan does, computed for all slots at once (in read order), outside the loop."""

    is_obs: torch.Tensor  # [batch, M] the slot is an observation
    seen: torch.Tensor  # [batch, M] ... with at least one observed variable
    moving: torch.Tensor  # [batch, M] the state crosses time before the slot
    t_from: torch.Tensor  # [batch, M] the time of the previous observation (the slot's own before the first)
    t_to: torch.Tensor  # [batch, M] where the state is advanced to
    gap: torch.Tensor  # [batch, M, 1] |t_to - t_from|, in the state's dtype
    x: torch.Tensor  # [batch, M, F] values, 0 where not observed
    m: torch.Tensor  # [batch, M, F] observed variables of observation slots


def _read_plan(times, values, mask, kind, dtype) -> _ReadPlan:
    is_obs = kind == OBSERVATION
    batch, length = kind.shape
    column = torch.arange(length, device=kind.device).expand(batch, -1)
    # index of the latest observation strictly before each slot (-1: none yet)
    latest = torch.cummax(torch.where(is_obs, column, torch.full_like(column, -1)), dim=1).values
    previous = torch.cat([latest.new_full((batch, 1), -1), latest[:, :-1]], dim=1)[:, :length]  # length 0 too
    have = previous >= 0
    t_from = torch.where(have, times.gather(1, previous.clamp(min=0)), times)
    moving = (kind != PADDING) & have & (times != t_from)
    t_to = torch.where(moving, times, t_from)
    m = mask & is_obs.unsqueeze(-1)
    x = torch.where(m, values, torch.zeros_like(values))
    return _ReadPlan(is_obs, m.any(-1), moving, t_from, t_to, (t_to - t_from).abs().to(dtype).unsqueeze(-1), x, m)


def observation_kinds(time_mask: torch.Tensor) -> torch.Tensor:
    """Slot kinds of a padded batch: observations where ``time_mask``, padding elsewhere."""
    return torch.where(time_mask, OBSERVATION, PADDING).to(torch.int8)


@dataclass
class MergedSequence:
    """Observations and query times of each trajectory in one time-ordered sequence (see :func:`merge_queries`)."""

    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    kind: torch.Tensor
    #: ``[batch, T]`` where each query landed in the merged rows
    query_position: torch.Tensor


def merge_queries(times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, time_mask: torch.Tensor,
                  queries: torch.Tensor) -> MergedSequence:
    """Interleave query times ``[batch, T]`` (increasing) with each trajectory's observations, in time order.

    A query at the time of an observation comes first, so what it records is a
    forecast from strictly earlier observations. Padding goes last.
    """
    batch, n_queries = queries.shape
    queries = queries.to(times.dtype)
    key = torch.cat([queries, torch.where(time_mask, times, torch.full_like(times, float("inf")))], dim=1)
    # stable: at equal times the queries (concatenated first) stay before observations
    order = torch.sort(key, dim=1, stable=True).indices
    all_times = torch.cat([queries, times], dim=1).gather(1, order)
    features = values.shape[-1]
    pad_values = values.new_zeros(batch, n_queries, features)
    pad_mask = mask.new_zeros(batch, n_queries, features)
    index = order.unsqueeze(-1).expand(-1, -1, features)
    all_values = torch.cat([pad_values, values], dim=1).gather(1, index)
    all_mask = torch.cat([pad_mask, mask], dim=1).gather(1, index)
    kinds = torch.cat([torch.full_like(queries, QUERY, dtype=torch.int8), observation_kinds(time_mask)], dim=1)
    all_kinds = kinds.gather(1, order)
    inverse = torch.argsort(order, dim=1)
    return MergedSequence(all_times, all_values, all_mask, all_kinds, inverse[:, :n_queries])
