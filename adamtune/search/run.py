"""run_search: open (or resume) an Optuna study and run trials of the objective on it.

The study is a plain Optuna study; adamtune adds study user attributes (task, metric, space)
and trial user attributes (see adamtune.objective) so other tools can read it without adamtune.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from adamtune._util.urls import redact
from adamtune.config.adam import AdamConfig
from adamtune.config.settings import MAX_STACK, SearchSettings
from adamtune.errors import SpaceError, StorageError, StudyError, describe, shown
from adamtune.results.gain import study_baseline
from adamtune.search.confirm import (
    DEFAULT_TOP,
    RunProgress,
    affordable_top,
    confirm_study,
    confirmation_turn,
    run_record,
    trial_epochs,
)
from adamtune.search.objective import Objective
from adamtune.search.samplers import SeededByFirstTrial, make_sampler
from adamtune.space.baseline import prepare_baseline
from adamtune.space.search_space import SearchSpace, load_space
from adamtune.storage.claims import create_or_load
from adamtune.storage.store import open_storage
from adamtune.tasks import Task, resolve_task
from adamtune.tasks.base import fingerprint
from adamtune.tracking import NullTracker, Tracker, make_tracker
from adamtune.training.first_batch import check_one_batch
from adamtune.training.runner import Evaluated, Runner
from adamtune.training.single import planned_steps, resolve_device, run_precision

__all__ = ["SearchSettings", "open_study", "run_search"]

Callback = Callable[[optuna.Study, FrozenTrial], None]


def default_study_name(task: Task, space: SearchSpace, precision: str = "fp32") -> str:
    """``task-space``, and the precision when it is not fp32: trials of another precision
    reach other values, so by default they go to a study of their own."""
    name = f"{task.origin or task.name}-{space.name}"
    return name if precision == "fp32" else f"{name}-{precision}"


def _legacy_name(task: Task, space: SearchSpace, precision: str) -> str:
    """The default name before user tasks were named by where they live."""
    name = f"{task.name}-{space.name}"
    return name if precision == "fp32" else f"{name}-{precision}"


def _study_name(
    settings: SearchSettings, task: Task, space: SearchSpace, storage: Any, identity: str
) -> str:
    """``--study-name``, or the default; a user task's study made under the old default name
    (``FUNCTION-SPACE``) is still found when it was made by this same task."""
    if settings.study_name:
        return settings.study_name
    name = default_study_name(task, space, settings.precision)
    legacy = _legacy_name(task, space, settings.precision)
    if legacy == name:
        return name
    names = set(optuna.get_all_study_names(storage))
    if name in names or legacy not in names:
        return name
    attrs = optuna.load_study(study_name=legacy, storage=storage).user_attrs
    stored = attrs.get("task_identity")
    same = stored == identity if stored else attrs.get("task") == task.name
    return legacy if same else name


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 4))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"--pruner: must be one of median, hyperband, sha, none, got {shown(name)}")


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


class StaleTrialHandler:
    """Called by Optuna when it finds a trial whose worker stopped sending heartbeats (killed,
    machine lost): the trial is already FAIL; re-queue its parameters and close its tracked run."""

    def __init__(self, max_retries: int) -> None:
        with warnings.catch_warnings():  # stable since Optuna 2.8; still flagged experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        self.tracker: Tracker = NullTracker()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)
        self.tracker.stale_trial(trial.number)


def open_study(
    settings: SearchSettings,
    task: Task,
    space: SearchSpace,
    on_stale: StaleTrialHandler | None = None,
) -> optuna.Study:
    """Create the study, or load it to resume (see ``open_or_create``)."""
    return open_or_create(settings, task, space, on_stale)[0]


def open_or_create(
    settings: SearchSettings,
    task: Task,
    space: SearchSpace,
    on_stale: StaleTrialHandler | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it to resume, and say whether this process created it: of
    several processes starting together on a new study exactly one does, and that one alone
    enqueues the baseline. A stored study is resumed only when it fits: the same task, the
    same direction, and a space whose parameters keep their types."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.ERROR)  # failures are shown by our callbacks
    on_stale = on_stale or StaleTrialHandler(settings.max_retries)
    with warnings.catch_warnings():  # heartbeats: stable in practice, flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(settings.storage, heartbeat=settings.heartbeat, on_stale=on_stale)
    identity = fingerprint(task)
    name = settings.study_name or default_study_name(task, space, settings.precision)
    epochs = settings.epochs or task.epochs
    where = f"study {shown(name)} in {redact(settings.storage)}"
    try:
        name = _study_name(settings, task, space, storage, identity)
        where = f"study {shown(name)} in {redact(settings.storage)}"
        study, created = create_or_load(
            storage,
            name,
            direction=task.direction,
            pruner=make_pruner(settings.pruner, epochs),
        )
        check_fits(study, task, space, identity, settings.task)
        if identity and study.user_attrs.get("task_identity") is None:
            study.set_user_attr("task_identity", identity)
            study.set_user_attr("task_spec", settings.task)
        if study.user_attrs.get("task") is None:
            for key, value in (
                ("task", task.name),
                ("metric", task.metric_name),
                ("space", space.name),
                ("seed", settings.seed),
                ("precision", settings.precision),
            ):
                study.set_user_attr(key, value)
        stored = study.user_attrs.get("precision", "fp32")  # studies from before --precision
        if stored != settings.precision:
            raise StudyError(
                f"{where}: its trials trained with --precision {stored}, got --precision "
                f"{settings.precision}; resume it with --precision {stored}, or give a new "
                "--study-name"
            )
    except StudyError:
        raise
    except Exception as exc:  # a read-only, locked or broken storage
        raise StorageError(f"{where}: {describe(exc)}") from None
    if settings.sampler == "grid":  # grid ids index one shuffled order: every worker and every
        study.sampler = make_sampler("grid", settings.seed, space)  # resume shuffles alike
    else:
        study.sampler = SeededByFirstTrial(settings.sampler, settings.seed)
    return study, created


def trials_to_run(
    settings: SearchSettings, study: optuna.Study, space: SearchSpace, say: Callable[[str], None]
) -> int | None:
    """``--n-trials``; under the grid sampler, the grid points not yet visited (at most
    ``--n-trials`` of them), said before the search starts. A budget inside the sampler's
    random start-up is said too: it is a random search."""
    if settings.sampler != "grid":
        say_random_start(settings, study, say)
        return settings.n_trials
    size = space.grid_size()
    visited = {
        t.system_attrs["grid_id"]
        for t in study.get_trials(deepcopy=False)
        if "grid_id" in t.system_attrs and t.state != TrialState.WAITING
    }
    left = max(0, size - len(visited))
    n_trials = left if settings.n_trials is None else min(settings.n_trials, left)
    done = f", {len(visited)} already visited" if visited else ""
    say(f"Grid: {space.grid_description()}{done}; {n_trials} to run.")
    return n_trials


def check_values_reach(task: Task, space: SearchSpace) -> None:
    """A space's model: section needs a task that reads values: a loop, or a factory that
    takes the trial."""
    if space.model and task.train_loop is None and task.per_trial is None:
        names = ", ".join(space.model)
        raise SpaceError(
            f"{space.source}: model: {names}: task {shown(task.name)} reads no values of its "
            "own; make its factory take the trial (def make_task(trial) -> Task) or use a "
            "training loop, and read them with trial.suggest_float/suggest_int/"
            "suggest_categorical"
        )


# Optuna's n_startup_trials: trials its model-based samplers draw at random before modelling
STARTUP_TRIALS = {"tpe": 10, "gp": 10}


def say_random_start(
    settings: SearchSettings, study: optuna.Study, say: Callable[[str], None]
) -> None:
    """One line where every trial the study will have falls in the sampler's random start-up."""
    startup = STARTUP_TRIALS.get(settings.sampler)
    if startup is None or settings.n_trials is None:
        return
    before = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    total = len(before) + settings.n_trials
    if total > startup:
        return
    seeded = "" if before else f", seeded by --seed {settings.seed}: the same points on every task"
    say(
        f"Note: {settings.sampler.upper()} draws its first {startup} trials at random, so "
        f"these {total} are a random search (the {settings.space} space{seeded}); "
        f"--n-trials {3 * startup} or more lets it learn from them."
    )


