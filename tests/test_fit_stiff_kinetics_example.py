"""examples/fit_stiff_kinetics.py: gradient descent through a stiff solver moves the rate constants towards the
truth (two iterations here; the full run recovers them to a few per cent)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("fit_stiff_kinetics", ROOT / "examples" / "fit_stiff_kinetics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_two_iterations_lower_the_loss_with_each_gradient_method(adjoint, capsys):
    _example().main(["--iters", "2", "--adjoint", adjoint])
    out = capsys.readouterr().out
    losses = [float(x) for x in re.findall(r"loss ([0-9.e+-]+)", out)]
    assert len(losses) == 2 and losses[1] < losses[0], out
    assert "relative error of the learned rates" in out and f"adjoint={adjoint}" in out
    assert re.search(r"backward nfe [1-9]", out), out  # the adjoint's own solve ran (checkpoint: its replay)
