"""Models ``ode_rnn``, ``rnn_delta_t``, ``rnn_decay``: causal forecasts, masks, shapes, manual loops, save/load."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import neurode
from neurode.datasets import TrajectoryDataset, irregular_example
from neurode.framework.errors import InvalidInputError
from neurode.framework.model import AbstractModel, SolveSettings, build_model, rebuild_model
from neurode.training import rundir as rd

NAMES = ("ode_rnn", "rnn_delta_t", "rnn_decay")


def _batch(n=8, max_obs=7, seed=0):
    dataset = TrajectoryDataset(irregular_example(n, max_obs, seed=seed), mode="padded")
    return dataset.collate_fn(dataset.__getitems__(list(range(n))))


@pytest.fixture
def batch():
    return _batch()


def _model(name, **options):
    torch.manual_seed(0)
    model = build_model(name, n_features=3, n_static=1, solve=SolveSettings(rtol=1e-7, atol=1e-9), dynamics="mlp",
                        dynamics_options={"width": 8}, options={"hidden_size": 6, "decoder_width": 8, **options})
    torch.nn.init.normal_(model.initial_state, std=0.5)  # a non-zero state, so that decay and flow show
    return model


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_built_with_only_the_options_each_takes(name):
    model = _model(name)
    assert isinstance(model, AbstractModel) and neurode.get_registry().get("model", name).source.builtin
    assert ("solve" in model.config()) == (name == "ode_rnn")  # the baselines solve no ODE


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_on_tiny_data(batch, name):
    model = _model(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss, metrics = model.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert ("nfe" in metrics) == (name == "ode_rnn")


@pytest.mark.parametrize("name", NAMES)
def test_forecasts_are_causal(batch, name):
    """Changing the observation at slot j changes no prediction at slots <= j (it is read after them)."""
    model = _model(name)
    pred = model.predict(batch)
    j = 3
    values = batch.values.clone()
    values[:, j:] += 5.0
    changed = model.predict(dataclasses.replace(batch, values=values))
    torch.testing.assert_close(changed[:, : j + 1], pred[:, : j + 1], equal_nan=True)
    later = batch.time_mask[:, j + 1]
    assert not torch.allclose(changed[later, j + 1], pred[later, j + 1])


@pytest.mark.parametrize("name", NAMES)
def test_an_unobserved_slot_never_reaches_the_loss_nor_its_gradient(batch, name):
    model = _model(name)
    unobserved = ~(batch.mask & batch.time_mask.unsqueeze(-1))
    poisoned = dataclasses.replace(batch, values=torch.where(unobserved, float("nan"), batch.values))
    grads = []
    for candidate in (batch, poisoned):
        model.zero_grad()
        loss, _ = model.loss(candidate)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_for_batch_one_ragged_batches_and_given_times(batch, name):
    model = _model(name)
    pred = model.predict(batch)
    n = batch.time_mask.sum(1)
    for b in range(8):
        assert torch.isfinite(pred[b, : n[b]]).all() and torch.isnan(pred[b, n[b]:]).all()
    single = _batch(1, 5)
    assert model.predict(single).shape == (1, 5, 3)
    assert model.predict(single, times=torch.linspace(0, 20, 9)).shape == (1, 9, 3)
    assert model.predict(batch, times=torch.linspace(0, 20, 4)).shape == (8, 4, 3)
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        model.predict(batch, times=torch.tensor([2.0, 1.0]))


@pytest.mark.parametrize("name", NAMES)
def test_prediction_at_the_observation_times_is_the_one_step_ahead_forecast(name):
    single = _batch(1, 7)
    model = _model(name)
    torch.testing.assert_close(model.predict(single, times=single.times[0]), model.predict(single),
                               rtol=1e-4, atol=1e-5)


def test_ode_rnn_extrapolation_is_the_flow_from_the_last_observation():
    single = _batch(1, 5)
    model = _model("ode_rnn")
    cell = model.recurrent
    t_last = single.times[0, -1]
    times = t_last + torch.tensor([0.5, 2.0], dtype=torch.float64)
    # the state after the last observation is the state before a query exactly at it... read forwards by hand
    h = model.initial_state[None] + model.static_state(single.static)
    for j in range(5):
        if j:
            h = neurode.solve(cell.dynamics, h, single.times[0, j - 1:j + 1], rtol=1e-7, atol=1e-9).ys[-1]
        m = single.mask[0, j][None]
        h = cell.gru(torch.cat([torch.where(m, single.values[0, j][None], 0.0), m.float()], -1), h)
    flow = neurode.solve(cell.dynamics, h, torch.cat([t_last[None], times]), rtol=1e-7, atol=1e-9).ys[1:, 0]
    torch.testing.assert_close(model.predict(single, times=times)[0], model.decoder(flow), rtol=1e-4, atol=1e-5)


def test_rnn_decay_equals_a_manual_forward_loop(batch):
    model = _model("rnn_decay")
    cell = model.recurrent
    pred = model.predict(batch)
    for b in (0, 4):
        n = int(batch.time_mask[b].sum())
        h = model.initial_state[None] + model.static_state(batch.static[b:b + 1])
        for j in range(n):
            gap = (batch.times[b, j] - batch.times[b, j - 1] if j else torch.tensor(0.0)).float().reshape(1, 1)
            if j:
                h = h * torch.exp(-torch.relu(cell.decay(gap)))
            torch.testing.assert_close(pred[b, j], model.decoder(h)[0])
            m = batch.mask[b, j][None]
            h = cell.gru(torch.cat([torch.where(m, batch.values[b, j][None], 0.0), m.float(), gap], -1), h)


def test_rnn_delta_t_equals_a_manual_forward_loop(batch):
    """The one-step-ahead states, which the scan advances for all slots in one call after its loop."""
    model = _model("rnn_delta_t")
    gru = model.recurrent.gru
    pred = model.predict(batch)
    assert not bool(batch.time_mask.all()), "the batch should be ragged, so that padding is crossed too"
    for b in range(batch.batch_size):
        n = int(batch.time_mask[b].sum())
        h = model.initial_state[None] + model.static_state(batch.static[b:b + 1])
        for j in range(n):
            gap = (batch.times[b, j] - batch.times[b, j - 1] if j else torch.tensor(0.0)).float().reshape(1, 1)
            ahead = gru(torch.cat([torch.zeros(1, 6), gap], -1), h) if j and float(gap) else h
            torch.testing.assert_close(pred[b, j], model.decoder(ahead)[0])
            m = batch.mask[b, j][None]
            h = gru(torch.cat([torch.where(m, batch.values[b, j][None], 0.0), m.float(), gap], -1), h)


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_gives_identical_predictions(batch, name, tmp_path):
    model = _model(name)
    rd.save_tensors(tmp_path / "model.safetensors", model.state_dict())
    again = rebuild_model(name, model.config())
    again.load_state_dict(rd.load_tensors(tmp_path / "model.safetensors"))
    assert again.config() == model.config()
    torch.testing.assert_close(again.predict(batch), model.predict(batch), rtol=0, atol=0, equal_nan=True)
