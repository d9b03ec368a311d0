"""Learning-rate schedules as pure functions of (step, total_steps, schedule).

The multiplier for step ``t`` (0-based) of ``T`` optimizer steps, with ``W`` warmup steps:

* warmup, ``t < W``:            ``(t + 1) / W`` (linear ramp that reaches 1 at step W - 1)
* after warmup, progress ``p = (t - W) / (T - W)`` in ``[0, 1)``, ``f`` = final_lr_fraction:
  * constant:     ``1``
  * linear:       ``1 - (1 - f) * p``
  * cosine:       ``f + (1 - f) * (1 + cos(pi * p)) / 2``
  * exponential:  ``f ** p``
  * step:         ``gamma ** floor(p * (decays + 1))``  (``decays`` evenly spaced drops)

The same formula is used by training, logging and export, so a logged or exported schedule is
exactly the one a trial trained with. ``multipliers`` evaluates a whole schedule at once.
"""

from __future__ import annotations

import math
from typing import Protocol


class ScheduleConfig(Protocol):
    """What a schedule reads (adamtune.config.adam.ScheduleConfig has it; no import, no cycle)."""

    @property
    def kind(self) -> str: ...
    @property
    def warmup_fraction(self) -> float: ...
    @property
    def final_lr_fraction(self) -> float: ...
    @property
    def gamma(self) -> float: ...
    @property
    def decays(self) -> int: ...


def warmup_steps(schedule: ScheduleConfig, total_steps: int) -> int:
    """Number of warmup steps: the warmup fraction of ``total_steps``, rounded."""
    return min(total_steps, round(schedule.warmup_fraction * total_steps))


def multiplier(schedule: ScheduleConfig, step: int, total_steps: int) -> float:
    """LR multiplier (relative to the peak LR) for optimizer step ``step`` of ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, {total_steps}), got {step}")
    warm = warmup_steps(schedule, total_steps)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / (total_steps - warm)
    final = schedule.final_lr_fraction
    kind = schedule.kind
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return 1.0 - (1.0 - final) * progress
    if kind == "cosine":
        return final + (1.0 - final) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if kind == "exponential":
        return float(final**progress)
    if kind == "step":
        return float(schedule.gamma ** math.floor(progress * (schedule.decays + 1)))
    raise ValueError(f"unknown schedule kind {kind!r}")


def multipliers(schedule: ScheduleConfig, total_steps: int) -> list[float]:
    """The multiplier of every step 0..total_steps-1."""
    return [multiplier(schedule, step, total_steps) for step in range(total_steps)]


def learning_rates(peak_lr: float, schedule: ScheduleConfig, total_steps: int) -> list[float]:
    """The learning rate of every optimizer step: ``peak_lr * multiplier``."""
    return [peak_lr * m for m in multipliers(schedule, total_steps)]
