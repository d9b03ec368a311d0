"""``--stack auto`` never loses: a few real training steps timed one at a time and at a few
stack widths, and the width that trains the most rows per second, or one at a time.

Stacking pays where a step is dominated by per-call overhead (small models, a DataLoader every
row would read alone); a convolution or a transformer that already keeps two CPU cores busy
may be compute-bound, and a stack of it is no faster per row. Both sides run the code a trial
runs, on the task cut to a few steps an epoch (and the same share of its validation split):
train() one at a time, and the stacked loop (train_stack) at each width, so every step's
bookkeeping and the evaluations count as they do in a trial. The timings run under a forked
random state, so no trial's seed, weights or batches change because they ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from adamtune.config.adam import AdamConfig
from adamtune.tasks.base import Task, is_tensor_pair, split_size
from adamtune.training.first_batch import forked_random, head_of
from adamtune.training.precision import Precision
from adamtune.training.single import run_precision, train
from adamtune.training.stacked.loop import train_stack
from adamtune.training.stacked.model import _mlp_layers

STEPS = 8  # steps an epoch of the runs timed
MIN_RUNS = 2
SECONDS = 0.3  # per width measured, after one untimed run
BUDGET = 4.0  # seconds for all the widths
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
    first, until the next would take more than what is left of BUDGET seconds. (A narrow
    stack may be no faster than one at a time while a wider one is: every width is timed.)"""
    prec = run_precision(precision, device)
    started = time.perf_counter()
    with forked_random():
        out = {1: _alone(task, device, prec)}  # as a lone trial runs: on the task's threads
        for width in widths:
            step = width / max(out.values())  # seconds a step of this width should take
            spent = time.perf_counter() - started
            if spent + 3 * 2 * STEPS * step > BUDGET:  # an untimed run and MIN_RUNS, 2 epochs
                break
            out[width] = _stacked(task, device, prec, width)
        # timed again last, the better figure kept: one at a time is never under-rated by a
        # first measurement that paid for warming the kernels up
        out[1] = max(out[1], _alone(task, device, prec))
    return out


def _alone(task: Task, device: torch.device, prec: Precision) -> float:
    threads = torch.get_num_threads()
    if task.threads is not None:  # lone trials of such a task run on its threads
        torch.set_num_threads(task.threads)
    try:
        short = _short(task)
        return _rate(
            lambda: train(short, AdamConfig(), device=device, precision=prec.name), 1, short
        )
    finally:
        torch.set_num_threads(threads)


def _stacked(task: Task, device: torch.device, prec: Precision, width: int) -> float:
    short = _short(task, epochs=2)  # a stack lives for many epochs: build it once per two
    configs = [AdamConfig()] * width

    def run() -> None:
        queue = iter(configs)
        train_stack(
            short,
            lambda: next(queue, None),
            rows=width,
            device=device,
            precision=prec.name,
            checked=True,
        )

    return _rate(run, width, short)


def _short(task: Task, epochs: int = 1) -> Task:
    """``task`` cut to STEPS steps an epoch and the same share of its validation split: a
    run whose steps, evaluations and bookkeeping are a trial's, in proportion."""
    size = split_size(task.train)
    kept = min(size, STEPS * task.batch_size)
    validation = max(1, round(split_size(task.validation) * kept / size))
    return replace(
        task,
        train=head_of(task, task.train, kept),
        validation=head_of(task, task.validation, validation),
        test=None,
        epochs=epochs,
        patience=None,
    )


def _rate(run: Callable[[], object], rows: int, short: Task) -> float:
    """Rows trained per second by ``run`` (one run of ``short``), after one untimed run, over
    at least SECONDS and MIN_RUNS runs."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        sync: Callable[[], None] = torch.cuda.synchronize
    else:
        sync = lambda: None  # noqa: E731
    run()
    sync()
    steps = short.epochs * short.steps_per_epoch()
    started, runs = time.perf_counter(), 0
    while runs < MIN_RUNS or time.perf_counter() - started < SECONDS:
        run()
        sync()
        runs += 1
    return rows * steps * runs / (time.perf_counter() - started)
