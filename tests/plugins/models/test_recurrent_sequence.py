"""The whole-sequence readers (``gru_sequence``, ``elman_sequence``) and the scan's fast path for the gap-fed cells,
against stepping the same cells one step at a time."""

from __future__ import annotations

import math

import pytest
import torch

from neurode.plugins.models.elman_sequence import elman_sequence
from neurode.plugins.models.gru_sequence import gru_sequence
from neurode.plugins.models.irregular_scan import OBSERVATION, PADDING, QUERY, scan
from neurode.plugins.models.recurrent_cells import GapElmanCell, GapGRUCell
from neurode.plugins.models.recurrent_sequence import subnormals_flushed

EXACT = {"rtol": 1e-12, "atol": 1e-12}

#: each reader with the torch cell it reads
READERS = {
    "gru": (gru_sequence, lambda features, hidden: torch.nn.GRUCell(features, hidden)),
    "tanh": (elman_sequence, lambda features, hidden: torch.nn.RNNCell(features, hidden, nonlinearity="tanh")),
}
GAP_CELLS = {"gru": GapGRUCell, "tanh": GapElmanCell}


@pytest.fixture(params=list(READERS))
def kind_of_cell(request):
    return request.param


def _cell_and_inputs(kind_of_cell, batch=4, steps=6, features=5, hidden=3, seed=0):
    torch.manual_seed(seed)
    read, make = READERS[kind_of_cell]
    cell = make(features, hidden).double()
    x = torch.randn(batch, steps, features, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True)
    return read, cell, x, h0


def _stepped(cell, x, h0):
    h, states = h0, []
    for j in range(x.shape[1]):
        h = cell(x[:, j], h)
        states.append(h)
    return torch.stack(states, dim=1)


def _grads(output, weights, inputs):
    return torch.autograd.grad((output * weights).sum(), inputs)


def test_every_state_and_its_gradients_equal_stepping_the_cell(kind_of_cell):
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell)
    fast, reference = read(cell, x, h0), _stepped(cell, x, h0)
    torch.testing.assert_close(fast, reference, **EXACT)
    weights = torch.randn_like(reference)
    inputs = (x, h0, *cell.parameters())
    for got, want in zip(_grads(fast, weights, inputs), _grads(reference, weights, inputs)):
        torch.testing.assert_close(got, want, **EXACT)


def test_each_rows_state_at_its_last_step_and_h0_for_rows_without_one(kind_of_cell):
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell)
    last = torch.tensor([5, 2, -1, 0])
    fast = read(cell, x, h0, last)
    every = torch.cat([h0[:, None], _stepped(cell, x, h0)], dim=1)
    reference = every[torch.arange(4), last + 1]
    torch.testing.assert_close(fast, reference, **EXACT)
    weights = torch.randn_like(reference)
    inputs = (x, h0, *cell.parameters())
    for got, want in zip(_grads(fast, weights, inputs), _grads(reference, weights, inputs)):
        torch.testing.assert_close(got, want, **EXACT)


def test_without_gradients_the_same_states(kind_of_cell):
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell)
    last = torch.tensor([5, 2, -1, 0])
    with torch.no_grad():
        results = read(cell, x, h0), read(cell, x, h0, last)
    torch.testing.assert_close(results[0], read(cell, x, h0), **EXACT)
    torch.testing.assert_close(results[1], read(cell, x, h0, last), **EXACT)


@pytest.mark.parametrize("last", [None, torch.tensor([5, 2, -1, 0])])
def test_gradcheck(kind_of_cell, last):
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell, steps=4)
    last = None if last is None else last.clamp(max=3)
    params = tuple(cell.parameters())
    assert torch.autograd.gradcheck(lambda x, h0, *p: read(cell, x, h0, last), (x, h0, *params))


@pytest.mark.parametrize("last", [None, torch.tensor([5, 2, -1, 0])])
def test_second_derivatives_equal_those_of_stepping_the_cell(kind_of_cell, last):
    """A gradient penalty through the sequence: create_graph=True must give the stepped cell's second derivatives."""
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell)
    every = lambda: torch.cat([h0[:, None], _stepped(cell, x, h0)], dim=1)  # noqa: E731
    outputs = (read(cell, x, h0, last),
               _stepped(cell, x, h0) if last is None else every()[torch.arange(4), last + 1])
    penalties = []
    for output in outputs:
        grad_x, grad_w = torch.autograd.grad(output.sin().sum(), (x, cell.weight_hh), create_graph=True)
        penalty = (grad_x**2).sum() + (grad_w**2).sum()
        penalties.append(torch.autograd.grad(penalty, (x, h0, *cell.parameters())))
    for got, want in zip(*penalties):
        torch.testing.assert_close(got, want, **EXACT)


