"""The run directory: the files of one training run, each written atomically.

::

    <run>/
      config.toml          the fully resolved configuration
      run.json             versions, plugins, data fingerprint, times, status
      model.safetensors    latest weights          best.safetensors   best validation weights
      state/               trainer.json, optimizer.safetensors (+ JSON), rng.safetensors
      normalization.json   metrics.jsonl   loss.png   predictions.png

Every file goes through :func:`atomic_write`: a temporary file in the same
directory, flushed and fsync'ed, then ``os.replace``. A kill at any instant
(kill -9 included) leaves each file either as it was or as it is meant to be,
so the last good checkpoint always loads. Tensors are stored as safetensors
and everything else as JSON or TOML: nothing a user is given is unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from neurode.framework.errors import NeurodeError

CONFIG, RUN_JSON, MODEL, BEST = "config.toml", "run.json", "model.safetensors", "best.safetensors"
STATE, NORMALIZATION, METRICS = "state", "normalization.json", "metrics.jsonl"
LOSS_PLOT, PREDICTIONS_PLOT = "loss.png", "predictions.png"
TRAINER_STATE, OPTIMIZER_TENSORS, OPTIMIZER_JSON, RNG = (
    "trainer.json", "optimizer.safetensors", "optimizer.json", "rng.safetensors")


class RunDirectoryError(NeurodeError):
    """A run directory that is missing, incomplete or not a run."""


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically: temporary file beside it, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory entry is.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    # safetensors refuses shared or non-contiguous storage: hand it plain CPU copies.
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return atomic_write(path, save_safetensors_bytes(plain, metadata=metadata))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        return load_safetensors_bytes(path.read_bytes())
    except FileNotFoundError:
        raise RunDirectoryError(f"{path}: missing") from None
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged file
        raise RunDirectoryError(f"{path}: not a readable safetensors file ({exc})") from None


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirectoryError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path}: not valid JSON ({exc})") from None


# ---------------------------------------------------------------------- optimiser state


def optimizer_state_to_files(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser ``state_dict`` into tensors (safetensors) and the rest (JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_from_files(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entry in rest.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    groups = []
    for group in rest["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


class RunDirectory:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def state(self) -> Path:
        return self.path / STATE

    def exists(self) -> bool:
        return (self.path / RUN_JSON).is_file()

    def require(self) -> None:
        if not self.path.is_dir():
            raise RunDirectoryError(f"{self.path}: no such run directory")
        missing = [name for name in (CONFIG, RUN_JSON) if not (self.path / name).is_file()]
        if missing:
            raise RunDirectoryError(f"{self.path}: not a neurode run directory (missing {', '.join(missing)})")

    # run.json is rewritten whole (atomically) at every change of status
    def read_run_json(self) -> dict[str, Any]:
        return read_json(self.path / RUN_JSON)

    def update_run_json(self, **changes: Any) -> dict[str, Any]:
        info = self.read_run_json() if (self.path / RUN_JSON).is_file() else {}
        info.update(changes)
        write_json(self.path / RUN_JSON, info)
        return info

    # metrics.jsonl: one JSON object per line
    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is lost with it
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.path / METRICS, "".join(json.dumps(row) + "\n" for row in rows))
