"""Layer 6: a study around the trials: launch, run, objective, the stack's ask/tell, workers, baseline, confirmation."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "search": "adamtune.search.launch",
    "Callback": "adamtune.search.run",
    "default_study_name": "adamtune.search.run",
    "make_pruner": "adamtune.search.run",
    "FailureLimit": "adamtune.search.run",
    "StaleTrialHandler": "adamtune.search.run",
    "open_study": "adamtune.search.run",
    "open_or_create": "adamtune.search.run",
    "trials_to_run": "adamtune.search.run",
    "check_values_reach": "adamtune.search.run",
    "STARTUP_TRIALS": "adamtune.search.run",
    "say_random_start": "adamtune.search.run",
    "check_fits": "adamtune.search.run",
    "run_search": "adamtune.search.run",
    "start_baseline": "adamtune.search.run",
    "confirm": "adamtune.search.run",
    "storage_lost": "adamtune.search.run",
    "AUTO_ROWS": "adamtune.search.run",
    "MEMORY_SHARE": "adamtune.search.run",
    "stack_rows": "adamtune.search.run",
    "confirmation_rows": "adamtune.search.run",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
