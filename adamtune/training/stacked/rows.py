"""A stack's rows: one configuration's place in it, rows joining (built from their seeds, with
fresh optimizer state) and leaving (their parameters, buffers, optimizer state and
hyperparameters taken out), the one FusedAdam over every row, and per-row gradient norms,
clipping and update ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adamtune.config.adam import AdamConfig
from adamtune.tasks.base import Task
from adamtune.training.precision import Precision
from adamtune.training.single import _BUILD_LOCK, EarlyStopping, TrainingLog
from adamtune.training.stacked.model import StackedModel


@dataclass
class Row:
    """One configuration's place in the stack; ``id`` counts configurations in arrival order."""

    id: int
    config: AdamConfig
    seed: int  # its initial weights and its batch orders
    lrs: list[float]
    log: TrainingLog
    started: float
    early: EarlyStopping | None = None
    epoch: int = 0  # epochs completed
    step: int = 0  # steps taken
    best_state: Any = None  # its weights and buffers at its best evaluation (for test)
    update_ratio: float = math.nan  # its epoch's last update norm over its weight norm
    # a schedule of phases: step -> the values from it on (``config`` holds those in force)
    switches: dict[int, AdamConfig] = field(default_factory=dict)


def switch_phases(optimizer: torch.optim.Optimizer, live: list[Row]) -> bool:
    """Rows whose next phase starts at their next step take its values (``config`` and the
    optimizer's columns); whether any did."""
    switched = False
    for row in live:
        values = row.switches.get(row.step)
        if values is not None:
            row.config = values
            switched = True
    if switched:
        set_columns(optimizer, [row.config for row in live])
    return switched


def set_columns(optimizer: torch.optim.Optimizer, configs: list[AdamConfig]) -> None:
    """The optimizer's per-row betas, eps and weight decay, one row per configuration (the LR
    is set at every step)."""
    group = optimizer.param_groups[0]
    group["betas"] = (
        _column([c.beta1 for c in configs]),
        _column([c.beta2 for c in configs]),
    )
    group["eps"] = _column([c.eps for c in configs])
    group["weight_decay"] = _column([c.weight_decay for c in configs])


def _column(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def row_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """[rows]: each row's global L2 norm over ``tensors`` (stacked, row first)."""
    if not tensors:
        return torch.zeros(0)
    return torch.stack([t.detach().float().pow(2).flatten(1).sum(1) for t in tensors]).sum(0).sqrt()


def update_ratios(stack: StackedModel, before: list[torch.Tensor], live: list[Row]) -> None:
    """Each row's last update norm over its weight norm before it (train.weight_diagnostics)."""
    with torch.no_grad():
        update = row_norms([p - b for p, b in zip(stack.params, before, strict=True)])
        ratios = (update / row_norms(before).clamp_min(1e-30)).tolist()
    for row, ratio in zip(live, ratios, strict=True):
        row.update_ratio = ratio


def clip_limits(live: list[Row], device: torch.device) -> torch.Tensor | None:
    """[rows]: each row's max_grad_norm (inf: no clipping), on the device once an epoch (the
    rows change only between epochs); None when no row clips."""
    limits = [row.config.max_grad_norm for row in live]
    if all(limit is None for limit in limits):
        return None
    values = [math.inf if value is None else value for value in limits]
    return torch.tensor(values, dtype=torch.float32).to(device)


def clip_rows(stack: StackedModel, limit: torch.Tensor | None, norms: torch.Tensor) -> None:
    """Each row's gradients clipped by the row's own global norm (``norms``, [rows]), as
    torch.nn.utils.clip_grad_norm_ clips one model's (the same coefficient and epsilon)."""
    if limit is None:
        return
    grads = [p.grad for p in stack.params if p.grad is not None]
    if not grads:
        return
    limit = limit.to(norms.dtype)
    coefficient = (limit / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coefficient.view(-1, *([1] * (g.dim() - 1))))


def join_rows(
    task: Task,
    prec: Precision,
    seed: int,
    stack: StackedModel | None,
    optimizer: torch.optim.Optimizer | None,
    live: list[Row],
    joining: list[Row],
) -> tuple[StackedModel, torch.optim.Optimizer]:
    """Add ``joining``'s rows, each built from its seed as train() builds its model, with fresh
    optimizer state (per-row step counts at 0)."""
    models = []
    with _BUILD_LOCK:
        for row in joining:  # each copy starts from its row's seed: the weights it gets alone
            torch.manual_seed(row.seed)
            models.append(prec.model(task.build_model()))
    old_state: list[dict[str, torch.Tensor]] = []
    if stack is None:
        stack = StackedModel(models[0], models)
    else:
        assert optimizer is not None
        old_state = [optimizer.state[p] for p in stack.params]
        stack.append(models)
    fresh = _optimizer(stack, [row.config for row in live + joining], prec, seed)
    added = len(joining)
    for k, p in enumerate(stack.params):
        state = fresh.state[p]
        if old_state:
            for key, value in old_state[k].items():
                zeros = torch.zeros(
                    (added, *value.shape[1:]), dtype=value.dtype, device=value.device
                )
                state[key] = torch.cat([value, zeros])
    return stack, fresh


def leave_rows(
    stack: StackedModel,
    optimizer: torch.optim.Optimizer,
    live: list[Row],
    rows: list[int],
    prec: Precision,
    seed: int,
) -> tuple[list[Row], torch.optim.Optimizer]:
    """Take stack positions ``rows`` out: parameters, optimizer state and hyperparameters."""
    keep = [r for r in range(len(live)) if r not in rows]
    live = [live[r] for r in keep]
    if not live:
        return live, optimizer
    old_state = [optimizer.state[p] for p in stack.params]
    stack.keep(keep)
    fresh = _optimizer(stack, [row.config for row in live], prec, seed)
    for k, p in enumerate(stack.params):
        index = torch.tensor(keep, device=p.device)
        fresh.state[p] = {
            key: value.index_select(0, index.to(value.device))
            for key, value in old_state[k].items()
        }
    return live, fresh


def _optimizer(
    stack: StackedModel, configs: list[AdamConfig], prec: Precision, seed: int
) -> torch.optim.Optimizer:
    """One FusedAdam over the stack, one row of hyperparameters per configuration, and state
    with a step count per row (rows join at different times); float32 moments for bf16-pure."""
    from adamtune.optim import FusedAdam

    column = _column
    first = configs[0]
    optimizer = FusedAdam(
        stack.params,
        lr=column([c.lr for c in configs]),
        betas=(column([c.beta1 for c in configs]), column([c.beta2 for c in configs])),
        eps=column([c.eps for c in configs]),
        weight_decay=column([c.weight_decay for c in configs]),
        decoupled_weight_decay=first.decoupled,
        amsgrad=first.amsgrad,
    )
    prec.optimizer(optimizer, seed)
    moments = torch.float32 if prec.name == "bf16-pure" else None
    for p in stack.params:
        keys = (
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            if first.amsgrad
            else ("exp_avg", "exp_avg_sq")
        )
        optimizer.state[p] = {
            "step": torch.zeros(len(configs), dtype=torch.float32),
            **{key: torch.zeros_like(p, dtype=moments) for key in keys},
        }
    return optimizer


def check_uniform(configs: list[AdamConfig]) -> None:
    """Rows of one stack share the kernel's non-numeric settings."""
    kinds = {(c.decoupled, c.amsgrad) for c in configs}
    if len(kinds) > 1:
        raise ValueError(
            "a stack needs one decoupled and one amsgrad setting; group the configurations by "
            f"them first, got {sorted(kinds)}"
        )
