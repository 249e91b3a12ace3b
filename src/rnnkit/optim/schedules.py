"""Learning-rate schedules: functions of the step (1-based) returning the lr to use at that step, or of
the fraction of a time budget spent, for runs bounded by minutes rather than steps."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Schedule:
    """kind: "constant", "cosine" (linear warmup, then cosine to min_ratio * lr) or "step" (x gamma
    every step_size steps)."""

    kind: str = "constant"
    lr: float = 1e-3  # the peak learning rate
    warmup: int = 0  # steps of linear warmup from 0 (cosine)
    total: int = 1  # the step at which the cosine reaches its floor
    min_ratio: float = 0.1  # floor of the cosine as a fraction of lr
    step_size: int = 1000  # step decay period
    gamma: float = 0.5  # step decay factor

    def __post_init__(self):
        if self.kind not in ("constant", "cosine", "step"):
            raise ValueError(f"schedule must be constant, cosine or step; got {self.kind!r}")

    def __call__(self, step: int, spent: float | None = None) -> float:
        """spent: the fraction of a time budget used so far; given, the cosine is laid over the time
        (after the warmup steps) instead of over `total` steps."""
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** ((step - 1) // self.step_size)
        if step <= self.warmup:
            return self.lr * step / max(1, self.warmup)
        if spent is not None:
            progress = min(1.0, max(0.0, spent))
        else:
            progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        floor = self.min_ratio * self.lr
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
