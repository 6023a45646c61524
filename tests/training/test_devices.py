"""Devices and threads: auto picks what exists, a missing device is a named error, threads never oversubscribe."""

from __future__ import annotations

import pytest
import torch

from neurode.training import devices


def test_auto_is_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_named_error():
    with pytest.raises(devices.DeviceError, match="device 'cuda:1': CUDA is not available"):
        devices.resolve_device("cuda:1")


def test_default_threads_are_the_free_usable_cores(monkeypatch):
    monkeypatch.setattr(devices, "usable_cores", lambda: 2)
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (1.8, 0.0, 0.0))
    assert devices.default_threads() == 1
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert devices.default_threads() == 1  # never fewer than one
    monkeypatch.setattr(devices, "usable_cores", lambda: 16)
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert devices.default_threads() == 16
