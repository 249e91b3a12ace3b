"""Optimizers, gradient clipping and learning-rate schedules."""

from rnnkit.optim.optimizers import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    clip_grad_norm,
    collect_params,
)
from rnnkit.optim.schedules import Schedule

__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "Schedule",
           "clip_grad_norm", "collect_params"]