def test_an_empty_sequence_leaves_h0(kind_of_cell):
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell, steps=0)
    assert read(cell, x, h0).shape == (4, 0, 3)
    torch.testing.assert_close(read(cell, x, h0, torch.full((4,), -1)), h0)
    times = torch.zeros(4, 0, dtype=torch.float64)
    kind = torch.zeros(4, 0, dtype=torch.int8)
    for cell in _both_cells(kind_of_cell, 5):  # the fast path and the generic scan
        result = scan(cell, h0, times, x, x > 0, kind, reverse=True, record=True)
        torch.testing.assert_close(result.final, h0)
        assert result.before.shape == (4, 0, 3)


def test_mixed_dtypes_are_refused_by_name(kind_of_cell):
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell)
    with pytest.raises(ValueError, match="share a dtype"):
        read(cell, x.float(), h0)


def _stepwise(gap_cell):
    """The same cell read one slot at a time by the generic scan: the reference."""
    return type(f"Stepwise{gap_cell.__name__}", (gap_cell,), {"reads_sequences": False})


def _ragged_batch():
    """Rows with missing variables, an all-missing observation, one observation, none, and padding.

    Padding repeats a row's last time, as :class:`~neurode.datasets.batch.TrajectoryBatch` pads.
    """
    nan = math.nan
    times = torch.tensor([[0.0, 0.4, 1.1, 1.5, 2.0],
                          [0.0, 0.3, 0.3, 0.9, 0.9],   # a repeated time (gap 0)
                          [0.7, 0.7, 0.7, 0.7, 0.7],   # one observation
                          [0.0, 0.0, 0.0, 0.0, 0.0],   # none
                          [0.1, 0.5, 0.8, 0.8, 0.8]], dtype=torch.float64)
    observed = torch.tensor([5, 4, 1, 0, 3])
    kind = torch.where(torch.arange(5) < observed[:, None], OBSERVATION, PADDING).to(torch.int8)
    torch.manual_seed(1)
    values = torch.randn(5, 5, 2, dtype=torch.float64)
    mask = torch.rand(5, 5, 2) < 0.7
    mask[4, 1] = False  # an observation slot with no variable observed
    mask[0, :, 1] = False  # a variable never observed in row 0
    values = torch.where(mask & (kind == OBSERVATION).unsqueeze(-1), values, nan)  # NaN must never enter
    return times, values, mask, kind


def _both_cells(kind_of_cell, features=2):
    torch.manual_seed(2)
    fast = GAP_CELLS[kind_of_cell](features, 3).double()
    reference = _stepwise(GAP_CELLS[kind_of_cell])(features, 3).double()
    reference.load_state_dict(fast.state_dict())
    return fast, reference


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("record", [False, True])
def test_scan_fast_path_equals_the_generic_scan_with_its_gradients(kind_of_cell, reverse, record):
    times, values, mask, kind = _ragged_batch()
    fast, reference = _both_cells(kind_of_cell)
    h0 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    results = [scan(cell, h0, times, values, mask, kind, reverse=reverse, record=record) for cell in (fast, reference)]
    torch.testing.assert_close(results[0].final, results[1].final, **EXACT)
    # the row without observations keeps h0; the row with one took exactly one step
    torch.testing.assert_close(results[0].final[3], h0[3])
    if record:
        torch.testing.assert_close(results[0].before, results[1].before, **EXACT)
    torch.manual_seed(3)
    outputs = [(r.final, r.before) if record else (r.final,) for r in results]
    weights = [torch.randn_like(o) for o in outputs[0]]
    grads = []
    for cell, out in zip((fast, reference), outputs):
        loss = sum((o * w).sum() for o, w in zip(out, weights))
        grads.append(torch.autograd.grad(loss, (h0, *cell.parameters())))
    for got, want in zip(*grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, **EXACT)


def test_scan_fast_path_with_query_slots_equals_the_generic_scan(kind_of_cell):
    times, values, mask, kind = _ragged_batch()
    kind = kind.clone()
    kind[0, 2] = QUERY  # a query between observations: records, never changes the carried state
    kind[4, 0] = QUERY  # a query before any observation
    fast, reference = _both_cells(kind_of_cell)
    h0 = torch.randn(5, 3, dtype=torch.float64)
    got, want = (scan(cell, h0, times, values, mask, kind, record=True) for cell in (fast, reference))
    torch.testing.assert_close(got.final, want.final, **EXACT)
    torch.testing.assert_close(got.before, want.before, **EXACT)