def check_fits(
    study: optuna.Study, task: Task, space: SearchSpace, identity: str = "", spec: str = ""
) -> None:
    """Refuse to resume a study made for another task (its name, or what it trains: another
    model or loop under the same name), direction or parameter types."""
    name = shown(study.study_name)
    stored_task = study.user_attrs.get("task")
    if stored_task is not None and stored_task != task.name:
        raise StudyError(
            f"study {name} was created for task {shown(stored_task)}, not "
            f"{shown(task.name)}; pass --study-name to start a new study"
        )
    stored_identity = study.user_attrs.get("task_identity")
    if identity and stored_identity and stored_identity != identity:
        made_by = shown(study.user_attrs.get("task_spec") or study.user_attrs.get("task"))
        raise StudyError(
            f"study {name} was made by task {made_by}, which trains another model or loop than "
            f"{shown(spec or task.name)} (task fingerprint {stored_identity}, not {identity}); "
            "pass --study-name to start a new study"
        )
    stored = study.direction.name.lower()
    if stored != task.direction:
        raise StudyError(
            f"study {name} was created to {stored} its metric, but task {shown(task.name)} "
            f"asks to {task.direction} {task.metric_name}; pass --study-name to start a new study"
        )
    new = space.distributions()
    for trial in study.get_trials(deepcopy=False):
        for param, old in trial.distributions.items():
            if param not in new:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(old, new[param])
            except ValueError:
                raise StudyError(
                    f"study {name}: parameter {param} was searched as {_kind(old)} and space "
                    f"{shown(space.name)} makes it {_kind(new[param])}; pass --study-name to "
                    "start a new study"
                ) from None


