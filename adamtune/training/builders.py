"""Building what trains: an AdamConfig becomes an optimizer and, for a user's own loop, a torch
LR scheduler. Every trial builds its optimizer here, so the implementation is one argument.

``optimizer`` is "fused" (adamtune.optim.FusedAdam) or "torch" (torch.optim.Adam/AdamW,
single-tensor for-loop path, for comparison); ``--optimizer`` on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.schedules import multiplier
from adamtune.config.settings import OPTIMIZERS


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: AdamConfig, optimizer: str = "fused"
) -> torch.optim.Optimizer:
    """The optimizer for ``config`` at the schedule's peak LR (train() sets it every step)."""
    if optimizer == "fused":
        from adamtune.optim import FusedAdam

        return FusedAdam(
            params,
            lr=config.lr,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
            decoupled_weight_decay=config.decoupled,
            amsgrad=config.amsgrad,
        )
    if optimizer == "torch":
        cls = torch.optim.AdamW if config.decoupled else torch.optim.Adam
        return cls(
            params,
            lr=config.lr,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
            amsgrad=config.amsgrad,
            foreach=False,
        )
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: AdamConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A torch LambdaLR applying ``config``'s schedule; call ``scheduler.step()`` after every
    ``optimizer.step()``. Step t's LR is exactly ``schedules.learning_rates(...)[t]``; steps past
    the end keep the last value."""
    last = total_steps - 1
    schedule = config.schedule
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: multiplier(schedule, min(step, last), total_steps)
    )