def test_the_latent_ode_and_rnn_delta_t_read_through_the_fast_path(kind_of_cell, monkeypatch):
    from neurode.framework.model import build_model

    calls = []
    gap_cell = GAP_CELLS[kind_of_cell]
    original = gap_cell.observe_sequence
    monkeypatch.setattr(gap_cell, "observe_sequence", lambda self, *a: calls.append(1) or original(self, *a))
    from neurode.datasets import TrajectoryDataset, irregular_example

    dataset = TrajectoryDataset(irregular_example(4, 5, seed=0), mode="padded")
    batch = dataset.collate_fn(dataset.__getitems__(list(range(4))))
    latent = build_model("latent_ode", n_features=3, n_static=1,
                         options={"encoder_hidden": 4, "encoder_cell": kind_of_cell})
    latent.posterior_parameters(batch)
    if kind_of_cell == "tanh":  # the RNN-Δt model is a GRU
        assert len(calls) == 1
        return
    rnn = build_model("rnn_delta_t", n_features=3, n_static=1, options={"hidden_size": 4})
    rnn.predict(batch)
    rnn.predict(batch, times=torch.linspace(0.0, 1.0, 3))
    assert len(calls) == 3


def _flushed() -> bool:
    return float(torch.full((1,), 1e-310, dtype=torch.float64).mul_(1.0)) == 0.0


@pytest.mark.parametrize("before", [False, True])
def test_subnormals_are_flushed_inside_and_the_callers_mode_restored(before):
    if not torch.set_flush_denormal(before):
        pytest.skip("this CPU cannot flush subnormal numbers")
    try:
        with subnormals_flushed(torch.device("cpu")):
            assert _flushed()
        assert _flushed() == before
    finally:
        torch.set_flush_denormal(False)


def test_the_backward_pass_runs_flushed_and_leaves_the_mode_as_it_was(kind_of_cell, monkeypatch):
    """Vanishing gradients turn subnormal after some steps back; flushed, they cost no microcode assists."""
    import importlib

    module = importlib.import_module(READERS[kind_of_cell][0].__module__)
    seen = []
    original = module._backward_through_time

    def recording(ctx, grad):
        seen.append(_flushed())
        return original(ctx, grad)

    monkeypatch.setattr(module, "_backward_through_time", recording)
    read, cell, x, h0 = _cell_and_inputs(kind_of_cell)
    read(cell, x, h0).sum().backward()
    assert seen == [True] and not _flushed()


def test_the_tanh_backward_work_buffer_is_reused_and_never_leaks_into_gradients():
    """``elman_sequence``'s backward pass writes into one kept buffer (``scratch``): passes of different sizes one
    after another, and a second backward of a retained graph, still give the stepped cell's gradients exactly,
    and no gradient aliases the buffer."""
    from neurode.plugins.models import recurrent_sequence

    first = recurrent_sequence.scratch((2, 3), torch.zeros(1, dtype=torch.float64))
    again = recurrent_sequence.scratch((3, 2), torch.zeros(1, dtype=torch.float64))
    assert again.data_ptr() == first.data_ptr()  # the same memory, not a new allocation
    assert recurrent_sequence.scratch((2,), torch.zeros(1)).dtype == torch.float32  # one buffer per dtype
    for batch, steps in ((4, 6), (7, 9), (3, 2)):  # growing, then shrinking: a view of the grown buffer
        read, cell, x, h0 = _cell_and_inputs("tanh", batch=batch, steps=steps)
        fast, reference = read(cell, x, h0), _stepped(cell, x, h0)
        weights = torch.randn_like(reference)
        inputs = (x, h0, *cell.parameters())
        want = _grads(reference, weights, inputs)
        once = torch.autograd.grad((fast * weights).sum(), inputs, retain_graph=True)
        twice = torch.autograd.grad((fast * weights).sum(), inputs)  # the buffer was written again in between
        buffer = recurrent_sequence.scratch((1,), x)
        for got_once, got_twice, expected in zip(once, twice, want):
            torch.testing.assert_close(got_once, expected, **EXACT)
            torch.testing.assert_close(got_twice, expected, **EXACT)
            assert got_once.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr()
