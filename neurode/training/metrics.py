"""Masked error sums, the first-observation baseline, and their reduction to RMSE/MAE.

Errors are accumulated as sums over observed values (``mask`` True) per
feature, so batches of any size combine exactly, and reduced once at the
end. The baseline predicts, for every time, each trajectory's first observed
value of each feature: the "nothing changes" forecast a learned model must beat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def first_observation(batch) -> torch.Tensor:
    """``[batch, N, n_features]``: each feature's first observed value, at every time."""
    observed = batch.mask & batch.time_mask.unsqueeze(-1)
    # index of the first observed slot per (trajectory, feature); argmax finds the first True
    first = observed.to(torch.int8).argmax(dim=1)  # [batch, n_features]
    value = batch.values.gather(1, first.unsqueeze(1)).squeeze(1)
    return value.unsqueeze(1).expand_as(batch.values)


@dataclass
class ErrorSums:
    """Per-feature sums of squared and absolute errors and of counts."""

    squared: torch.Tensor | None = None
    absolute: torch.Tensor | None = None
    count: torch.Tensor | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, pred: torch.Tensor, batch, scale: torch.Tensor | None = None, where: torch.Tensor | None = None):
        observed = batch.mask & batch.time_mask.unsqueeze(-1)
        if where is not None:
            observed = observed & where.unsqueeze(-1)
        error = pred - batch.values
        if scale is not None:
            error = error * scale
        zero = torch.zeros_like(error)
        squared = torch.where(observed, error**2, zero).sum(dim=(0, 1)).double().cpu()
        absolute = torch.where(observed, error.abs(), zero).sum(dim=(0, 1)).double().cpu()
        count = observed.sum(dim=(0, 1)).double().cpu()
        if self.squared is None:
            self.squared, self.absolute, self.count = squared, absolute, count
        else:
            self.squared += squared
            self.absolute += absolute
            self.count += count

    def rmse(self) -> float:
        """RMSE over every observed value of every feature."""
        if self.count is None or float(self.count.sum()) == 0:
            return float("nan")
        return float((self.squared.sum() / self.count.sum()).sqrt())

    def per_feature(self) -> tuple[list[float], list[float], list[int]]:
        count = self.count.clamp(min=1)
        rmse = (self.squared / count).sqrt()
        mae = self.absolute / count
        nan = self.count == 0
        rmse[nan] = float("nan")
        mae[nan] = float("nan")
        return rmse.tolist(), mae.tolist(), [int(c) for c in self.count.tolist()]
