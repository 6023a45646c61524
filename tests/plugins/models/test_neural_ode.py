"""Model ``neural_ode``: per-sample solves on padded batches, masked loss, z0, statics, config round trip."""

from __future__ import annotations

import math

import pytest
import torch

import neurode
from neurode.datasets import TrajectoryDataset, irregular_example
from neurode.framework.errors import InvalidInputError
from neurode.framework.model import AbstractModel, SolveSettings, build_model, rebuild_model


@pytest.fixture
def batch():
    dataset = TrajectoryDataset(irregular_example(8, 7), mode="padded")
    return dataset.collate_fn(dataset.__getitems__(list(range(8))))


def _model(**options):
    torch.manual_seed(0)
    return build_model("neural_ode", n_features=3, n_static=1, solve=SolveSettings(rtol=1e-6, atol=1e-8),
                       dynamics="mlp", dynamics_options={"width": 8}, options=options)


def test_is_an_abstract_model_built_through_the_registry():
    model = _model()
    assert isinstance(model, AbstractModel)
    assert neurode.get_registry().get("model", "neural_ode").source.builtin
    assert model.conditioned  # the mlp accepts condition_dim: statics condition the field


def test_config_rebuilds_the_same_model(batch):
    model = _model(latent_dim=5, readout=True)
    again = rebuild_model("neural_ode", model.config())
    again.load_state_dict(model.state_dict())
    assert again.config() == model.config()
    torch.testing.assert_close(again.predict(batch), model.predict(batch), equal_nan=True)


def test_each_trajectory_is_solved_on_its_own_times(batch):
    """Row b of the prediction equals a solve of trajectory b alone on exactly its observation times."""
    model = _model()
    torch.nn.init.normal_(model.dynamics.net[-1].weight, std=0.3)
    pred = model.predict(batch)
    for b in (0, 3):
        n = int(batch.time_mask[b].sum())
        z0 = model.initial_latent(batch)[b:b + 1]
        condition = batch.static[b:b + 1]
        solution = neurode.solve(lambda t, z: model.dynamics(t, z, condition), z0, batch.times[b, :n],
                                 rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(pred[b, :n], solution.ys[:, 0], rtol=1e-4, atol=1e-5)
        assert torch.isnan(pred[b, n:]).all()  # padding is not a prediction


def test_first_observed_values_are_z0(batch):
    model = _model()
    pred = model.predict(batch)
    seen = batch.mask[:, 0]
    assert torch.equal(pred[:, 0][seen], batch.values[:, 0][seen])


def test_loss_is_the_masked_mse_and_ignores_unobserved_values(batch):
    model = _model()
    loss, metrics = model.loss(batch)
    pred = model.predict(batch).detach()
    observed = batch.mask & batch.time_mask[..., None]
    expected = ((pred - batch.values)[observed] ** 2).mean()
    torch.testing.assert_close(loss.detach(), expected)
    assert metrics["nfe"] > 0 and metrics["nfe_per_sample"] > 0
    # a value nobody observed can be anything without changing the loss
    poisoned = batch.values.clone()
    poisoned[~observed] = 1e6
    from dataclasses import replace
    assert torch.equal(model.loss(replace(batch, values=poisoned))[0], loss)


def test_gradients_reach_dynamics_and_encoder_and_backsolve_agrees(batch):
    direct = _model(initial_state="encoder")
    torch.nn.init.normal_(direct.encoder[-1].weight, std=0.1)
    loss, _ = direct.loss(batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in direct.named_parameters()}
    assert grads["dynamics.net.4.weight"].abs().sum() > 0
    assert grads["encoder.2.weight"].abs().sum() > 0
    back = rebuild_model("neural_ode", {**direct.config(), "solve": {**direct.config()["solve"],
                                                                     "adjoint": "backsolve"}})
    back.load_state_dict(direct.state_dict())
    back.loss(batch)[0].backward()
    for name, p in back.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-3, atol=1e-5)
    assert back.solve_stats()["nfe_backward"] > 0


def test_predicts_at_given_times_including_t0_and_extrapolation(batch):
    model = _model()
    t0 = batch.times[:, 0]
    start = float(t0.max())
    times = torch.tensor([start, start + 1.0, 20.0])
    pred = model.predict(batch, times=times)
    assert pred.shape == (8, 3, 3)
    assert torch.isfinite(pred).all()
    # where the requested time is t0 itself, the prediction is z0
    at_t0 = t0 == start
    torch.testing.assert_close(pred[at_t0, 0], model.initial_latent(batch)[at_t0, :3])


def test_prediction_times_before_t0_are_refused(batch):
    model = _model()
    with pytest.raises(InvalidInputError, match="before trajectory"):
        model.predict(batch, times=torch.tensor([-1.0, 1.0]))


def test_bad_options_are_reported_together():
    with pytest.raises(InvalidInputError) as info:
        build_model("neural_ode", n_features=3, options={"latent_dim": 2, "initial_state": "zero"})
    assert "latent_dim must be an integer >= n_features (3), got 2" in str(info.value)
    assert "initial_state must be one of first, encoder, got 'zero'" in str(info.value)


def test_union_batches_are_refused_with_the_reason():
    dataset = TrajectoryDataset(irregular_example(4, 5), mode="union")
    union = dataset.collate_fn(dataset.__getitems__([0, 1]))
    with pytest.raises(InvalidInputError, match="padded batches"):
        _model().loss(union)


def test_fits_a_linear_spiral_quickly():
    """A real fit: the masked loss falls well below its start on exact spiral data."""
    from neurode.datasets.simulation import simulate

    ds = simulate("spiral_linear", n_trajectories=8, n_obs=12, t_span=(0.0, 3.0), sampling="irregular", seed=1)
    dataset = TrajectoryDataset(ds, mode="padded")
    batch = dataset.collate_fn(dataset.__getitems__(list(range(8))))
    torch.manual_seed(0)
    model = build_model("neural_ode", n_features=2, dynamics="linear", solve=SolveSettings(rtol=1e-5, atol=1e-6))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(40):
        optimizer.zero_grad()
        loss, _ = model.loss(batch)
        first = first if first is not None else float(loss.detach())
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05 * first
    a = model.dynamics.linear.weight.detach().numpy()
    # the rotation of dz/dt = [[-0.1, -1], [1, -0.1]] z is what the data pins down first
    assert abs(a[0, 1] + 1.0) < 0.25 and abs(a[1, 0] - 1.0) < 0.25, a
    assert math.isfinite(float(loss.detach()))


def test_a_readout_gets_finite_gradients_on_a_ragged_batch(batch):
    # the latent is NaN at the padding of a ragged batch; it must reach neither the loss nor the readout's gradient
    assert bool(~batch.time_mask.all())  # the fixture's batch is ragged
    model = _model(readout=True, latent_dim=4)
    loss, _ = model.loss(batch)
    loss.backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert model.readout.weight.grad.abs().sum() > 0