def _kind(distribution: optuna.distributions.BaseDistribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return f"a choice of {shown(list(distribution.choices))}"
    scale = "log" if getattr(distribution, "log", False) else "linear"
    number = (
        "integer" if isinstance(distribution, optuna.distributions.IntDistribution) else "float"
    )
    return f"a {scale} {number} range"


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
) -> optuna.Study:
    """Run ``settings.n_trials`` new trials (or until ``timeout``) in this process and return
    the study; ``settings.stack`` of them at a time as one stacked model.

    Completed trials are in storage as soon as they finish, so an interrupted search loses
    only the trial that was running. Raises StudyError when ``max_consecutive_failures``
    trials fail in a row. ``task`` and ``space``, when given, are the resolved
    ``settings.task`` and ``settings.space``. The study is ended on the tracker on every way
    out; a tracker made here (from ``settings.tracking_uri``) is also closed here, one passed
    in is closed by its owner.
    """
    task = task or resolve_task(settings.task)
    space = space or load_space(settings.space)
    if settings.sampler == "grid":
        space = space.for_grid()
    device = resolve_device(settings.device)
    prec = run_precision(settings.precision, device)  # refuses bf16 where it cannot run
    planned_steps(task, settings.epochs or task.epochs)  # refuses an endless run up front
    check_values_reach(task, space)
    check_one_batch(task, device, prec)  # a task that cannot train fails now, not an epoch in
    rows = stack_rows(settings, task, device, warn)  # refuses a stack that cannot be, up front
    on_stale = StaleTrialHandler(settings.max_retries)
    study, created = open_or_create(settings, task, space, on_stale)
    n_trials = trials_to_run(settings, study, space, warn)
    owned = tracker is None
    if tracker is None:
        tracker = make_tracker(settings.tracking_uri, settings.experiment, settings.storage)
    on_stale.tracker = tracker
    objective = Objective(
        task=task,
        space=space,
        seed=settings.seed,
        epochs=settings.epochs,
        device=device,
        optimizer=settings.optimizer,
        tracker=tracker,
        patience=settings.patience,
        precision=settings.precision,
        on_epoch=on_epoch,
        on_stack=on_stack,
        warn=warn,
    )
    runner = Runner(
        task,
        settings.epochs,
        device,
        settings.optimizer,
        objective.effective_patience,
        rows,
        settings.precision,
        space.model,
    )
    failures = FailureLimit(settings.max_consecutive_failures)
    tracker.start_study(study.study_name, settings.redacted(), space.text)
    threads = torch.get_num_threads()
    if task.threads is not None and rows == 1:
        # A task's thread count is for one small model; a stack is N times the work per call,
        # and its batched products split across every core (benchmarks/results/stacked_trials_cpu.md).
        torch.set_num_threads(task.threads)
    finished = False
    try:
        if settings.baseline:
            start_baseline(study, space, settings, runner, tracker, warn, created)
        objective.baseline = study_baseline(study.user_attrs)
        if rows > 1:
            from adamtune.search.stacked import run_stacked

            run_stacked(
                study,
                objective,
                rows=rows,
                n_trials=n_trials,
                timeout=settings.timeout,
                callbacks=[failures, *callbacks],
                stop=lambda: failures.tripped,
            )
        else:
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if settings.n_jobs > 1 and waiting and n_trials != 0:
                # Threads can pop one enqueued trial twice (and fail to tell it): the baseline
                # (or a re-queued trial) runs alone first, then the rest in parallel.
                study.optimize(
                    objective, n_trials=1, catch=(Exception,), callbacks=[failures, *callbacks]
                )
                n_trials = None if n_trials is None else n_trials - 1
            study.optimize(
                objective,
                n_trials=n_trials,
                timeout=settings.timeout,
                n_jobs=settings.n_jobs,
                catch=(Exception,),
                callbacks=[failures, *callbacks],
            )
        if settings.confirm and not failures.tripped:
            pairs = ((settings.confirm_top or DEFAULT_TOP) + 1) * settings.confirm
            wide = replace(runner, rows=confirmation_rows(task, device, rows, pairs))
            confirm(study, wide, settings, tracker, warn, on_confirm)
        finished = True
    except (OSError, _sql_error(), optuna.exceptions.StorageInternalError) as exc:
        raise storage_lost(settings.storage, exc) from None  # disk full, server down
    finally:
        torch.set_num_threads(threads)
        tracker.end_study(study.study_name, interrupted=not finished)
        if owned:
            tracker.close()
    if failures.tripped:
        raise StudyError(
            f"stopped after {failures.streak} failed trials in a row; last: {failures.last_reason}"
        )
    return study


