"""No oversubscribed cores: one intra-op thread per test process, and the example picks its threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_each_test_process_uses_one_intra_op_thread():
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1", "subprocesses the tests start inherit one thread too"


def test_fit_spiral_uses_one_thread_by_default_even_when_the_environment_allows_more():
    env = {**os.environ, "OMP_NUM_THREADS": "8"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fit_spiral.py"), "--iters", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "threads 1 of" in result.stdout
