"""run_search: one search in this process, read top to bottom: prepare the plan, open the
study, then the trials with the baseline before them and the confirmation after.

The study is a plain Optuna study; adamtune adds study user attributes (task, metric, space)
and trial user attributes (see adamtune.search.objective) so other tools can read it without
adamtune.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from adamtune._util.urls import redact
from adamtune.config.adam import AdamConfig
from adamtune.config.settings import SearchSettings
from adamtune.errors import StorageError, StudyError, describe
from adamtune.results.gain import study_baseline
from adamtune.search.baseline import start_baseline
from adamtune.search.budget import Budget
from adamtune.search.confirm import DEFAULT_TOP, RunProgress, confirm_finished_study
from adamtune.search.objective import Objective
from adamtune.search.plan import Plan, prepare
from adamtune.search.study import StaleTrialHandler, open_or_create, trials_to_run
from adamtune.search.warm import enqueue_warm_start, read_warm_start
from adamtune.space.search_space import SearchSpace
from adamtune.tasks import Task
from adamtune.tracking import Tracker, make_tracker
from adamtune.training.stacked.sizing import confirmation_rows

__all__ = ["SearchSettings", "run_search"]

Callback = Callable[[optuna.Study, FrozenTrial], None]


class FailureLimit:
    """Stops the study after ``limit`` failed trials in a row, instead of burning the budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak = 0
        self.last_reason = ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.streak = 0
            return
        self.streak += 1
        self.last_reason = trial.user_attrs.get("fail_reason", "unknown error")
        if self.tripped:
            with contextlib.suppress(RuntimeError):  # outside study.optimize: callers ask tripped
                study.stop()

    @property
    def tripped(self) -> bool:
        return bool(self.limit) and self.streak >= self.limit


def run_search(
    settings: SearchSettings,
    *,
    callbacks: Sequence[Callback] = (),
    tracker: Tracker | None = None,
    task: Task | None = None,
    space: SearchSpace | None = None,
    warn: Callable[[str], None] = lambda message: None,
    on_epoch: Callable[[int, int, int, dict[str, float]], None] | None = None,
    on_confirm: RunProgress | None = None,
    on_stack: Callable[[list[tuple[int, int, int, dict[str, float]]]], None] | None = None,
    plan: Plan | None = None,
    started: float | None = None,
) -> optuna.Study:
    """Run ``settings.n_trials`` new trials (or until ``timeout``) in this process and return
    the study; ``settings.stack`` of them at a time as one stacked model.

    Completed trials are in storage as soon as they finish, so an interrupted search loses
    only the trial that was running. Raises StudyError when ``max_consecutive_failures``
    trials fail in a row. ``task`` and ``space``, when given, are the resolved
    ``settings.task`` and ``settings.space``; ``plan``, when given, is all of it resolved
    (a worker's). The study is ended on the tracker on every way out; a tracker made here
    (from ``settings.tracking_uri``) is also closed here, one passed in is closed by its owner.
    """
    budget = Budget.starting(settings.timeout, settings.confirm > 0, started)  # the clock
    warm = read_warm_start(settings.warm_start, settings.storage) if settings.warm_start else None
    plan = plan or prepare(settings, task=task, space=space, warn=warn)
    # A population's member lived in its population's memory: a dead one is failed, never
    # retried on its own.
    on_stale = StaleTrialHandler(0 if settings.strategy == "pbt" else settings.max_retries)
    study, created = open_or_create(settings, plan.task, plan.space, on_stale, warn)
    n_trials = trials_to_run(settings, study, plan.space, warn)
    owned = tracker is None
    if tracker is None:
        tracker = make_tracker(settings.tracking_uri, settings.experiment, settings.storage)
    on_stale.tracker = tracker
    objective = plan.objective(tracker, on_epoch=on_epoch, on_stack=on_stack, warn=warn)
    objective.deadline = budget.search_deadline  # the search share: then confirmation
    failures = FailureLimit(settings.max_consecutive_failures)
    split = budget.split_line()
    if split and n_trials != 0:
        warn(split)

    def trials() -> bool:
        objective.baseline = study_baseline(study.user_attrs)
        run_trials(plan, study, objective, n_trials, [failures, *callbacks], failures, budget)
        budget.searched(epochs_since(study, budget.started_wall))
        return not failures.tripped  # a study stopped by failures is not confirmed

    threads = torch.get_num_threads()
    if plan.task.threads is not None and plan.rows == 1:
        # A task's thread count is for one small model; a stack is N times the work per call,
        # and its batched products split across every core (benchmarks/results/stacked_trials_cpu.md).
        torch.set_num_threads(plan.task.threads)
    try:
        around_trials(
            plan, study, created, tracker, trials, plan.rows, warn, on_confirm, budget, warm
        )
    finally:
        torch.set_num_threads(threads)
        if owned:
            tracker.close()
    if failures.tripped:
        raise StudyError(
            f"stopped after {failures.streak} failed trials in a row; last: {failures.last_reason}"
        )
    return study


