"""Layer 6: a study around the trials: launch, run, objective, the stack's ask/tell, workers, baseline, confirmation."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "search": "adamtune.search.launch",
    "Callback": "adamtune.search.run",
    "FailureLimit": "adamtune.search.run",
    "check_values_reach": "adamtune.search.plan",
    "run_search": "adamtune.search.run",
    "around_trials": "adamtune.search.run",
    "run_trials": "adamtune.search.run",
    "storage_lost": "adamtune.search.run",
    "WorkerPlan": "adamtune.search.plan",
    "Plan": "adamtune.search.plan",
    "prepare": "adamtune.search.plan",
    "from_worker_plan": "adamtune.search.plan",
    "default_study_name": "adamtune.search.study",
    "make_pruner": "adamtune.search.study",
    "StaleTrialHandler": "adamtune.search.study",
    "open_study": "adamtune.search.study",
    "open_or_create": "adamtune.search.study",
    "trials_to_run": "adamtune.search.study",
    "STARTUP_TRIALS": "adamtune.search.study",
    "say_random_start": "adamtune.search.study",
    "check_fits": "adamtune.search.study",
    "Outcome": "adamtune.search.baseline",
    "OutcomeT": "adamtune.search.baseline",
    "prepare_baseline": "adamtune.search.baseline",
    "record_baseline_trial": "adamtune.search.baseline",
    "start_baseline": "adamtune.search.baseline",
    "STUDY_ATTR": "adamtune.search.confirm",
    "DEFAULT_TOP": "adamtune.search.confirm",
    "COST_SHARE": "adamtune.search.confirm",
    "RunProgress": "adamtune.search.confirm",
    "confirmation_turn": "adamtune.search.confirm",
    "trial_epochs": "adamtune.search.confirm",
    "affordable_top": "adamtune.search.confirm",
    "confirmation_seeds": "adamtune.search.confirm",
    "confirm_study": "adamtune.search.confirm",
    "run_record": "adamtune.search.confirm",
    "confirm_finished_study": "adamtune.search.confirm",
    "AUTO_ROWS": "adamtune.training.stacked.sizing",
    "MEMORY_SHARE": "adamtune.training.stacked.sizing",
    "stack_rows": "adamtune.training.stacked.sizing",
    "confirmation_rows": "adamtune.training.stacked.sizing",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
