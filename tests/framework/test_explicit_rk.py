"""The generic explicit Runge–Kutta solver's helpers."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neurode.framework.explicit_rk import prev_time


def _numpy_prev32(t: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.nextafter(np.float32(t), np.float32(-np.inf)))


@settings(max_examples=2000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=True))
def test_prev_time_float32_matches_numpy(t):
    assert prev_time(t, torch.float32) == _numpy_prev32(t)


@pytest.mark.parametrize("t", [0.0, -0.0, 1.401298464324817e-45, -1.401298464324817e-45, 1e-46, 3.4028234663852886e38,
                               3.40282356e38, 3.4028236e38, -3.4028236e38, math.inf, -math.inf])
def test_prev_time_float32_edges(t):
    assert prev_time(t, torch.float32) == _numpy_prev32(t)


def test_prev_time_float64_is_one_ulp_down():
    assert prev_time(1.0, torch.float64) == math.nextafter(1.0, -math.inf) < 1.0
