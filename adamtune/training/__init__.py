"""Layer 4: training a model with FusedAdam, one trial or a stack of them; no optuna, mlflow or click."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "OptimizerFactory": "adamtune.training.single",
    "OnEval": "adamtune.training.single",
    "EVAL_CHUNK": "adamtune.training.single",
    "MAX_TOTAL_STEPS": "adamtune.training.single",
    "Evaluation": "adamtune.training.single",
    "TrainingLog": "adamtune.training.single",
    "TrainResult": "adamtune.training.single",
    "EarlyStopping": "adamtune.training.single",
    "resolve_device": "adamtune.training.single",
    "train": "adamtune.training.single",
    "run_precision": "adamtune.training.single",
    "settle": "adamtune.training.single",
    "keep": "adamtune.training.single",
    "weight_diagnostics": "adamtune.training.single",
    "planned_steps": "adamtune.training.single",
    "check_divergence": "adamtune.training.single",
    "evaluate": "adamtune.training.single",
    "build_optimizer": "adamtune.training.builders",
    "build_scheduler": "adamtune.training.builders",
    "Evaluated": "adamtune.training.runner",
    "Runner": "adamtune.training.runner",
    "TrialStopped": "adamtune.training.user_loop",
    "LoopTrial": "adamtune.training.user_loop",
    "run_loop": "adamtune.training.user_loop",
    "RESERVED_PARAMS": "adamtune.training.user_loop",
    "AUTOCAST": "adamtune.training.precision",
    "PrecisionUnavailable": "adamtune.training.precision",
    "check_device_supports": "adamtune.training.precision",
    "Precision": "adamtune.training.precision",
    "as_float": "adamtune.training.precision",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
