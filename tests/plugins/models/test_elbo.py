"""The Latent ODE's objective: IWAE bound by hand, KL in closed form, annealing schedules."""

from __future__ import annotations

import math

import pytest
import torch

from neurode.plugins.models import elbo


def test_kl_matches_torch_distributions():
    mean, log_var = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(elbo.gaussian_kl_to_standard(mean, log_var), expected)


def test_iwae_bound_is_the_log_mean_of_importance_weights():
    torch.manual_seed(0)
    k, batch, latent = 3, 2, 2
    mean, log_var = torch.randn(batch, latent), torch.randn(batch, latent)
    z0 = torch.randn(k, batch, latent)
    log_lik = torch.randn(k, batch)
    bound, _ = elbo.variational_bound(log_lik, z0, mean, log_var)
    p = torch.distributions.Normal(torch.zeros(latent), torch.ones(latent))
    for b in range(batch):
        posterior = torch.distributions.Normal(mean[b], torch.exp(0.5 * log_var[b]))
        weights = [math.exp(float(log_lik[i, b] + p.log_prob(z0[i, b]).sum() - posterior.log_prob(z0[i, b]).sum()))
                   for i in range(k)]
        assert float(bound[b]) == pytest.approx(math.log(sum(weights) / k), rel=1e-5)


def test_iwae_bound_tightens_with_more_samples():
    """E[log mean w] grows with k (Burda et al. 2016, theorem 1): checked on a conjugate toy."""
    torch.manual_seed(0)
    mean, log_var = torch.zeros(4000, 1), torch.full((4000, 1), math.log(2.0))  # a deliberately poor posterior

    def bound(k):
        z0 = mean + torch.exp(0.5 * log_var) * torch.randn(k, 4000, 1)
        log_lik = torch.distributions.Normal(z0[..., 0], 1.0).log_prob(torch.tensor(1.0))
        return float(elbo.variational_bound(log_lik, z0, mean, log_var)[0].mean())

    assert bound(1) < bound(4) < bound(16)


@pytest.mark.parametrize(("schedule", "expected"), [
    ("none", [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
    ("cyclical", [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]),
])
def test_kl_schedules(schedule, expected):
    assert [elbo.kl_weight(schedule, step, 4) for step in range(6)] == expected
    with pytest.raises(ValueError, match="unknown KL schedule 'cosine'"):
        elbo.kl_weight("cosine", 0, 4)
