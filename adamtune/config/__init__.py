"""Layer 2: what a trial's configuration is (AdamConfig, schedules, settings, the user's values); torch-free."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "SCHEDULE_KINDS": "adamtune.config.adam",
    "SCHEDULE_FIELDS": "adamtune.config.adam",
    "SCHEMA_VERSION": "adamtune.config.adam",
    "Domain": "adamtune.config.adam",
    "UNIT_OPEN": "adamtune.config.adam",
    "MIN_ONE_MINUS_BETA": "adamtune.config.adam",
    "DOMAINS": "adamtune.config.adam",
    "OPTIONAL_FIELDS": "adamtune.config.adam",
    "check": "adamtune.config.adam",
    "ScheduleConfig": "adamtune.config.adam",
    "AdamConfig": "adamtune.config.adam",
    "warmup_steps": "adamtune.config.schedules",
    "multiplier": "adamtune.config.schedules",
    "multipliers": "adamtune.config.schedules",
    "learning_rates": "adamtune.config.schedules",
    "SAMPLERS": "adamtune.config.settings",
    "PRUNERS": "adamtune.config.settings",
    "OPTIMIZERS": "adamtune.config.settings",
    "PRECISIONS": "adamtune.config.settings",
    "FORMATS": "adamtune.config.settings",
    "SEED_LIMIT": "adamtune.config.settings",
    "MAX_EPOCHS": "adamtune.config.settings",
    "MAX_PARALLEL": "adamtune.config.settings",
    "MAX_STACK": "adamtune.config.settings",
    "DEVICE_PATTERN": "adamtune.config.settings",
    "MAX_STUDY_NAME": "adamtune.config.settings",
    "MAX_CONFIRM": "adamtune.config.settings",
    "MAX_HEARTBEAT": "adamtune.config.settings",
    "check_study_name": "adamtune.config.settings",
    "check_device": "adamtune.config.settings",
    "check_settings": "adamtune.config.settings",
    "SearchSettings": "adamtune.config.settings",
    "Spec": "adamtune.config.values",
    "ADAM_NAMES": "adamtune.config.values",
    "Values": "adamtune.config.values",
    "default": "adamtune.config.values",
    "parse_model_section": "adamtune.config.values",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