def start_baseline(
    study: optuna.Study,
    space: SearchSpace,
    settings: SearchSettings,
    runner: Runner,
    tracker: Tracker,
    say: Callable[[str], None],
    created: bool = True,
) -> None:
    """A new study's baseline (adamtune.baseline): enqueued, or evaluated here and tracked,
    by the process that ``created`` the study."""

    def evaluate(config: AdamConfig) -> Evaluated:
        return runner.evaluate([config], [settings.seed])[0][0]

    def log(name: str, config: AdamConfig, outcome: Evaluated) -> None:
        metric = runner.task.metric_name
        tracker.log_run(name, run_record(outcome, None, config, metric, "baseline"))

    prepare_baseline(
        study,
        space,
        grid=settings.sampler == "grid",
        created=created,
        evaluate=evaluate,
        log=log,
        say=say,
    )


def confirm(
    study: optuna.Study,
    runner: Runner,
    settings: SearchSettings,
    tracker: Tracker,
    say: Callable[[str], None],
    on_run: RunProgress | None = None,
) -> None:
    """``--confirm K``, once per finished study (adamtune.search.confirm.confirmation_turn): the top
    trials and the baseline under K further seeds. Without ``--confirm-top`` at most
    DEFAULT_TOP trials, fewer where they would train more than half the search's epochs."""
    if confirmation_turn(study, say) is None:
        return
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return  # nothing to confirm: no "Confirming ..." line before "no trial completed"
    seeds = settings.confirm
    top = settings.confirm_top
    if top is None:
        trials = study.get_trials(deepcopy=False)
        searched = trial_epochs(trials)
        epochs = runner.epochs or runner.task.epochs
        top = affordable_top(searched, seeds, epochs)
        if top < DEFAULT_TOP and sum(t.state == TrialState.COMPLETE for t in trials) > top:
            say(
                f"Confirmation: the top {top} instead of {DEFAULT_TOP}, so that it trains at "
                f"most half of the search's {searched} trial-epochs ({seeds} seeds x "
                f"{epochs} epochs a candidate); --confirm-top {DEFAULT_TOP} confirms "
                f"{DEFAULT_TOP}."
            )
    say(
        f"Confirming the top {top} trial{'s' if top != 1 else ''} and the baseline under {seeds} "
        f"further seed{'s' if seeds != 1 else ''}..."
    )
    confirm_study(
        study,
        runner,
        k=seeds,
        top=top,
        seed=settings.seed,
        tracker=tracker,
        on_run=on_run,
        say=say,
    )


