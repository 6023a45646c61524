"""benchmarks/stiff_work_precision.py: errors measured against the reference, the table, the figure on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
work_precision = pytest.importorskip("stiff_work_precision")
pytest.importorskip("scipy")


def _decay(t, y):
    # y1' = -y1, y2' = 1000 (y1 - y2): stiff, and the exact solution is known
    return torch.stack([-y[..., 0], 1000.0 * (y[..., 0] - y[..., 1])], -1)


PROBLEM = dict(name="decay", f=_decay, y0=[1.0, 1.0], span=1.0, atol_ratio=1e-3)


def test_the_error_falls_with_the_tolerance_and_is_measured_in_its_units():
    records = work_precision.measure(PROBLEM, ["rodas4", "scipy Radau"], [1e-3, 1e-6], log=lambda line: None)
    assert [(r["solver"], r["rtol"]) for r in records] == [("rodas4", 1e-3), ("rodas4", 1e-6),
                                                            ("scipy Radau", 1e-3), ("scipy Radau", 1e-6)]
    for solver in ("rodas4", "scipy Radau"):
        loose, tight = (r for r in records if r["solver"] == solver)
        assert tight["relative"] < loose["relative"] / 10 and tight["nfe"] > loose["nfe"] > 0
        # err/tol and the relative error describe one difference, in units that differ by about rtol
        assert 0.1 < loose["err_tol"] * 1e-3 / loose["relative"] < 10
        assert 0 < loose["err_tol"] < 100


def test_the_table_has_one_row_per_solver_and_one_column_per_tolerance(tmp_path):
    records = [dict(problem="p", solver=s, rtol=r, nfe=10, seconds=0.1, err_tol=e, relative=e * r)
               for s, e in (("a", 0.5), ("b", 3.0)) for r in (1e-3, 1e-6)]
    text = work_precision.table(records, [1e-3, 1e-6])
    assert text.splitlines()[0] == "| problem | solver | rtol 1e-03 | rtol 1e-06 |"
    assert text.splitlines()[2:] == ["| p | a | 0.5 | 0.5 |", "| p | b | 3 | 3 |"]
    out = tmp_path / "figures" / "wp.png"
    work_precision.figure(records, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["wp.png"]  # no partial file left beside it


def test_an_unknown_method_is_refused_before_any_solve(capsys):
    assert work_precision.main(["--methods", "no_such_solver", "--quick"]) == 1
    assert "no_such_solver" in capsys.readouterr().err
