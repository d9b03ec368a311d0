"""Layer 3: search spaces as data (YAML in, Optuna distributions out) and the baseline point."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "TOP_LEVEL": "adamtune.space.search_space",
    "SCHEDULE_KEYS": "adamtune.space.search_space",
    "LOG_BY_DEFAULT": "adamtune.space.search_space",
    "BOOL_FIELDS": "adamtune.space.search_space",
    "RANGE_KEYS": "adamtune.space.search_space",
    "MAX_GRID_POINTS": "adamtune.space.search_space",
    "TrialLike": "adamtune.space.search_space",
    "Fixed": "adamtune.space.search_space",
    "Categorical": "adamtune.space.search_space",
    "FloatRange": "adamtune.space.search_space",
    "IntRange": "adamtune.space.search_space",
    "Param": "adamtune.space.search_space",
    "SearchSpace": "adamtune.space.search_space",
    "shipped_spaces": "adamtune.space.search_space",
    "space_text": "adamtune.space.search_space",
    "load_space": "adamtune.space.search_space",
    "fixed_fields": "adamtune.space.search_space",
    "parse_params": "adamtune.space.search_space",
    "STUDY_ATTR": "adamtune.space.baseline",
    "TRIAL_ATTR": "adamtune.space.baseline",
    "ADAMW_DEFAULTS": "adamtune.space.baseline",
    "ADAM_DEFAULTS": "adamtune.space.baseline",
    "DEFAULTS_LABEL": "adamtune.space.baseline",
    "ADAM_LABEL": "adamtune.space.baseline",
    "SPACE_LABEL": "adamtune.space.baseline",
    "baseline_config": "adamtune.space.baseline",
    "baseline_params": "adamtune.space.baseline",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