def storage_lost(url: str, exc: BaseException) -> StorageError:
    """The storage failed during the study, in one line. Optuna wraps a failed commit in
    StorageInternalError with a guess ("invalid data in the commit, e.g. exceeding max
    length"); the database's own reason (disk full, a corrupt page) is its cause."""
    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else None
    reason = getattr(cause, "orig", None) or cause or exc
    text = describe(reason)
    if any(sign in text.lower() for sign in ("disk is full", "no space left", "disk full")):
        return StorageError(
            f"--storage {redact(url)!r}: the disk is full ({text}); completed trials are kept, "
            "free some space and run the same command to resume"
        )
    return StorageError(
        f"--storage {redact(url)!r}: lost during the study: {text}; completed trials are kept"
    )


def _sql_error() -> type[Exception]:
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover  (optuna depends on sqlalchemy)
        return OSError
    return SQLAlchemyError


AUTO_ROWS = {"cpu": 16, "cuda": 64}  # --stack auto, before the memory cap
MEMORY_SHARE = 0.25  # of free memory that a stack's parameters, gradients and moments may take


def stack_rows(
    settings: SearchSettings, task: Task, device: torch.device, warn: Callable[[str], None]
) -> int:
    """How many trials to train at once: ``--stack N``, or for ``auto`` as many as the task's
    model allows within the memory at hand. A task that cannot stack refuses an explicit N and
    makes ``auto`` one at a time, with one line saying why."""
    if settings.stack == 1:
        return 1
    auto = settings.stack == "auto"
    if auto and (settings.optimizer != "fused" or settings.n_jobs != 1 or settings.n_trials == 1):
        return 1  # what the user chose (or one trial) cannot stack: one at a time, as asked
    if auto and settings.precision == "fp16":
        warn(
            "--stack auto: fp16 trials cannot be stacked (the loss scaler is one model's); one at a time"
        )
        return 1
    from adamtune.training.stacked.model import why_not_stackable

    reason = why_not_stackable(task)
    if reason is not None:
        if not auto:
            raise StudyError(
                f"--stack {settings.stack}: task {shown(task.name)} cannot be stacked: {reason}; "
                "use --stack 1"
            )
        warn(f"--stack auto: task {shown(task.name)} cannot be stacked ({reason}); one at a time")
        return 1
    per_row = _row_bytes(task)
    free = _free_memory(device)
    if not auto:
        rows = int(settings.stack)
        if free and rows * per_row > free:
            raise StudyError(
                f"--stack {rows}: {rows} rows of task {shown(task.name)} need about "
                f"{_gigabytes(rows * per_row)} for parameters, gradients and Adam's moments, more "
                f"than the {_gigabytes(free)} free on {device.type}; use --stack auto or fewer rows"
            )
        return rows
    rows = AUTO_ROWS.get(device.type, 8)
    if free and per_row:
        rows = max(1, min(rows, int(free * MEMORY_SHARE // per_row)))
    if settings.n_trials is not None:
        rows = min(rows, settings.n_trials)
    return rows


def _row_bytes(task: Task) -> int:
    """A row's parameters, gradients and Adam's two moments."""
    return 4 * sum(p.numel() * p.element_size() for p in task.build_model().parameters())


def confirmation_rows(task: Task, device: torch.device, rows: int, wanted: int) -> int:
    """How wide a stack confirmation trains in: every (configuration, seed) pair at once where
    the memory allows it (one 18-row stack of mnist1d-mlp takes 6.0 s, three of 6 rows 12.3 s
    here), never narrower than the search's ``rows``; 1 where the search did not stack."""
    if rows == 1:
        return 1
    free, per_row = _free_memory(device), _row_bytes(task)
    fits = int(free * MEMORY_SHARE // per_row) if free and per_row else wanted
    return max(rows, min(wanted, fits, MAX_STACK))


def _gigabytes(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0
