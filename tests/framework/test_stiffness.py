"""Hairer's stiffness test (framework/stiffness.py): the stability boundary of a tableau, and the verdict."""

from __future__ import annotations

import math

import pytest
import torch

import neurode
from neurode.framework.errors import MaxStepsError, StiffProblemError
from neurode.framework.stiffness import StiffnessDetector, real_stability_boundary


def _tableau(name):
    return neurode.get_registry().get("solver", name).obj().tableau


@pytest.mark.parametrize("name, boundary", [
    ("euler", 2.0),  # |1 - x| <= 1
    ("heun2", 2.0),  # 1 - x + x^2/2
    ("rk4", 2.785),  # every 4-stage order-4 method (Hairer & Wanner II, §IV.2)
    ("dopri5", 3.307),  # Hairer's DOPRI5 tests h|lambda| > 3.25 against it
])
def test_real_stability_boundary_of_known_methods(name, boundary):
    tableau = _tableau(name)
    assert real_stability_boundary(tableau.a, tableau.b) == pytest.approx(boundary, abs=2e-3)


@pytest.mark.parametrize("name, tested", [("dopri5", True), ("tsit5", True), ("bosh3", False), ("rk4", False)])
def test_the_test_needs_two_stages_at_one_node(name, tested):
    solver = neurode.get_registry().get("solver", name).obj()
    assert (StiffnessDetector.for_solver(solver) is not None) == tested
    assert StiffnessDetector.for_solver(solver, nstiff=0) is None


def _stiff_linear(t, y):
    return -1e5 * (y - torch.cos(t))


def test_van_der_pol_mu_1e4_is_reported_stiff_early():
    mu = 1e4

    def van_der_pol(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    with pytest.raises(StiffProblemError, match="looks stiff.*stiff \\(implicit\\) method") as info:
        neurode.solve(van_der_pol, torch.tensor([2.0, 0.0], dtype=torch.float64),
                      torch.tensor([0.0, 3000.0], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    assert info.value.stats.n_steps < 3000 and info.value.t < 1.0
    # neurode's own stiff methods are named (they are registered as partials of their classes with a tableau,
    # which the listing used to miss, leaving only scipy's), the adaptive ones apart from the fixed-step ones
    message = str(info.value)
    adaptive, fixed = message.split("adaptive: ")[1].split("; fixed-step: ")
    assert all(f"'{name}'" in adaptive
               for name in ("rodas4", "rodas5p", "kvaerno3", "kvaerno4", "kvaerno5", "esdirk547l2sa"))
    assert all(f"'{name}'" in fixed.split(";")[0] for name in ("implicit_euler", "radauIIA5", "trbdf2", "ros3p"))
    assert "'dopri5'" not in message


def test_a_stiff_stretch_the_budget_finishes_is_left_to_finish():
    # to t = 0.05 dopri5 needs ~1500 steps at its stability limit (h ~ 3.3e-5): stiff, but within the limit
    y0, t = torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 0.05], dtype=torch.float64)
    sol = neurode.solve(_stiff_linear, y0, t)
    assert 1000 < sol.stats.n_steps < 3000
    # the same with a budget it cannot finish in: reported as stiff at once, not as a step limit reached later
    with pytest.raises(StiffProblemError):
        neurode.solve(_stiff_linear, y0, t, max_num_steps=1400)  # the first test comes at 1000 accepted steps


def test_nstiff_zero_turns_the_test_off():
    with pytest.raises(MaxStepsError):
        neurode.solve(_stiff_linear, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 10.0], dtype=torch.float64),
                      nstiff=0, max_num_steps=3000)


def _relaxation(t, y, rates):
    return -rates * (y - torch.cos(t)[:, None])


def test_per_sample_a_stiff_sample_stops_and_the_others_finish():
    rates = torch.tensor([[1e5], [1.0]], dtype=torch.float64)  # sample 0 stiff, sample 1 not
    y0, t = torch.ones(2, 1, dtype=torch.float64), torch.tensor([0.0, 10.0], dtype=torch.float64)
    sol = neurode.solve(_relaxation, y0, t, per_sample=True, args=rates, on_failure="report")
    assert sol.status.tolist() == [4, 0]  # STIFF, success
    assert int(sol.sample_stats["n_accepted"][0]) < 1500
    # sample 1: y' = -(y - cos t), y(0) = 1 has y(t) = (cos t + sin t) / 2 + e^-t / 2
    exact = (math.cos(10.0) + math.sin(10.0)) / 2 + math.exp(-10.0) / 2
    assert float(sol.ys[-1, 1, 0]) == pytest.approx(exact, abs=1e-5)
    with pytest.raises(StiffProblemError, match="sample 0: stiff .* Use a stiff \\(implicit\\) method"):
        neurode.solve(_relaxation, y0, t, per_sample=True, args=rates)
    # a stiff stretch that the budget finishes is left to finish, per sample as in the shared loop
    short = neurode.solve(_relaxation, y0, torch.tensor([0.0, 0.05], dtype=torch.float64), per_sample=True,
                          args=rates)
    assert short.status.tolist() == [0, 0]
