"""Population Based Training inside the stack (Jaderberg et al. 2017): the members of a
population are the rows of one stacked model, and an exploit is a row copy on the device.

Every member starts from the same seed (the same initial weights and batch order), so members
differ by their hyperparameters alone and every step trains on one shared batch. Each epoch ends
with an evaluation of every member. Every ``interval`` evaluations the members are ranked by the
task's metric, and each member of the bottom ``quantile`` copies a member of the top quantile:
its parameters, its buffers (BatchNorm statistics), every optimizer state entry (Adam's moments,
amsgrad's maxima, the per-row step count) and its place in the schedule. Then ``explore`` perturbs
its hyperparameters. A member whose loss diverges or whose metric is not finite is copied over
at the end of that epoch, whatever the interval: it never spreads.

Against collapse (every member converging on one lineage, MF-PBT, arXiv 2506.03225) the first
``anchors`` members are never exploited: they train their sampled configuration from start to
end, keep the population's spread, can still be copied from, and are the study's fixed
configurations to compare the schedules with.

What comes out, per member: its TrainResult (its own per-step LR, loss and evaluations), the
values it trained with from each step on (``trajectory``), whom it copied when (``lineage``) and
the schedule its final weights trained with, its ancestry's (``schedule``), which replays from
scratch as an AdamConfig with phases (adamtune.config.phases).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.phases import from_segments, learning_rates
from adamtune.errors import DivergedError, describe
from adamtune.tasks.base import Task
from adamtune.training.readback import read_back
from adamtune.training.single import (
    Evaluation,
    TrainingLog,
    TrainResult,
    check_divergence,
    planned_steps,
    run_precision,
)
from adamtune.training.stacked.evaluation import Splits
from adamtune.training.stacked.feed import Feed
from adamtune.training.stacked.loop import train_epoch
from adamtune.training.stacked.model import StackedModel, refuse_unstackable
from adamtune.training.stacked.rows import Row, check_uniform, join_rows, row_norms, set_columns

Explore = Callable[[AdamConfig], AdamConfig]  # a copied member's new values, inside the space
# After every evaluation: (epoch, each member's evaluation)
OnEpoch = Callable[[int, dict[int, Evaluation]], None]


@dataclass(frozen=True)
class Rules:
    """When and how a population exploits."""

    interval: int = 1  # evaluations (epochs) between exploits
    quantile: float = 0.25  # the bottom share copies the top share
    anchors: int = 0  # the first members, never exploited

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"interval: must be >= 1 evaluation, got {self.interval}")
        if not 0 < self.quantile <= 0.5:
            raise ValueError(f"quantile: must be in (0, 0.5], got {self.quantile}")
        if self.anchors < 0:
            raise ValueError(f"anchors: must be >= 0, got {self.anchors}")


@dataclass(frozen=True)
class Exploit:
    """One copy: at ``step`` (after ``epoch`` evaluations) the member took member ``source``'s
    weights and state, and then these values (``config``)."""

    step: int
    epoch: int
    source: int
    config: AdamConfig


@dataclass
class Member:
    """One member's history."""

    index: int
    anchor: bool
    trajectory: list[tuple[int, AdamConfig]]  # (first step, values) of its own rows' values
    lineage: list[Exploit] = field(default_factory=list)
    schedule: list[tuple[int, AdamConfig]] = field(default_factory=list)  # its weights' ancestry
    diverged: str | None = None  # why it diverged in the epoch now ending

    def schedule_config(self, total_steps: int) -> AdamConfig:
        """The schedule its weights trained with, as a configuration that replays it."""
        return from_segments(self.schedule, total_steps)


@dataclass
class MemberResult:
    member: Member
    result: TrainResult


def train_population(
    task: Task,
    configs: list[AdamConfig],
    *,
    explore: Explore,
    rules: Rules = Rules(),
    rng: random.Random | None = None,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    divergence_factor: float = 100.0,
    on_epoch: OnEpoch | None = None,
    stop: Callable[[], bool] = lambda: False,
    checked: bool = False,
) -> list[MemberResult]:
    """Train one member per configuration as one population; one MemberResult per
    configuration, in order. ``stop()``, asked at every interval, ends the population there:
    every member's result is then its last evaluation. ``rng`` draws the members to copy (and
    is the one ``explore`` should draw from, for a run that a seed repeats)."""
    check_uniform(configs)
    device = torch.device(device) if isinstance(device, str) else device
    prec = run_precision(precision, device)
    refuse_unstackable(task, prec, checked, "members")
    rng = rng or random.Random(seed)
    epochs = epochs or task.epochs
    total_steps = planned_steps(task, epochs)
    started = time.perf_counter()
    live = [
        Row(
            i,
            c,
            seed,
            learning_rates(c, total_steps),
            TrainingLog(total_steps=total_steps),
            started,
        )
        for i, c in enumerate(c.fixed for c in configs)
    ]
    members = [
        Member(i, i < rules.anchors, [(0, row.config)], schedule=[(0, row.config)])
        for i, row in enumerate(live)
    ]
    stack, optimizer = join_rows(task, prec, seed, None, None, [], live)
    feed, splits = Feed(task, device, prec), Splits(task, device, prec)
    values: list[float] = []
    for epoch in range(1, epochs + 1):
        pending = train_epoch(task, stack, optimizer, live, feed, prec)
        _settle(live, members, pending, divergence_factor)
        for row in live:
            row.epoch = epoch
        values = _evaluate(task, stack, splits, live, members)
        if on_epoch is not None:
            on_epoch(epoch, {row.id: row.log.evaluations[-1] for row in live})
        due = epoch % rules.interval == 0
        if epoch == epochs or (due and stop()):
            break
        maximize = task.direction == "maximize"
        targets = _targets(members, values, rules, maximize, due)
        if targets:
            _exploit(stack, optimizer, live, members, targets, rng, explore, total_steps)
    tests = _tests(task, stack, splits) if task.test is not None else [{}] * len(live)
    out = []
    for row, member, value, test in zip(live, members, values, tests, strict=True):
        last = row.log.evaluations[-1]
        metrics = {**last.metrics, **test}
        diverged = member.diverged or (None if math.isfinite(value) else _not_finite(task, value))
        seconds = time.perf_counter() - started
        out.append(MemberResult(member, TrainResult(value, metrics, row.log, diverged, seconds)))
    return out