def around_trials(
    plan: Plan,
    study: optuna.Study,
    created: bool,
    tracker: Tracker,
    trials: Callable[[], bool],
    rows: int,
    warn: Callable[[str], None],
    on_confirm: RunProgress | None,
    budget: Budget | None = None,
    warm: list[tuple[str, AdamConfig]] | None = None,
) -> None:
    """What every search runs around its ``trials()``, in this process and for worker
    processes alike: the study's tracker run, the baseline before (by the process that
    ``created`` the study), and the confirmation after (when ``trials()`` says it may run),
    ``rows`` at a time. A storage lost on the way is one line."""
    s = plan.settings
    runner = plan.runner(rows)
    tracker.start_study(study.study_name, s.redacted(), plan.space.text)
    finished = False
    try:
        if s.baseline:
            start_baseline(study, plan.space, s, runner, tracker, warn, created)
        if s.warm_start and warm:
            enqueue_warm_start(study, plan.space, warm, s.warm_start, warn)
        may_confirm = trials()
        if s.confirm and may_confirm:
            pairs = ((s.confirm_top or DEFAULT_TOP) + 1) * s.confirm
            wide = replace(runner, rows=confirmation_rows(plan.task, plan.device, rows, pairs))
            confirm_finished_study(study, wide, s, tracker, warn, on_confirm, budget)
        finished = True
    except (OSError, _sql_error(), optuna.exceptions.StorageInternalError) as exc:
        raise storage_lost(s.storage, exc) from None  # disk full, server down
    finally:
        tracker.end_study(study.study_name, interrupted=not finished)


def run_trials(
    plan: Plan,
    study: optuna.Study,
    objective: Objective,
    n_trials: int | None,
    callbacks: list[Callback],
    failures: FailureLimit,
    budget: Budget | None = None,
) -> None:
    """The trials themselves: ``plan.rows`` at a time as one stack, or one at a time through
    Optuna's optimize loop (``--n-jobs`` threads)."""
    s = plan.settings
    timeout = budget.search_seconds_left() if budget is not None else s.timeout
    if s.strategy == "pbt":
        from adamtune.search.population import default_interval, run_population
        from adamtune.training.stacked.population import Rules

        interval = s.pbt_interval or default_interval(plan.epochs)
        rules = Rules(interval, anchors=round(s.anchors * plan.rows))
        run_population(
            study,
            objective,
            size=plan.rows,
            rules=rules,
            timeout=timeout,
            stop=lambda: failures.tripped,
            say=objective.warn,
        )
        return
    if plan.rows > 1:
        from adamtune.search.stacked import run_stacked

        run_stacked(
            study,
            objective,
            rows=plan.rows,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=callbacks,
            stop=lambda: failures.tripped,
        )
        return
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if s.n_jobs > 1 and waiting and n_trials != 0:
        # Threads can pop one enqueued trial twice (and fail to tell it): the baseline
        # (or a re-queued trial) runs alone first, then the rest in parallel.
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
        n_trials = None if n_trials is None else n_trials - 1
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout,
        n_jobs=s.n_jobs,
        catch=(Exception,),
        callbacks=callbacks,
    )


def epochs_since(study: optuna.Study, started: float) -> int:
    """Trial-epochs that the study's trials started since ``started`` (wall clock) trained:
    what this process's search trained, for the confirmation's share of the budget."""
    return sum(
        max(1, len(t.intermediate_values))
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished()
        and t.datetime_start is not None
        and t.datetime_start.timestamp() >= started - 1.0
    )


def storage_lost(url: str, exc: BaseException) -> StorageError:
    """The storage failed during the study, in one line. Optuna wraps a failed commit in
    StorageInternalError with a guess ("invalid data in the commit, e.g. exceeding max
    length"); the database's own reason (disk full, a corrupt page) is its cause."""
    text = describe(_database_reason(exc))
    if any(sign in text.lower() for sign in ("disk is full", "no space left", "disk full")):
        return StorageError(
            f"--storage {redact(url)!r}: the disk is full ({text}); completed trials are kept, "
            "free some space and run the same command to resume"
        )
    return StorageError(
        f"--storage {redact(url)!r}: lost during the study: {text}; completed trials are kept"
    )


def _database_reason(exc: BaseException) -> BaseException:
    """The database's own error in ``exc``'s chain (causes and contexts, however the layers
    between re-raised it): a DBAPI error's ``orig``, else an OSError, else ``exc`` itself,
    never Optuna's generic StorageInternalError text when anything better is there."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for error in chain:
        if getattr(error, "orig", None) is not None:
            return error.orig  # type: ignore[attr-defined, no-any-return]
    for error in chain:
        if isinstance(error, OSError):
            return error
    specific = [e for e in chain if not isinstance(e, optuna.exceptions.StorageInternalError)]
    return specific[0] if specific else exc


def _sql_error() -> type[Exception]:
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover  (optuna depends on sqlalchemy)
        return OSError
    return SQLAlchemyError
