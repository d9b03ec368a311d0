"""``--stack auto`` never loses: a few real training steps timed one at a time and at a few
stack widths, and the width that trains the most rows per second, or one at a time.

Stacking pays where a step is dominated by per-call overhead (small models, a DataLoader every
row would read alone); a convolution or a transformer that already keeps two CPU cores busy
may be compute-bound, and a stack of it is no faster per row. Both sides run the code a trial
runs: train()'s step on the task's module, and the stacked loop's epoch (its Feed, per-row
losses, clipping norms and FusedAdam), from the task's own batches. The timings run under a
forked random state, so no trial's seed, weights or batches change because they ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from adamtune.config.adam import AdamConfig
from adamtune.tasks.base import Task, is_tensor_pair
from adamtune.training.batches import batches, step_loss
from adamtune.training.builders import build_optimizer
from adamtune.training.first_batch import forked_random
from adamtune.training.precision import Precision
from adamtune.training.single import EarlyStopping, TrainingLog, _grad_norm, run_precision
from adamtune.training.stacked.feed import Feed
from adamtune.training.stacked.loop import train_epoch
from adamtune.training.stacked.model import _mlp_layers
from adamtune.training.stacked.rows import Row, join_rows

WARMUP_STEPS = 2  # not timed: first calls allocate, and vmap traces
MIN_STEPS = 3
SECONDS = 0.25  # per width measured
BUDGET = 3.0  # seconds for all the widths
GAIN_NEEDED = 1.05  # a stack must beat one at a time by this much to be taken


@dataclass(frozen=True)
class Choice:
    rows: int
    speedup: float  # rows trained per second, against one at a time
    measured: dict[int, float]  # width -> rows per second (1: one at a time)

    def line(self) -> str:
        if self.rows > 1:
            return (
                f"--stack auto: {self.rows} rows ({self.speedup:.1f}x the steps per second of "
                "one at a time)"
            )
        widths = [w for w in self.measured if w > 1]
        if not widths:
            return "--stack auto: one at a time (a step takes too long to time a stack of it)"
        best = max(widths, key=lambda w: self.measured[w])
        ratio = self.measured[best] / self.measured[1]
        return (
            f"--stack auto: one at a time (a stack of {best} measured {ratio:.2f}x the steps "
            "per second of one at a time)"
        )


def is_plain_mlp(task: Task) -> bool:
    """A plain MLP on tensors: its stack is batched matrix products, always faster per row
    (2.6-2.8x measured, benchmarks/results/stacked_trials_cpu.md), so auto need not time it."""
    if not is_tensor_pair(task.train) or task.uses_loader:
        return False
    from adamtune.training.stacked.layers import per_row

    return _mlp_layers(per_row(task.build_model())) is not None


def choose_width(task: Task, device: torch.device, precision: str, widest: int) -> Choice:
    """The width among 1, 4, 8, ... ``widest`` that trains the most rows per second."""
    widths = sorted({w for w in (4, 8, 16, 32, 64) if w < widest} | {widest})
    measured = measure(task, device, precision, [w for w in widths if w > 1])
    best = max(measured, key=lambda w: measured[w])
    if measured[best] < GAIN_NEEDED * measured[1]:
        best = 1
    return Choice(best, measured[best] / measured[1], measured)


def measure(
    task: Task, device: torch.device, precision: str, widths: list[int]
) -> dict[int, float]:
    """Rows trained per second: one at a time (key 1) and for each stack width, narrowest
    first, until a width is no faster than the one before it or the next would take more
    than what is left of BUDGET seconds."""
    prec = run_precision(precision, device)
    started = time.perf_counter()
    with forked_random():
        out = {1: _alone(task, device, prec)}
        last = out[1]
        for width in widths:
            step = width / max(out.values())  # seconds a step of this width should take
            spent = time.perf_counter() - started
            if spent + (WARMUP_STEPS + MIN_STEPS) * step > BUDGET:
                break
            out[width] = _stacked(task, device, prec, width)
            if out[width] <= last:
                break  # the stack is past what the cores give: wider will not be faster
            last = out[width]
    return out


def _alone(task: Task, device: torch.device, prec: Precision) -> float:
    torch.manual_seed(0)
    model = prec.model(task.build_model())
    optimizer = prec.optimizer(build_optimizer(list(model.parameters()), AdamConfig()), 0)
    model.train()
    clock = _Clock()
    while True:
        for batch in batches(task, task.train, device, prec, torch.Generator().manual_seed(0)):
            optimizer.zero_grad(set_to_none=True)
            with prec.forward():
                loss = step_loss(task, model, batch)
            loss.backward()
            _grad_norm(model, None)
            optimizer.step()
            if not clock.go_on(loss):
                return clock.rate(1)


def _stacked(task: Task, device: torch.device, prec: Precision, width: int) -> float:
    steps = task.steps_per_epoch()
    rows = []
    for i in range(width):
        log = TrainingLog(total_steps=steps)
        early = EarlyStopping(task.metric_name, task.direction, 1)
        rows.append(Row(i, AdamConfig(), i, [1e-3] * steps, log, 0.0, early))
    stack, optimizer = join_rows(task, prec, 0, None, None, [], rows)
    feed = Feed(task, device, prec)
    clock = _Clock()
    while True:
        for row in rows:
            row.step = 0
        pending = train_epoch(task, stack, optimizer, rows, feed, prec, go_on=clock.go_on)
        if clock.done:
            return clock.rate(width)
        del pending


class _Clock:
    """Counts steps after the warm-up, until SECONDS have passed and MIN_STEPS were timed;
    waits for the device before reading the time."""

    def __init__(self) -> None:
        self.steps = 0
        self.start = 0.0
        self.done = False
        self.elapsed = 0.0

    def go_on(self, _: object = None) -> bool:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.steps += 1
        now = time.perf_counter()
        if self.steps == WARMUP_STEPS:
            self.start = now
        timed = self.steps - WARMUP_STEPS
        self.done = timed >= MIN_STEPS and now - self.start >= SECONDS
        self.elapsed = now - self.start
        return not self.done

    def rate(self, rows: int) -> float:
        return rows * (self.steps - WARMUP_STEPS) / max(self.elapsed, 1e-9)
