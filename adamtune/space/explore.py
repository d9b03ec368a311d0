"""Explore, for a population (--strategy pbt): a copied member's values perturbed inside the
search space it was sampled from.

Every searched field moves. A range is multiplied by 0.8 or 1.2 in the space's own scale: on a
log range the value itself (1 - beta where the space searches ``one_minus_beta``), on a linear
range the same factor (a linear range's value at 0 stays there until resampled). With
probability ``resample`` the field is drawn afresh from its range instead (log-uniform on a log
range), and a field that the space lets switch off (``include_zero``, ``include_none``) is
switched on or off at random only then. A list of choices is only resampled. Values are clamped
to the range's bounds; fixed fields never move. Ray Tune's PBT defaults: the factors, and a
resample probability of 0.25.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

from adamtune.config.adam import SCHEDULE_FIELDS, AdamConfig
from adamtune.errors import SpaceError
from adamtune.space.search_space import Categorical, FloatRange, IntRange, SearchSpace

FACTORS = (0.8, 1.2)
RESAMPLE = 0.25
KERNEL_FIELDS = ("decoupled", "amsgrad")  # one value per stack: a population cannot search them


def check_explorable(space: SearchSpace) -> None:
    """A population shares one stack: a space that searches decoupled or amsgrad is refused."""
    for name in KERNEL_FIELDS:
        if name in space.searched:
            raise SpaceError(
                f"{space.source}: {name}: --strategy pbt trains the population as one stack, "
                f"which needs one {name} value; fix it in the space (e.g. {name}: true), got "
                f"a search over it"
            )


@dataclass
class Explorer:
    """``explorer(config)``: ``config`` with every searched field perturbed (see the module)."""

    space: SearchSpace
    rng: random.Random
    resample: float = RESAMPLE

    def __call__(self, config: AdamConfig) -> AdamConfig:
        values = _space_values(config)
        for name, param in self.space.params.items():
            if name in KERNEL_FIELDS or name not in values:
                continue
            values[name] = self._move(param, values[name])
        return _config(config, values)

    def _move(self, param: Any, value: Any) -> Any:
        fresh = self.rng.random() < self.resample
        if isinstance(param, Categorical):
            return self.rng.choice(param.choices) if fresh else value
        if isinstance(param, FloatRange):
            switchable = param.include_zero or param.include_none
            off = 0.0 if param.include_zero else None
            if fresh:
                if switchable and self.rng.random() < 0.5:
                    return off
                return self._draw(param.low, param.high, param.log)
            if switchable and (value is None or value == 0.0):
                return value  # switched off: stays off until resampled
            return min(param.high, max(param.low, value * self.rng.choice(FACTORS)))
        if isinstance(param, IntRange):
            if fresh:
                return round(self._draw(param.low, param.high, param.log))
            moved = round(value * self.rng.choice(FACTORS))
            return int(min(param.high, max(param.low, moved)))
        return value  # Fixed

    def _draw(self, low: float, high: float, log: bool) -> float:
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)


def _space_values(config: AdamConfig) -> dict[str, Any]:
    """``config``'s values under the space's names (``one_minus_beta1``, ``schedule.kind``)."""
    values: dict[str, Any] = {
        "lr": config.lr,
        "beta1": config.beta1,
        "beta2": config.beta2,
        "one_minus_beta1": 1.0 - config.beta1,
        "one_minus_beta2": 1.0 - config.beta2,
        "eps": config.eps,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
    }
    for name, value in config.schedule.__dict__.items():
        values[f"schedule.{name}"] = value
    return values


def _config(config: AdamConfig, values: dict[str, Any]) -> AdamConfig:
    """``config`` with the space's names set back to its fields (1 - beta becomes beta)."""
    schedule = {
        name.removeprefix("schedule."): value
        for name, value in values.items()
        if name.startswith("schedule.")
    }
    fields = {k: v for k, v in values.items() if "." not in k and not k.startswith("one_minus")}
    for beta in ("beta1", "beta2"):
        if values[f"one_minus_{beta}"] != 1.0 - getattr(config, beta):
            fields[beta] = 1.0 - values[f"one_minus_{beta}"]
    kind = schedule["kind"]
    unread = set(schedule) - {"kind", "warmup_fraction", *SCHEDULE_FIELDS[kind]}
    for name in unread:  # a field this kind does not read keeps its value
        schedule[name] = getattr(config.schedule, name)
    return replace(config, schedule=replace(config.schedule, **schedule), **fields)
