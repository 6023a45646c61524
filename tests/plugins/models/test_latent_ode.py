"""Model ``latent_ode``: the ELBO by hand, masks, ragged shapes, backwards encoders, samples, save/load, training."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

import neurode
from neurode.datasets import TrajectoryDataset, irregular_example
from neurode.datasets.batch import Trajectory, collate_padded
from neurode.framework.errors import InvalidInputError
from neurode.framework.model import AbstractModel, SolveSettings, build_model, rebuild_model
from neurode.plugins.models.irregular_scan import observation_kinds, scan
from neurode.training import rundir as rd

TIGHT = SolveSettings(rtol=1e-7, atol=1e-9)


def _batch(n=8, max_obs=7, seed=0):
    dataset = TrajectoryDataset(irregular_example(n, max_obs, seed=seed), mode="padded")
    return dataset.collate_fn(dataset.__getitems__(list(range(n))))


@pytest.fixture
def batch():
    return _batch()


def _model(solve=TIGHT, **options):
    torch.manual_seed(0)
    return build_model("latent_ode", n_features=3, n_static=1, solve=solve, dynamics="mlp",
                       dynamics_options={"width": 8}, options={"encoder_hidden": 6, "decoder_width": 8, **options})


def test_is_an_abstract_model_built_through_the_registry():
    model = _model()
    assert isinstance(model, AbstractModel)
    assert neurode.get_registry().get("model", "latent_ode").source.builtin
    assert model.batch_mode == "padded"


def test_bad_options_are_refused_by_name():
    with pytest.raises(InvalidInputError, match="encoder must be one of rnn, ode_rnn, got 'lstm'"):
        _model(encoder="lstm")
    with pytest.raises(InvalidInputError, match="encoder_cell must be one of gru, tanh, got 'lstm'"):
        _model(encoder_cell="lstm")
    with pytest.raises(InvalidInputError, match="encoder_cell 'tanh' is a cell of the rnn encoder; encoder 'ode_rnn' "
                                                "takes encoder_cell 'gru'"):
        _model(encoder="ode_rnn", encoder_cell="tanh")
    with pytest.raises(InvalidInputError, match="iwae_samples must be an integer >= 1, got 0"):
        _model(iwae_samples=0)
    with pytest.raises(InvalidInputError, match="noise_std must be a positive number, got -1"):
        _model(noise_std=-1)
    for bad in (0, 1.5, True, "half", [0.5], [0.8, 0.5], [0.5, 1.2]):
        expected = (r"encode_fraction must be a number in \(0, 1\] or a range \[low, high\] with "
                    rf"0 < low <= high <= 1, got {re.escape(repr(bad))}")
        with pytest.raises(InvalidInputError, match=expected):
            _model(encode_fraction=bad)


@pytest.mark.parametrize("depth", [0, 2])
def test_decoder_depth_sets_the_hidden_layers_and_survives_a_rebuild(batch, depth, tmp_path):
    model = _model(decoder_depth=depth)
    linears = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 8)] * min(depth, 1) + [(8, 8)] * (depth - 1) + [
        (8 if depth else 4, 3)]
    loss, _ = model.loss(batch)
    loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    again = rebuild_model("latent_ode", model.config())
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.predict(batch), model.predict(batch), rtol=0, atol=0, equal_nan=True)
    with pytest.raises(InvalidInputError, match="decoder_depth must be an integer >= 0, got -1"):
        _model(decoder_depth=-1)


def test_elbo_with_one_sample_is_the_closed_form_kl_plus_the_likelihood_by_hand(batch):
    """One trajectory at a time: solve alone, decode, sum log N over observed entries, subtract KL."""
    model = _model(noise_std=0.3)
    torch.nn.init.normal_(model.dynamics.net[-1].weight, std=0.3)
    torch.manual_seed(7)
    loss, metrics = model.loss(batch)
    torch.manual_seed(7)  # the encoder draws nothing: the same eps again
    mean, log_var = model.posterior_parameters(batch)
    eps = torch.randn(1, *mean.shape)[0]
    z0 = mean + torch.exp(0.5 * log_var) * eps
    bounds = []
    for b in range(batch.batch_size):
        n = int(batch.time_mask[b].sum())
        times = batch.times[b, :n]
        if n > 1:
            latent = neurode.solve(model.dynamics, z0[b], times, rtol=1e-7, atol=1e-9).ys
        else:
            latent = z0[b][None]
        decoded = model.decoder(latent)
        log_lik = 0.0
        for j in range(n):
            for f in range(3):
                if batch.mask[b, j, f]:
                    x, mu = float(batch.values[b, j, f]), float(decoded[j, f].detach())
                    log_lik += -0.5 * math.log(2 * math.pi) - math.log(0.3) - 0.5 * ((x - mu) / 0.3) ** 2
        q = torch.distributions.Normal(mean[b], torch.exp(0.5 * log_var[b]))
        p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
        kl = float(torch.distributions.kl_divergence(q, p).sum().detach())
        bounds.append(log_lik - kl)
    assert float(loss.detach()) == pytest.approx(-sum(bounds) / len(bounds), rel=1e-4)


ENCODERS = [("rnn", "gru"), ("rnn", "tanh"), ("ode_rnn", "gru")]


@pytest.mark.parametrize(("encoder", "cell"), ENCODERS)
def test_loss_falls_on_tiny_data(batch, encoder, cell):
    model = _model(solve=SolveSettings(), encoder=encoder, encoder_cell=cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        torch.manual_seed(1)  # the same eps every step: the fall is the model's, not the noise's
        loss, metrics = model.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    assert {"neg_elbo", "nll", "kl", "kl_weight", "mse", "nfe"} <= metrics.keys()


def test_an_unobserved_slot_never_reaches_the_loss_nor_its_gradient(batch):
    """NaN (or any garbage) where the mask is False changes nothing, gradients included."""
    model = _model()
    unobserved = ~(batch.mask & batch.time_mask.unsqueeze(-1))
    poisoned = dataclasses.replace(batch, values=torch.where(unobserved, float("nan"), batch.values))
    results = []
    for candidate in (batch, poisoned):
        model.zero_grad()
        torch.manual_seed(3)
        loss, _ = model.loss(candidate)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.isfinite(results[1][0])
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b)


def test_a_variable_never_observed_contributes_nothing(batch):
    model = _model()
    mask = batch.mask.clone()
    mask[..., 0] = False
    silent = dataclasses.replace(batch, mask=mask)
    other = dataclasses.replace(silent, values=torch.where(mask, batch.values, torch.randn_like(batch.values)))
    torch.manual_seed(3)
    a, _ = model.loss(silent)
    torch.manual_seed(3)
    b, _ = model.loss(other)
    assert float(a) == float(b)


def test_shapes_for_batch_one_and_ragged_batches(batch):
    model = _model()
    assert model.predict(batch).shape == (8, 7, 3)
    n = batch.time_mask.sum(1)
    pred = model.predict(batch)
    for b in range(8):
        assert torch.isfinite(pred[b, : n[b]]).all() and torch.isnan(pred[b, n[b]:]).all()
    single = _batch(1, 5)
    assert model.predict(single).shape == (1, 5, 3)
    loss, _ = model.loss(single)
    assert loss.shape == ()
    times = single.times[0, 0] + torch.linspace(0, 20, 9, dtype=torch.float64)  # beyond the window: extrapolation
    assert model.predict(single, times=times).shape == (1, 9, 3)
    assert model.predict(batch, samples=5).shape == (5, 8, 7, 3)
    assert model.predict(batch, times=batch.times[:, :1] + torch.tensor([0.0, 1.0]), samples=2).shape == (2, 8, 2, 3)


def test_prediction_at_given_times_matches_the_observation_times(batch):
    """Interpolation at a trajectory's own times (t0 included) equals the prediction on the batch."""
    model = _model()
    torch.nn.init.normal_(model.dynamics.net[-1].weight, std=0.3)
    single = _batch(1, 7)  # no padding
    again = model.predict(single, times=single.times[0])
    torch.testing.assert_close(again, model.predict(single), rtol=1e-4, atol=1e-5)


