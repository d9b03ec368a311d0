"""Open (or resume) a search's Optuna study: its name, storage, pruner and sampler, and the
checks that a stored study fits this task and space."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune._util.urls import redact
from adamtune.config.settings import SearchSettings
from adamtune.errors import StorageError, StudyError, describe, shown
from adamtune.search.pruners import PeerMedianPruner
from adamtune.search.samplers import SeededByFirstTrial, make_sampler
from adamtune.space.search_space import SearchSpace
from adamtune.storage.claims import create_or_load
from adamtune.storage.optuna_private import fail_stale
from adamtune.storage.store import open_storage
from adamtune.tasks import Task
from adamtune.tasks.base import fingerprint
from adamtune.tasks.record import changes, task_record
from adamtune.tracking import NullTracker, Tracker


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
        return PeerMedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 4))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"--pruner: must be one of median, hyperband, sha, none, got {shown(name)}")


class StaleTrialHandler:
    """Called by Optuna when it finds a trial whose worker stopped sending heartbeats (killed,
    machine lost): the trial is already FAIL; re-queue its parameters and close its tracked run."""

    def __init__(self, max_retries: int) -> None:
        with warnings.catch_warnings():  # stable since Optuna 2.8; still flagged experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        self.tracker: Tracker = NullTracker()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if study.user_attrs.get("strategy") != "pbt":  # a population's member is never retried
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
    say: Callable[[str], None] = lambda message: None,
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
        if settings.n_trials == 0 and name not in optuna.get_all_study_names(storage):
            raise StudyError(
                f"--n-trials 0: confirms the finished trials of an existing study, and {where} "
                "does not exist yet; give --n-trials 1 or more"
            )
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
        _say_changed_search(study, settings, where, say)
        if study.user_attrs.get("task") is None:
            for key, value in (
                ("task", task.name),
                ("metric", task.metric_name),
                ("space", space.name),
                ("seed", settings.seed),
                ("precision", settings.precision),
            ):
                study.set_user_attr(key, value)
        if study.user_attrs.get("strategy") == "pbt" and settings.strategy != "pbt":
            fail_stale(study)  # a killed population's members end FAIL, refused or not
            raise StudyError(
                f"{where}: holds a population (--strategy pbt), which a search cannot add "
                "trials to; give a new --study-name"
            )
        stored = study.user_attrs.get("precision", "fp32")  # studies from before --precision
        if stored != settings.precision:
            raise StudyError(
                f"{where}: its trials trained with --precision {stored}, got --precision "
                f"{settings.precision}; resume it with --precision {stored}, or give a new "
                "--study-name"
            )
        check_record(study, task_record(task, epochs), settings, where, say)
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


def _say_changed_search(
    study: optuna.Study, settings: SearchSettings, where: str, say: Callable[[str], None]
) -> None:
    """A resumed study may take another sampler or pruner (Optuna keeps neither): one line
    says so, and the study records the new ones."""
    changed = []
    for key, now in (("sampler", settings.sampler), ("pruner", settings.pruner)):
        before = study.user_attrs.get(key)
        if before is not None and before != now:
            changed.append(f"--{key} {now} (its trials so far: {before})")
        if before != now:
            study.set_user_attr(key, now)
    if changed:
        say(f"Resuming {where} with {' and '.join(changed)}.")


RECORD_ATTR = "task_record"  # the study attribute: adamtune.tasks.record
CHANGED_ATTR = "resumed_changed"  # every resume with --resume-changed: when and what


def check_record(
    study: optuna.Study,
    record: dict[str, Any],
    settings: SearchSettings,
    where: str,
    say: Callable[[str], None],
) -> None:
    """Store the task's record on a new study; on a resumed one, refuse what changed (the data,
    the split sizes, the epochs, the batch size, the metric) in one line naming each change,
    unless ``--resume-changed`` says to go on, which the study then records."""
    stored = study.user_attrs.get(RECORD_ATTR)
    finished = any(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    if not isinstance(stored, dict):
        if finished:
            say(
                f"Note: {where} was made before adamtune recorded a study's data and recipe; "
                "that they are unchanged could not be checked."
            )
        study.set_user_attr(RECORD_ATTR, record)
        return
    changed = changes(stored, record)
    if not changed:
        return
    if not settings.resume_changed:
        hint = ""
        if all(change.startswith("data digest") for change in changed):
            hint = " (a task that draws its data at random without a seed makes other data every run: seed it)"
        raise StudyError(
            f"{where}: its trials trained on other data or another recipe ({'; '.join(changed)})"
            f"{hint}; give a new --study-name for a new study, or pass --resume-changed to "
            "resume it on purpose"
        )
    import time

    history = study.user_attrs.get(CHANGED_ATTR)
    history = list(history) if isinstance(history, list) else []
    history.append({"time": time.time(), "changes": changed})
    study.set_user_attr(CHANGED_ATTR, history)
    study.set_user_attr(RECORD_ATTR, record)
    say(f"Resuming {where} on purpose although {'; '.join(changed)} (recorded on the study).")


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
