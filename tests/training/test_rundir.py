"""Run-directory files: atomic writes, safetensors round trips, optimiser state without pickle."""

from __future__ import annotations

import os

import pytest
import torch

from neurode.training import rundir as rd


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    rd.atomic_write(path, "old")
    rd.atomic_write(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    rd.save_tensors(path, {"w": torch.ones(3)})

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        rd.save_tensors(path, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(rd.load_tensors(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_optimizer_state_round_trips_exactly():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    optimizer = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        sum((p**2).sum() for p in params).backward()
        optimizer.step()
    tensors, rest = rd.optimizer_state_to_files(optimizer.state_dict())
    import json

    rest = json.loads(json.dumps(rest))
    restored = rd.optimizer_state_from_files(tensors, rest)
    fresh = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01)
    fresh.load_state_dict(restored)
    for key, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(fresh.state_dict()["state"][key][name], value)


def test_damaged_safetensors_is_a_named_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not a tensor file")
    with pytest.raises(rd.RunDirectoryError, match="not a readable safetensors file"):
        rd.load_tensors(path)
