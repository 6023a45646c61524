"""benchmarks/bench_training.py: interleaving the loops' steps leaves each loop's random draws as if it ran alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench_training = pytest.importorskip("bench_training")


def _loop(seed: int) -> dict:
    """A stand-in training loop: seeded construction, then steps that draw from torch's global RNG."""
    torch.manual_seed(seed)
    weight = torch.randn(3)  # construction draws too, as a model's initial weights do
    rows = {"n": 0}

    def step():
        rows["n"] += 6
        return float(weight @ torch.randn(3))

    return {"step": step, "rows": rows, "trained": weight, "rng": torch.get_rng_state()}


def test_interleaved_loops_draw_what_each_draws_alone():
    alone = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        loop = _loop(seed)
        torch.set_rng_state(loop["rng"])
        alone[name] = [loop["step"]() for _ in range(5)][-1]
    together = bench_training._time_interleaved({"a": _loop(0), "b": _loop(0), "c": _loop(1)}, steps=5, n=3)
    assert {name: r["loss"] for name, r in together.items()} == alone
    assert together["a"]["loss"] == together["b"]["loss"]  # the same seed, whatever ran between their steps
    assert all(r["nfe_per_sample"] == 2.0 and r["cpu_s"] >= 0.0 for r in together.values())