def test_times_before_the_first_observation_are_refused(batch):
    model = _model()
    with pytest.raises(InvalidInputError, match="before trajectory 0's first observation"):
        model.predict(batch, times=torch.tensor([0.0, 1.0]) + batch.times[0, 0] - 0.5)
    with pytest.raises(InvalidInputError, match="samples must be a positive integer"):
        model.predict(batch, samples=0)


def test_posterior_samples_spread_around_the_mean_prediction(batch):
    model = _model()
    with torch.no_grad():
        model.posterior.bias[4:] = math.log(0.5**2)  # posterior variance well above zero
    torch.manual_seed(0)
    draws = model.predict(batch, samples=64)
    mean = model.predict(batch)
    observed = batch.time_mask
    assert (draws.std(0)[observed] > 0).all()
    # at t0 the decoder is the only map: samples scatter about the decoded posterior mean
    assert (draws.mean(0)[:, 0] - mean[:, 0]).abs().max() < 3 * draws.std(0)[:, 0].max()


@pytest.mark.parametrize(("encoder", "cell"), ENCODERS)
def test_backwards_encoder_equals_a_reversed_manual_loop(batch, encoder, cell):
    model = _model(encoder=encoder, encoder_cell=cell)
    reader = model.encoder
    h_scan = scan(reader, torch.zeros(8, 6), batch.times, batch.values, batch.mask,
                  observation_kinds(batch.time_mask), reverse=True).final
    for b in (0, 3, 5):
        n = int(batch.time_mask[b].sum())
        h = torch.zeros(1, 6)
        for j in reversed(range(n)):
            gap = batch.times[b, j + 1] - batch.times[b, j] if j < n - 1 else torch.tensor(0.0, dtype=torch.float64)
            m = batch.mask[b, j][None]
            x = torch.where(m, batch.values[b, j][None], 0.0)
            if encoder == "rnn":
                rnn = reader.gru if cell == "gru" else reader.rnn
                h = rnn(torch.cat([x, m.float(), gap.float().reshape(1, 1)], -1), h)
            else:
                if j < n - 1:  # backwards in time from the later observation
                    h = neurode.solve(reader.dynamics, h, batch.times[b, j:j + 2].flip(0), rtol=1e-7, atol=1e-9).ys[-1]
                h = reader.gru(torch.cat([x, m.float()], -1), h)
        torch.testing.assert_close(h_scan[b], h[0], rtol=1e-4, atol=1e-5)


