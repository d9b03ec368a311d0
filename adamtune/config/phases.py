"""A configuration's hyperparameters at every step: one rule for training, replay, logging and
export, so a replayed schedule is exactly the one that trained.

A configuration with ``phases`` (adamtune.config.adam.Phase) switches values at each phase's
start, ``round(start * total_steps)``: exactly the recorded step at the recorded run length
(a start is stored as ``step / total_steps``), and the same fraction of training at any other
length. Within a phase the LR is the phase's ``lr`` times its schedule's multiplier at the
step, the multiplier of a run of ``total_steps`` (adamtune.config.schedules).
"""

from __future__ import annotations

from dataclasses import replace

from adamtune.config.adam import AdamConfig, Phase
from adamtune.config.schedules import multiplier

# What a phase may change, beside the LR, as the optimizer's param group names them
GROUP_VALUES = ("betas", "eps", "weight_decay")


def phase_starts(config: AdamConfig, total_steps: int) -> list[tuple[int, AdamConfig]]:
    """(first step, values) of every phase, the first at step 0; a phase that a short run
    rounds onto the step of the one before it replaces that one."""
    starts: dict[int, AdamConfig] = {0: config.fixed}
    for phase in config.phases:
        starts[min(total_steps, round(phase.start * total_steps))] = phase.config
    return sorted((step, values) for step, values in starts.items() if step < total_steps)


def changes(config: AdamConfig, total_steps: int) -> dict[int, AdamConfig]:
    """Step -> the values from it on, for every phase after the first."""
    return dict(phase_starts(config, total_steps)[1:])


def learning_rates(config: AdamConfig, total_steps: int) -> list[float]:
    """The LR of every step 0..total_steps-1."""
    rates: list[float] = []
    starts = phase_starts(config, total_steps)
    ends = [step for step, _ in starts[1:]] + [total_steps]
    for (start, values), end in zip(starts, ends, strict=True):
        rates += [
            values.lr * multiplier(values.schedule, step, total_steps) for step in range(start, end)
        ]
    return rates


def from_segments(segments: list[tuple[int, AdamConfig]], total_steps: int) -> AdamConfig:
    """(first step, values) segments, the first at step 0, as one configuration whose phases
    start at those steps of a run of ``total_steps`` (and at the same fractions of another)."""
    (_, first), *rest = segments
    phases = tuple(Phase(step / total_steps, values) for step, values in rest if step > 0)
    return replace(first.fixed, phases=phases)


def each_step(config: AdamConfig, total_steps: int) -> list[AdamConfig]:
    """The values in force at every step 0..total_steps-1."""
    starts = phase_starts(config, total_steps)
    ends = [step for step, _ in starts[1:]] + [total_steps]
    return [
        values for (start, values), end in zip(starts, ends, strict=True) for _ in range(start, end)
    ]


def values_at(config: AdamConfig, step: int, total_steps: int) -> AdamConfig:
    """The phase in force at ``step``."""
    current = config.fixed
    for start, values in phase_starts(config, total_steps):
        if start > step:
            break
        current = values
    return current


def apply(group: dict, values: AdamConfig) -> None:
    """Set a param group's betas, eps and weight decay to ``values``' (torch's Adam/AdamW and
    FusedAdam read them from the group at every step)."""
    group["betas"] = values.betas
    group["eps"] = values.eps
    group["weight_decay"] = values.weight_decay
