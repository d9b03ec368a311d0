"""A configuration from elsewhere (another study's best, an exported file) as a trial of this
space: its values clipped into the space's ranges, what the space fixes taken from the space,
and one note for each value that moved. A configuration whose value lies among none of a
choice's options cannot be expressed and is skipped, with the reason."""

from __future__ import annotations

from typing import Any

from adamtune.config.adam import SCHEDULE_FIELDS, AdamConfig
from adamtune.space.baseline import _same, _value
from adamtune.space.search_space import Categorical, Fixed, FloatRange, IntRange, SearchSpace


def warm_params(space: SearchSpace, config: AdamConfig) -> tuple[dict[str, Any] | None, list[str]]:
    """(the Optuna parameters under which ``space`` samples the nearest configuration to
    ``config``, or None where it has none) and the notes on what moved."""
    params: dict[str, Any] = {}
    notes: list[str] = []
    read = set(SCHEDULE_FIELDS[config.schedule.kind]) | {"kind", "warmup_fraction"}
    for name, param in space.params.items():
        if name.startswith("schedule.") and name.removeprefix("schedule.") not in read:
            continue  # a field this schedule kind never draws
        value = _value(config, name)
        if isinstance(param, Fixed):
            if not _same(param.value, value):
                notes.append(f"{name} (the space fixes it)")
        elif isinstance(param, Categorical):
            matches = [c for c in param.choices if _same(c, value)]
            if not matches:
                return None, [f"{name} {value!r} is none of the space's {list(param.choices)!r}"]
            params[name] = matches[0]
        elif isinstance(param, FloatRange):
            switchable = param.include_zero or param.include_none
            off = value == 0.0 if param.include_zero else value is None
            if switchable and off:
                params[f"{name}.enabled"] = False
                continue
            if value is None or (value == 0.0 and not switchable and param.low > 0):
                value = param.low
            clipped = min(max(float(value), param.low), param.high)
            if clipped != value:
                notes.append(f"{name} {value:.4g} -> {clipped:.4g}")
            if switchable:
                params[f"{name}.enabled"] = True
            params[name] = clipped
        elif isinstance(param, IntRange):
            clipped_int = min(max(int(value), param.low), param.high)
            if clipped_int != value:
                notes.append(f"{name} {value} -> {clipped_int}")
            params[name] = clipped_int
    return params, notes
