"""run_search: open (or resume) an Optuna study and run trials of the objective on it.

The study is a plain Optuna study; adamtune adds study user attributes (task, metric, space)
and trial user attributes (see adamtune.objective) so other tools can read it without adamtune.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from adamtune.errors import StudyError
from adamtune.objective import Objective
from adamtune.space import SearchSpace, load_space
from adamtune.storage import open_storage, redact
from adamtune.tasks import Task, resolve_task
from adamtune.tracking import NullTracker, Tracker, make_tracker
from adamtune.train import resolve_device

SAMPLERS = ("tpe", "gp", "cmaes", "random", "qmc")
PRUNERS = ("median", "hyperband", "sha", "none")
Callback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``adamtune search`` takes; the defaults are the CLI's defaults."""

    task: str = "digits-mlp"
    space: str = "default"
    n_trials: int | None = 20
    timeout: float | None = None
    study_name: str | None = None
    storage: str = "sqlite:///adamtune.db"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    device: str = "auto"
    epochs: int | None = None
    n_jobs: int = 1
    optimizer: str = "fused"
    max_consecutive_failures: int = 5
    tracking_uri: str | None = None  # MLflow; None: tracking off
    experiment: str | None = None  # MLflow experiment; None: the study name
    heartbeat: int = 10  # seconds between a running trial's heartbeats (RDB storages); 0: off
    max_retries: int = 2  # times a trial whose worker died is re-queued with its parameters
    worker: int = 0  # this process's index among --workers; keeps their samplers apart

    def public(self) -> dict[str, object]:
        """The settings as a dict that is safe to print or track (no password in any URL)."""
        tracking = redact(self.tracking_uri) if self.tracking_uri else None
        return {**asdict(self), "storage": redact(self.storage), "tracking_uri": tracking}


def default_study_name(task: Task, space: SearchSpace) -> str:
    return f"{task.name}-{space.name}"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate/group are stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise StudyError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 4))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"--pruner: must be one of {', '.join(PRUNERS)}, got {name!r}")


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
        if self.limit and self.streak >= self.limit:
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


def storage_options(settings: SearchSettings, on_stale: StaleTrialHandler) -> dict[str, Any]:
    """Heartbeats for relational storages, so a dead worker's trial is failed and retried."""
    if settings.storage.startswith(("journal:", "grpc://")) or not settings.heartbeat:
        return {}
    return {
        "heartbeat_interval": settings.heartbeat,
        "grace_period": 3 * settings.heartbeat,
        "heartbeat_stale_trial_callback": on_stale,
    }


def open_study(
    settings: SearchSettings,
    task: Task,
    space: SearchSpace,
    on_stale: StaleTrialHandler | None = None,
) -> optuna.Study:
    """Create the study, or load it to resume; refuses a study made for another task."""
    on_stale = on_stale or StaleTrialHandler(settings.max_retries)
    with warnings.catch_warnings():  # heartbeats: stable in practice, flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(settings.storage, **storage_options(settings, on_stale))
    name = settings.study_name or default_study_name(task, space)
    epochs = settings.epochs or task.epochs
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=task.direction,
            load_if_exists=True,
            pruner=make_pruner(settings.pruner, epochs),
        )
    except ValueError as exc:  # e.g. a stored direction that differs
        raise StudyError(f"study {name!r} in {redact(settings.storage)}: {exc}") from None
    stored_task = study.user_attrs.get("task")
    if stored_task is not None and stored_task != task.name:
        raise StudyError(
            f"study {name!r} was created for task {stored_task!r}, not "
            f"{task.name!r}; pass --study-name to start a new study"
        )
    if stored_task is None:
        for key, value in (
            ("task", task.name),
            ("metric", task.metric_name),
            ("space", space.name),
            ("seed", settings.seed),
        ):
            study.set_user_attr(key, value)
    # Seeding with seed + trials-so-far makes a resumed study draw new points, not replay old;
    # the worker offset keeps processes started together from drawing the same points.
    study.sampler = make_sampler(
        settings.sampler, settings.seed + len(study.trials) + 7919 * settings.worker
    )
    return study


def run_search(
    settings: SearchSettings,
    *,
    callbacks: Sequence[Callback] = (),
    tracker: Tracker | None = None,
) -> optuna.Study:
    """Run ``settings.n_trials`` new trials (or until ``timeout``) and return the study.

    Completed trials are in storage as soon as they finish, so an interrupted search loses
    only the trial that was running. Raises StudyError when ``max_consecutive_failures``
    trials fail in a row. The tracker (default: from ``settings.tracking_uri``) is closed on
    every way out, so no tracked run stays open.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.ERROR)  # failures are shown by our callbacks
    task = resolve_task(settings.task)
    space = load_space(settings.space)
    device = resolve_device(settings.device)
    on_stale = StaleTrialHandler(settings.max_retries)
    study = open_study(settings, task, space, on_stale)
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
    )
    failures = FailureLimit(settings.max_consecutive_failures)
    tracker.start_study(study.study_name, settings.public(), space.text)
    threads = torch.get_num_threads()
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    finished = False
    try:
        study.optimize(
            objective,
            n_trials=settings.n_trials,
            timeout=settings.timeout,
            n_jobs=settings.n_jobs,
            catch=(Exception,),
            callbacks=[failures, *callbacks],
        )
        finished = True
    finally:
        torch.set_num_threads(threads)
        tracker.end_study(study, interrupted=not finished)
        tracker.close()
    if failures.tripped:
        raise StudyError(
            f"stopped after {failures.streak} failed trials in a row; last: {failures.last_reason}"
        )
    return study


def list_studies(storage_url: str) -> list[optuna.study.StudySummary]:
    return optuna.get_all_study_summaries(open_storage(storage_url), include_best_trial=True)


def load_study(name: str, storage_url: str) -> optuna.Study:
    """Load an existing study; an unknown name lists the ones that exist."""
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        known = ", ".join(names) if names else "none"
        raise StudyError(
            f"no study {name!r} in {redact(storage_url)} (studies there: {known})"
        ) from None


def top_trials(study: optuna.Study, k: int = 10) -> list[FrozenTrial]:
    """The ``k`` best completed trials, best first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=maximize)[:k]
