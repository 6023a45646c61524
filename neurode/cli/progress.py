"""The training progress bar (rich, on stderr): step, epoch, loss, validation RMSE, NFE, samples/s, ETA."""

from __future__ import annotations

from typing import Any

from neurode.training.trainer import Reporter


class TrainProgress(Reporter):
    """A :class:`~neurode.training.trainer.Reporter` drawing a rich progress bar; silent when disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = None
        self.task = None
        self.val = "-"

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=False)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start(self, *, total_steps: int, step: int, run_dir) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task("train", total=total_steps, completed=step, info=str(run_dir))

    def step(self, row: dict[str, Any]) -> None:
        if self.progress is None or self.task is None:
            return
        info = (f"epoch {row['epoch']} loss {row['loss']:.4g} val {self.val} "
                f"nfe/sample {row.get('nfe_per_sample', float('nan')):.0f} fwd "
                f"{row.get('nfe_backward', 0):.0f} bwd {row['samples_per_s']:.0f} samples/s")
        self.progress.update(self.task, completed=row["step"], info=info)

    def validation(self, row: dict[str, Any]) -> None:
        self.val = f"{row['val_rmse']:.4g}"
