"""adamtune: tune Adam/AdamW and its learning-rate schedule with Optuna, log trials to MLflow.

The public API is imported lazily, so ``import adamtune`` (and ``adamtune --help``) stay fast:
torch, optuna and mlflow load only when a name that needs them is first used.
"""

from __future__ import annotations

from adamtune._util import moved
from adamtune._util.lazy import lazy_getattr

__version__ = "0.2.0"

_EXPORTS = {
    "AdamConfig": "adamtune.config.adam",
    "ScheduleConfig": "adamtune.config.adam",
    "AdamtuneError": "adamtune.errors",
    "SearchSpace": "adamtune.space.search_space",
    "load_space": "adamtune.space.search_space",
    "Task": "adamtune.tasks",
    "accuracy": "adamtune.tasks",
    "mean_squared_error": "adamtune.tasks",
    "mse": "adamtune.tasks",
    "rmse": "adamtune.tasks",
    "mae": "adamtune.tasks",
    "resolve_task": "adamtune.tasks",
    "train": "adamtune.training.single",
    "TrainResult": "adamtune.training.single",
    "SearchSettings": "adamtune.config.settings",
    "run_search": "adamtune.search.run",
    "load_study": "adamtune.results.studies",
    "load_config": "adamtune.results.studies",
    "build_optimizer": "adamtune.training.builders",
    "build_scheduler": "adamtune.training.builders",
    "training_loop": "adamtune.tasks.marks",
    "task_factory": "adamtune.tasks.marks",
    "LoopTrial": "adamtune.training.user_loop",
}

__all__ = sorted(_EXPORTS)

moved.install()


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
