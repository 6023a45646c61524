"""The variational objective of the Latent ODE: masked Gaussian likelihood, KL, IWAE bound, KL annealing.

For a trajectory x observed at times t with mask m, the approximate posterior
q(z0 | x, t) = N(mu, diag(sigma^2)) and the prior p(z0) = N(0, I):

- log p(x | z0) = sum over observed entries of log N(x_ij; x_hat_ij(z0), s_j^2),
  with x_hat the decoded latent trajectory and s the observation noise (fixed,
  or learned per variable); unobserved entries contribute nothing.
- KL(q || p) = 1/2 sum_l (mu_l^2 + sigma_l^2 - 1 - log sigma_l^2), in closed form
  (Kingma and Welling, 2014, appendix B).
- With one sample the bound is the ELBO with the closed-form KL,
  log p(x | z0) - beta * KL (Chen et al., 2018, sec. 5; torchdiffeq's
  ``examples/latent_ode.py``).
- With k > 1 samples it is the importance-weighted bound (Burda et al., 2016,
  eq. 8): log (1/k) sum_i w_i, log w_i = log p(x | z_i) + beta * (log p(z_i) -
  log q(z_i | x)), tighter than the ELBO and equal to it in expectation at k = 1.
- beta is the KL weight of an annealing schedule: constant 1 (``none``), a
  linear warm-up from 0 to 1 (Bowman et al., 2016), or cyclical warm-ups
  (Fu et al., 2019: within each cycle beta rises linearly over the first half,
  then stays at 1).
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("none", "linear", "cyclical")
LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_likelihood(values: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                            observed: torch.Tensor) -> torch.Tensor:
    """Sum over observed entries of log N(values; mean, exp(log_std)^2), over the last two axes.

    ``values``/``observed``: ``[batch, T, F]``; ``mean``: ``[..., batch, T, F]``;
    ``log_std``: broadcastable to ``mean`` (``[F]`` per variable). Entries not
    ``observed`` are excluded with ``where`` (not a product), so a NaN there —
    padding, or an unobserved slot — never reaches the sum or its gradient.
    """
    # zeroed first, not only masked after: d/dmean of a NaN residual is NaN, and 0 * NaN is NaN
    values = torch.where(observed, values, torch.zeros_like(values))
    z = (values - mean) * torch.exp(-log_std)
    log_density = -0.5 * (LOG_2PI + z**2) - log_std
    return torch.where(observed, log_density, torch.zeros_like(log_density)).sum(dim=(-1, -2))


def gaussian_kl_to_standard(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)), summed over the last axis."""
    return 0.5 * (mean**2 + torch.exp(log_var) - 1.0 - log_var).sum(-1)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
    return (-0.5 * (LOG_2PI + log_var + (z - mean) ** 2 * torch.exp(-log_var))).sum(-1)


def variational_bound(log_likelihood: torch.Tensor, z0: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor,
                      beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The bound per trajectory ``[batch]`` and the closed-form KL ``[batch]``.

    ``log_likelihood``: ``[k, batch]`` log p(x | z_i) for ``k`` samples ``z0``
    ``[k, batch, latent]`` of the posterior N(mean, exp(log_var)).
    """
    kl = gaussian_kl_to_standard(mean, log_var)
    k = log_likelihood.shape[0]
    if k == 1:
        return log_likelihood[0] - beta * kl, kl
    log_prior = gaussian_log_density(z0, torch.zeros_like(mean), torch.zeros_like(log_var))
    log_posterior = gaussian_log_density(z0, mean, log_var)
    log_weights = log_likelihood + beta * (log_prior - log_posterior)
    return torch.logsumexp(log_weights, dim=0) - math.log(k), kl


def kl_weight(schedule: str, step: int, anneal_steps: int) -> float:
    """beta at optimiser step ``step`` (0-based) of ``schedule`` with period/warm-up ``anneal_steps``."""
    if schedule == "none" or anneal_steps <= 0:
        return 1.0
    if schedule == "linear":
        return min(1.0, step / anneal_steps)
    if schedule == "cyclical":
        phase = (step % anneal_steps) / anneal_steps
        return min(1.0, 2.0 * phase)
    raise ValueError(f"unknown KL schedule {schedule!r}, expected one of {', '.join(SCHEDULES)}")
