"""Building what trains: an AdamConfig becomes an optimizer and, for a user's own loop, a torch
LR scheduler. Every trial builds its optimizer here, so the implementation is one argument.

``optimizer`` is "fused" (adamtune.optim.FusedAdam) or "torch" (torch.optim.Adam/AdamW,
single-tensor for-loop path, for comparison); ``--optimizer`` on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.phases import apply, learning_rates, values_at
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
) -> torch.optim.lr_scheduler.LRScheduler:
    """A torch scheduler applying ``config``'s schedule; call ``scheduler.step()`` after every
    ``optimizer.step()``. Step t's LR is exactly ``phases.learning_rates(config, ...)[t]``;
    steps past the end keep the last value. A configuration with phases also sets betas, eps
    and weight decay as each phase starts (PhaseScheduler)."""
    if config.phases:
        return PhaseScheduler(optimizer, config, total_steps)
    last = total_steps - 1
    schedule = config.schedule
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: multiplier(schedule, min(step, last), total_steps)
    )


class PhaseScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Replays a schedule of phases (a population's winner) by fraction of training: at every
    step the LR of adamtune.config.phases and, as a phase starts, its betas, eps and weight
    decay. ``max_grad_norm`` is the clipping of the phase in force."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: AdamConfig, total_steps: int):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        self.config, self.total_steps = config, total_steps
        self.rates = learning_rates(config, total_steps)
        self.max_grad_norm = config.max_grad_norm
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        step = min(self.last_epoch, self.total_steps - 1)
        values = values_at(self.config, step, self.total_steps)
        self.max_grad_norm = values.max_grad_norm
        for group in self.optimizer.param_groups:
            apply(group, values)
        return [self.rates[step] for _ in self.optimizer.param_groups]
