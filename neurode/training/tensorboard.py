"""TensorBoard event files in the run directory, when tensorboard is installed.

An optional dependency (``pip install 'neurode[tensorboard]'``): the trainer
mirrors every row of ``metrics.jsonl`` into event files written straight into
the run directory, so ``tensorboard --logdir runs/`` shows one run per
directory. Training rows go under ``train/`` (loss, lr, grad_norm, NFE,
samples/s), validation rows under ``val/``, each at its optimiser step.

The setting ``output.tensorboard`` is ``None`` (automatic: written when
tensorboard imports), ``True`` (required: refused before any data is read
when it is missing) or ``False`` (off). ``run.json`` records which happened
and why, under ``"tensorboard"``.

Event files are the one exception to the run directory's atomic writes: they
are append-only logs of length- and CRC-framed records, and a kill can cut
at most the last record, which TensorBoard's reader drops. A resumed run
opens a new file with ``purge_step`` at the checkpoint's step + 1, so the
rows logged after the checkpoint by the interrupted run (and logged again by
the resumed one) are hidden rather than doubled.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'neurode[tensorboard]'"


def missing_reason() -> str | None:
    """Why event files cannot be written here (``None`` when they can)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        return f"tensorboard is not installed ({exc}); {INSTALL_HINT}"
    return None


class EventLog:
    """The run's TensorBoard writer, or a silent stand-in when it is off or unavailable."""

    def __init__(self, run_dir: Path, setting: bool | None, *, purge_step: int | None = None) -> None:
        self.writer = None
        reason = None if setting is not False else "turned off (output.tensorboard = false)"
        if reason is None:
            reason = missing_reason()
        if reason is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self.status: dict[str, Any] = ({"events": True, "log_dir": str(run_dir)} if self.writer is not None
                                       else {"events": False, "reason": reason})

    def row(self, row: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` row: validation rows (with ``val_rmse``) under ``val/``, the rest ``train/``."""
        if self.writer is None:
            return
        prefix = "val" if "val_rmse" in row else "train"
        step = int(row["step"])
        for key, value in row.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            self.writer.add_scalar(f"{prefix}/{key.removeprefix('val_')}", value, step)
        self.writer.add_scalar(f"{prefix}/epoch", row.get("epoch", 0), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