def _settle(
    live: list[Row], members: list[Member], pending: list[torch.Tensor], factor: float
) -> None:
    """An epoch's [step][loss, norm][row], read back once, into each member's log; a member
    whose loss diverged is marked (it is copied over at the epoch's end, never spread)."""
    steps = read_back(pending)
    for r, (row, member) in enumerate(zip(live, members, strict=True)):
        member.diverged = None
        seen, start = row.log.train_losses, row.step - len(steps)
        for i, (losses, norms) in enumerate(steps):
            if member.diverged is None:
                try:
                    first = seen[0] if seen else losses[r]
                    check_divergence(start + i, losses[r], first, factor, row.lrs[start + i])
                except DivergedError as exc:
                    member.diverged = f"diverged: {exc}"
            seen.append(losses[r])
            row.log.grad_norms.append(norms[r])


def _evaluate(
    task: Task, stack: StackedModel, splits: Splits, live: list[Row], members: list[Member]
) -> list[float]:
    """Every member's evaluation, into its log; its metric (NaN where it diverged or its own
    evaluation raised)."""
    weights = row_norms(stack.params).tolist()
    per_epoch = task.steps_per_epoch()
    values = []
    for r, (row, member, metrics) in enumerate(
        zip(live, members, splits.evaluate(stack, splits.validation), strict=True)
    ):
        if isinstance(metrics, BaseException):
            member.diverged = member.diverged or f"its evaluation raised {describe(metrics)}"
            metrics = {task.metric_name: math.nan}
        losses = row.log.train_losses[-per_epoch:]
        metrics.setdefault("train_loss", sum(losses) / len(losses))
        metrics.setdefault("param_norm", weights[r])
        row.log.evaluations.append(Evaluation(row.epoch, row.step, metrics))
        value = metrics[task.metric_name]
        values.append(math.nan if member.diverged else value)
    return values


def _targets(
    members: list[Member], values: list[float], rules: Rules, maximize: bool, due: bool
) -> dict[int, list[int]]:
    """Member -> the members it may copy: every member that diverged (whatever the interval)
    and, when an exploit is due, the bottom quantile of the members that are not anchors;
    the sources are the top quantile of the members with a finite metric."""
    finite = [m for m in range(len(members)) if math.isfinite(values[m])]
    ranked = sorted(finite, key=lambda m: -values[m] if maximize else values[m])
    count = max(1, round(rules.quantile * len(members)))
    top = ranked[:count]
    if not top:
        return {}  # nobody to copy from
    targets = [m for m in range(len(members)) if not math.isfinite(values[m])]
    if due:
        bottom = [m for m in reversed(ranked) if not members[m].anchor and m not in top]
        targets += bottom[:count]
    return {m: top for m in targets}


def _exploit(
    stack: StackedModel,
    optimizer: torch.optim.Optimizer,
    live: list[Row],
    members: list[Member],
    targets: dict[int, list[int]],
    rng: random.Random,
    explore: Explore,
    total_steps: int,
) -> None:
    """Each target copies one of its sources (rows, state, schedule), then explores."""
    for target, sources in sorted(targets.items()):
        source = rng.choice(sources)
        copy_row(stack, optimizer, source, target)
        row, member, origin = live[target], members[target], members[source]
        values = explore(live[source].config)
        row.config = values
        row.lrs = learning_rates(values, total_steps)
        step = row.step
        member.lineage.append(Exploit(step, row.epoch, source, values))
        member.trajectory.append((step, values))
        member.schedule = [*origin.schedule, (step, values)]
        member.anchor = False  # a diverged anchor replaced is an anchor no more
        member.diverged = None
    set_columns(optimizer, [row.config for row in live])


@torch.no_grad()
def copy_row(
    stack: StackedModel, optimizer: torch.optim.Optimizer, source: int, target: int
) -> None:
    """Row ``target`` becomes row ``source``: parameters, buffers and every optimizer state
    entry that has a row per member (moments, maxima, the per-row step count)."""
    rows = stack.rows
    for p in stack.params:
        p[target] = p[source]
        for value in optimizer.state[p].values():
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == rows:
                value[target] = value[source]
    for buffer in stack.buffers.values():
        if buffer.dim() >= 1 and buffer.shape[0] == rows:
            buffer[target] = buffer[source]


def _tests(task: Task, stack: StackedModel, splits: Splits) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for metrics in splits.evaluate(stack, splits.test):
        if isinstance(metrics, BaseException):
            out.append({})
            continue
        out.append({f"test_{k.removeprefix('val_')}": v for k, v in metrics.items()})
    return out


def _not_finite(task: Task, value: float) -> str:
    return f"diverged: {task.metric_name} is {value} (not a finite number)"