def test_iwae_bound_with_k_samples(batch):
    model = _model(iwae_samples=4)
    torch.manual_seed(0)
    loss, metrics = model.loss(batch)
    assert torch.isfinite(loss) and loss.shape == ()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_learned_noise_is_a_parameter_and_fixed_noise_is_not(batch):
    fixed, learned = _model(), _model(learn_noise=True, noise_std=0.5)
    assert "log_noise_std" not in dict(fixed.named_parameters())
    assert "log_noise_std" in fixed.state_dict()
    loss, metrics = learned.loss(batch)
    loss.backward()
    assert learned.log_noise_std.grad is not None and metrics["noise_std"] == pytest.approx(0.5)


def test_kl_schedule_counts_training_steps_only(batch):
    model = _model(kl_schedule="linear", kl_anneal_steps=4)
    weights = [model.loss(batch)[1]["kl_weight"] for _ in range(6)]
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    model.eval()
    model.loss(batch)
    assert int(model.kl_step) == 6


@pytest.mark.parametrize(("encoder", "cell"), [("ode_rnn", "gru"), ("rnn", "tanh")])
def test_save_then_load_gives_identical_predictions(batch, tmp_path, encoder, cell):
    model = _model(encoder=encoder, encoder_cell=cell, learn_noise=True, kl_schedule="cyclical", kl_anneal_steps=10)
    torch.nn.init.normal_(model.dynamics.net[-1].weight, std=0.3)
    model.loss(batch)  # advance the KL step counter
    rd.save_tensors(tmp_path / "model.safetensors", model.state_dict())
    again = rebuild_model("latent_ode", model.config())
    again.load_state_dict(rd.load_tensors(tmp_path / "model.safetensors"))
    assert again.config() == model.config() and int(again.kl_step) == 1
    torch.testing.assert_close(again.predict(batch), model.predict(batch), rtol=0, atol=0, equal_nan=True)


