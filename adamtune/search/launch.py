"""``adamtune search`` as one library call: the study in this process, or spread over worker
processes on this machine, with the warnings the choice deserves."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from adamtune._util.urls import sqlite_path
from adamtune.config.settings import SearchSettings
from adamtune.errors import ConfigError
from adamtune.search.confirm import RunProgress
from adamtune.search.run import Callback, run_search
from adamtune.search.workers import run_workers
from adamtune.space.search_space import SearchSpace
from adamtune.tasks import Task
from adamtune.tracking import Tracker


def search(
    settings: SearchSettings,
    *,
    workers: int = 1,
    task: Task | None = None,
    space: SearchSpace | None = None,
    tracker: Tracker | None = None,
    on_trial: Callback | None = None,
    warn: Callable[[str], None] = lambda message: None,
    on_epoch: Callable[[int, int, int, dict[str, float]], None] | None = None,
    on_confirm: RunProgress | None = None,
    on_stack: Callable[[list[tuple[int, int, int, dict[str, float]]]], None] | None = None,
    started: float | None = None,
) -> optuna.Study:
    """``adamtune search``: one process (run_search) or ``workers`` processes sharing the study
    (adamtune.processes), with the warnings the choice deserves. ``tracker`` is the caller's
    (it is not closed here); with several workers each process tracks on its own.
    ``started`` (time.monotonic): when the command began, from which ``--timeout`` counts."""
    if workers > 1 and settings.strategy == "pbt":
        raise ConfigError(
            f"--strategy pbt: a population trains as one stack in one process, and --workers "
            f"{workers} cannot be one: leave --workers at 1"
        )
    if workers > 1:
        if settings.storage.startswith("sqlite") and sqlite_path(settings.storage) is not None:
            # (an in-memory database is refused next, in one line; no warning before it)
            warn(
                f"Warning: --workers {workers} on SQLite: writers from several processes "
                "queue on one file lock. For more than a few workers use PostgreSQL or "
                "journal:FILE (README, 'Scale out')."
            )
        return run_workers(
            settings,
            workers,
            on_trial=on_trial,
            task=task,
            space=space,
            warn=warn,
            on_confirm=on_confirm,
            started=started,
        )
    callbacks = [on_trial] if on_trial is not None else []
    return run_search(
        settings,
        callbacks=callbacks,
        tracker=tracker,
        task=task,
        space=space,
        warn=warn,
        on_epoch=on_epoch,
        on_confirm=on_confirm,
        on_stack=on_stack,
        started=started,
    )
