"""Where a run computes: device, floating dtype and torch's intra-op threads.

``auto`` picks CUDA, then MPS, then the CPU. The default thread count never
oversubscribes: it is the number of cores this process may use (its CPU
affinity) less the machine's current load, at least one. On a loaded 2-core
machine a small model trains many times slower with torch's default of one
thread per core than with one thread, because the threads wait on each other
at every small operation.
"""

from __future__ import annotations

import math
import os

import torch

from neurode.framework.errors import NeurodeError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class DeviceError(NeurodeError):
    """A device that was asked for is not available."""


def resolve_device(name: str) -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: CUDA is not available (torch {torch.__version__}); "
                              "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {name!r}: MPS is not available on this machine; use --device cpu or auto")
    return device


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Cores this process may use, less the current load average; at least 1."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(cores, math.floor(cores - load + 0.5)))


def set_threads(threads: int | None) -> int:
    count = default_threads() if threads is None else threads
    torch.set_num_threads(count)
    return count