def test_trains_from_the_trainer_like_any_model(tmp_path):
    from neurode.datasets.io import write_zarr

    store = tmp_path / "data.zarr"
    write_zarr(irregular_example(16, 6, seed=3), store)
    run = neurode.train({
        "data": {"path": str(store)},
        "model": {"name": "latent_ode", "options": {"encoder_hidden": 8, "kl_schedule": "linear",
                                                    "kl_anneal_steps": 4, "encode_fraction": [0.5, 1.0]}},
        "dynamics": {"options": {"width": 8, "depth": 1}},
        "training": {"epochs": 2, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
        "runtime": {"threads": 1, "device": "cpu"},
        "output": {"dir": str(tmp_path / "run")},
    })
    assert run.summary["status"] == "completed" and run.summary["best_val_rmse"] is not None
    assert (tmp_path / "run" / "predictions.png").is_file()
    # the terms of the ELBO reach metrics.jsonl beside the trainer's own columns
    rows = [r for r in run.metrics if "loss" in r]
    assert rows and all({"nll", "kl", "kl_weight"} <= r.keys() for r in rows)
    # the KL schedule's step counter travels with the weights (a resumed run continues it)
    assert int(rd.load_tensors(tmp_path / "run" / "model.safetensors")["kl_step"]) == run.summary["step"] == 4
    # a range option survives the run's config.toml: the loaded run trains with the same objective
    assert neurode.load_run(tmp_path / "run").model.encode_fraction == [0.5, 1.0]


def _spiral_like_batch(lengths_and_times):
    """A padded batch of two-feature trajectories on the given times, values drawn from a fixed seed."""
    generator = torch.Generator().manual_seed(3)
    items = []
    for i, times in enumerate(lengths_and_times):
        values = torch.randn(len(times), 2, generator=generator)
        items.append(Trajectory(index=i, times=torch.tensor(times, dtype=torch.float64), values=values,
                                mask=torch.ones_like(values, dtype=torch.bool), static=torch.zeros(0)))
    return items


def test_encode_fraction_reads_the_first_part_and_scores_the_whole_window():
    """Rubanova et al.'s extrapolation objective: q(z0) from the observations up to t0 + f (t_last - t0) only
    (the same posterior as on the truncated trajectories), the likelihood from all of them."""
    times = [[0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 1.5, 4.0], [0.0, 0.1, 0.2, 2.0]]
    items = _spiral_like_batch(times)
    batch = collate_padded(items, feature_names=("x", "y"))
    # cut-offs at f = 0.5: 2.0, 2.5 and 1.0 -> the first 3, 2 and 3 observations
    truncated = collate_padded([dataclasses.replace(item, times=item.times[:n], values=item.values[:n],
                                                    mask=item.mask[:n]) for item, n in zip(items, (3, 2, 3))],
                               feature_names=("x", "y"))
    torch.manual_seed(0)
    model = build_model("latent_ode", n_features=2, solve=TIGHT, dynamics_options={"width": 8},
                        options={"encoder_hidden": 6, "decoder_width": 8, "encode_fraction": 0.5})
    posteriors = []
    model.posterior.register_forward_hook(lambda module, args, out: posteriors.append(out.detach()))
    loss, _ = model.loss(batch)
    torch.testing.assert_close(posteriors[-1], model.posterior(_encode(model, truncated)))
    # changing an observation past a cut-off changes the likelihood, not the posterior
    later = dataclasses.replace(batch, values=batch.values.clone())
    later.values[0, 4] += 5.0
    again, _ = model.loss(later)
    torch.testing.assert_close(posteriors[-1], posteriors[0])
    assert float(again.detach()) > float(loss.detach()) + 1.0
    # predict() reads every observation: the same as the model with f = 1 and the same weights
    whole = rebuild_model("latent_ode", {**model.config(), "encode_fraction": 1.0})
    whole.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.predict(later), whole.predict(later), rtol=0, atol=0, equal_nan=True)
    assert not torch.allclose(model.posterior_parameters(later)[0], model.posterior_parameters(truncated)[0])
    assert rebuild_model("latent_ode", model.config()).encode_fraction == 0.5


def _encode(model, batch):
    """The encoder's last hidden state on ``batch`` read backwards (what feeds the posterior layer)."""
    h0 = batch.values.new_zeros(batch.batch_size, model.encoder_hidden)
    return scan(model.encoder, h0, batch.times, batch.values, batch.mask, observation_kinds(batch.time_mask),
                reverse=True).final


