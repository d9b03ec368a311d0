"""The one optimizer factory: AdamConfig + parameters -> a torch.optim.Optimizer.

Every trial builds its optimizer here, so swapping the implementation is a one-line change.
``implementation`` is "fused" (adamtune.optim.FusedAdam) or "torch" (torch.optim.Adam/AdamW,
single-tensor for-loop path, for comparison).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from adamtune.config import AdamConfig

IMPLEMENTATIONS = ("fused", "torch")


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: AdamConfig, implementation: str = "fused"
) -> torch.optim.Optimizer:
    """The optimizer for ``config``; its LR is the schedule's peak, set per step by train()."""
    if implementation == "fused":
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
    if implementation == "torch":
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
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
