"""adamtune: tune Adam/AdamW and its learning-rate schedule with Optuna, log trials to MLflow.

The public API is imported lazily, so ``import adamtune`` (and ``adamtune --help``) stay fast:
torch, optuna and mlflow load only when a name that needs them is first used.
"""

from __future__ import annotations

from adamtune._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "AdamConfig": "adamtune.config",
    "ScheduleConfig": "adamtune.config",
    "AdamtuneError": "adamtune.errors",
    "SearchSpace": "adamtune.space",
    "load_space": "adamtune.space",
    "Task": "adamtune.tasks",
    "accuracy": "adamtune.tasks",
    "mean_squared_error": "adamtune.tasks",
    "resolve_task": "adamtune.tasks",
    "train": "adamtune.train",
    "TrainResult": "adamtune.train",
    "SearchSettings": "adamtune.settings",
    "run_search": "adamtune.study",
    "load_study": "adamtune.studies",
    "load_config": "adamtune.studies",
    "build_optimizer": "adamtune.builders",
    "build_scheduler": "adamtune.builders",
    "training_loop": "adamtune.loops",
    "task_factory": "adamtune.loops",
    "LoopTrial": "adamtune.loops",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