def test_an_encode_fraction_range_draws_every_cut_off_between_its_ends():
    """[0.5, 1]: over many steps the encoder reads from half of each trajectory up to all but its last point."""
    batch = collate_padded(_spiral_like_batch([[float(t) for t in range(11)], [0.0, 4.0, 7.0, 10.0]]),
                           feature_names=("x", "y"))
    model = build_model("latent_ode", n_features=2, options={"encoder_hidden": 4, "encode_fraction": [0.5, 1.0]})
    assert model.config()["encode_fraction"] == [0.5, 1.0]
    torch.manual_seed(0)
    read = [model.encoder_view(batch).time_mask.sum(dim=1).tolist() for _ in range(200)]
    assert {first for first, _ in read} == set(range(6, 11)) and {second for _, second in read} == {2, 3}


def _linear_field(a_diagonal, b):
    torch.manual_seed(0)
    model = build_model("latent_ode", n_features=3, n_static=1, solve=TIGHT, dynamics="linear",
                        options={"encoder_hidden": 6, "decoder_width": 8, "kinetic_weight": 0.5,
                                 "jacobian_weight": 0.25})
    with torch.no_grad():
        model.dynamics.linear.weight.copy_(torch.diag(torch.tensor(a_diagonal)))
        model.dynamics.linear.bias.copy_(torch.tensor(b))
    return model


def test_field_regularisers_integrate_the_speed_and_the_jacobian_over_each_trajectory(batch):
    """A constant field b: kinetic energy ||b||^2 (t_last - t0) per trajectory; a diagonal A: ||A||_F^2 times the
    duration, exactly (Rademacher probes see a diagonal Jacobian whole); averaged over trajectories."""
    duration = torch.where(batch.time_mask, batch.times, batch.times[:, :1]).amax(1) - batch.times[:, 0]
    constant = _linear_field([0.0] * 4, [1.0, -2.0, 0.5, 0.0])
    z0 = torch.randn(2, batch.batch_size, 4)  # k = 2 samples, each its own trajectory
    grid = batch.solve_times()
    terms = constant.field_regularisers(constant.latent_path(z0, grid), grid)
    terms = {name: float(term.detach()) for name, term in terms.items()}
    assert terms["kinetic_energy"] == pytest.approx(5.25 * float(duration.mean()), rel=1e-6)
    assert terms["jacobian_frobenius"] == 0.0
    decaying = _linear_field([-1.0, -0.5, 0.0, 2.0], [0.0] * 4)
    terms = decaying.field_regularisers(decaying.latent_path(z0, grid), grid)
    assert float(terms["jacobian_frobenius"].detach()) == pytest.approx(5.25 * float(duration.mean()), rel=1e-6)


def test_field_regularisers_join_the_loss_with_their_weights_and_their_gradient_is_exact(batch):
    model = _model(solve=SolveSettings(), kinetic_weight=0.1, jacobian_weight=0.01)
    plain = _model(solve=SolveSettings())
    torch.manual_seed(5)
    loss, metrics = model.loss(batch)
    torch.manual_seed(5)
    bare, bare_metrics = plain.loss(batch)
    assert "kinetic_energy" not in bare_metrics and metrics["kinetic_energy"] > 0 < metrics["jacobian_frobenius"]
    assert float(loss.detach()) == pytest.approx(float(bare.detach()) + 0.1 * metrics["kinetic_energy"]
                                        + 0.01 * metrics["jacobian_frobenius"], rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.dynamics.parameters())
    # the gradient of both terms (the Jacobian's through a second backward pass) against finite differences
    model.double()
    grid = batch.solve_times().double()
    latent = torch.randn(1, batch.batch_size, grid.shape[1], 4, dtype=torch.float64, requires_grad=True)

    def total(latent):
        torch.manual_seed(0)  # the same probes at every evaluation
        terms = model.field_regularisers(latent, grid)
        return terms["kinetic_energy"] + terms["jacobian_frobenius"]

    assert torch.autograd.gradcheck(total, (latent,))


def test_field_regulariser_weights_must_be_finite_and_not_negative():
    for name in ("kinetic_weight", "jacobian_weight"):
        for bad in (-0.1, float("inf"), "1", True):
            expected = f"{name} must be a finite number >= 0, got {re.escape(repr(bad))}"
            with pytest.raises(InvalidInputError, match=expected):
                _model(**{name: bad})
    assert _model(kinetic_weight=0.5).config()["kinetic_weight"] == 0.5
