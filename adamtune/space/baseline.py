"""The baseline a study is measured against: what the user would have run without tuning.

By default that is torch.optim.AdamW's defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight
decay 0.01, constant LR), with every field the space fixes taken from the space; a space that
fixes ``decoupled: false`` gets torch.optim.Adam's (no weight decay). A space may name its own
``baseline:`` instead. A new study evaluates it first, in one of two ways that
both leave the sampler's picture of the space true:

- where the baseline lies inside the space, as an enqueued trial (``baseline_params`` gives
  the Optuna parameters that reproduce it): a real point of the space, which the sampler may
  learn from like any other;
- otherwise as a separate evaluation recorded on the study (``STUDY_ATTR``), never told to
  the sampler, since its values lie outside the distributions the sampler models.

No torch here: the reading side (``show``, ``studies``, the MLflow summary) uses this too.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from adamtune.config.adam import SCHEDULE_FIELDS, AdamConfig, ScheduleConfig
from adamtune.space.search_space import Categorical, Fixed, FloatRange, IntRange, SearchSpace

STUDY_ATTR = "baseline"  # study user attribute: label, config, how, and its value if separate
TRIAL_ATTR = "baseline"  # trial user attribute on the enqueued baseline trial: its label
ADAMW_DEFAULTS = AdamConfig(weight_decay=0.01)  # torch.optim.AdamW()'s defaults
ADAM_DEFAULTS = AdamConfig(weight_decay=0.0, decoupled=False)  # torch.optim.Adam()'s
DEFAULTS_LABEL = "AdamW defaults"
ADAM_LABEL = "Adam defaults"
SPACE_LABEL = "the space's baseline"


def baseline_config(space: SearchSpace) -> tuple[AdamConfig, str]:
    """The baseline for ``space`` and what to call it in summaries."""
    if space.baseline is not None:
        return space.baseline, SPACE_LABEL
    values: dict[str, Any] = {}
    schedule: dict[str, Any] = {}
    for name, param in space.params.items():
        if not isinstance(param, Fixed):
            continue
        if name.startswith("schedule."):
            schedule[name.removeprefix("schedule.")] = param.value
        elif name.startswith("one_minus_"):
            values[name.removeprefix("one_minus_")] = 1.0 - param.value
        else:
            values[name] = param.value
    adam = values.get("decoupled") is False
    defaults, label = (ADAM_DEFAULTS, ADAM_LABEL) if adam else (ADAMW_DEFAULTS, DEFAULTS_LABEL)
    config = replace(defaults, **values, schedule=replace(ScheduleConfig(), **schedule))
    return config, label


def _value(config: AdamConfig, name: str) -> Any:
    """The value of Optuna parameter ``name`` (``one_minus_beta1``, ``schedule.kind``...)."""
    if name.startswith("schedule."):
        return getattr(config.schedule, name.removeprefix("schedule."))
    if name.startswith("one_minus_"):
        return 1.0 - getattr(config, name.removeprefix("one_minus_"))
    return getattr(config, name)


def baseline_params(space: SearchSpace, config: AdamConfig) -> dict[str, Any] | None:
    """The Optuna parameters under which ``space`` samples exactly ``config``, or None when
    the config lies outside the space (a value out of a range or among no choices, or a
    fixed field set otherwise)."""
    params: dict[str, Any] = {}
    read = set(SCHEDULE_FIELDS[config.schedule.kind]) | {"kind", "warmup_fraction"}
    for name, param in space.params.items():
        if name.startswith("schedule.") and name.removeprefix("schedule.") not in read:
            continue  # a field this schedule kind never draws
        value = _value(config, name)
        if isinstance(param, Fixed):
            if not _same(param.value, value):
                return None
        elif isinstance(param, Categorical):
            matches = [c for c in param.choices if _same(c, value)]
            if not matches:
                return None
            params[name] = matches[0]
        elif isinstance(param, FloatRange):
            switchable = param.include_zero or param.include_none
            off = value == 0.0 if param.include_zero else value is None
            if switchable and off:
                params[f"{name}.enabled"] = False
            elif value is None or not param.low <= value <= param.high:
                return None
            else:
                if switchable:
                    params[f"{name}.enabled"] = True
                params[name] = float(value)
        elif isinstance(param, IntRange):
            if not param.low <= value <= param.high:
                return None
            params[name] = int(value)
    return params if _samples(space, params, config) else None


def _samples(space: SearchSpace, params: dict[str, Any], config: AdamConfig) -> bool:
    """Does ``space`` turn ``params`` into ``config``? (The proof that enqueuing is exact.)"""
    from optuna.trial import FixedTrial

    try:
        sampled = space.sample(FixedTrial(params))
    except ValueError:
        return False
    return _same_config(sampled, config)


def _same_config(a: AdamConfig, b: AdamConfig) -> bool:
    left, right = a.to_dict(), b.to_dict()
    left_schedule, right_schedule = left.pop("schedule"), right.pop("schedule")
    return all(_same(left[k], right[k]) for k in left) and all(
        _same(left_schedule[k], right_schedule[k]) for k in left_schedule
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return bool(a == b)
