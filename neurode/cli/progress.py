"""The training progress bar (rich, on stderr): step, epoch, loss, validation RMSE, NFE, samples/s, ETA."""

from __future__ import annotations

from typing import Any

from neurode.training.trainer import Reporter


class TrainProgress(Reporter):
    """A :class:`~neurode.training.trainer.Reporter` drawing a rich progress bar; silent when disabled."""

    def __init__(self, enabled: bool = True, console=None) -> None:
        self.enabled = enabled
        self.console = console  # default: a rich Console on stderr
        self.progress = None
        self.task = None
        self.val = "-"
        self.last_row: dict[str, Any] | None = None

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=self.console or Console(stderr=True), transient=False)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start(self, *, total_steps: int, step: int, run_dir) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task("train", total=total_steps, completed=step, info=str(run_dir))

    def step(self, row: dict[str, Any]) -> None:
        self.last_row = row
        if self.progress is None or self.task is None:
            return
        # NFE of this batch's solves, forward and backward (a model without ODE solves reports none)
        nfe = (f"NFE fwd {row['nfe']:.0f} bwd {row.get('nfe_backward', 0):.0f} "
               if "nfe" in row else "")
        info = (f"epoch {row['epoch']} loss {row['loss']:.4g} val {self.val} {nfe}"
                f"{row['samples_per_s']:.0f} samples/s")
        self.progress.update(self.task, completed=row["step"], info=info)

    def validation(self, row: dict[str, Any]) -> None:
        self.val = f"{row['val_rmse']:.4g}"
        if self.last_row is not None:  # redrawn now: after the last step no other step would show it
            self.step(self.last_row)
