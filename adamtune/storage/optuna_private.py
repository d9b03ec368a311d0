"""Every use of Optuna's private names, in one place, so an Optuna release that moves one breaks
here and in ``tests/storage/test_optuna_private.py``, not in six modules.

Written against Optuna 5.0 (``WRITTEN_AGAINST``). What each is for:
- a study's storage and a trial's id (``Study._storage``, ``Trial._trial_id``): the stacked
  loop tells trials by id, claims create marker studies in the same storage;
- the optimize loop's flags (``Study._stop_flag``, ``Study._thread_local``): the stacked loop is
  an optimize loop, so ``study.stop()`` from a sampler or callback ends it as it ends
  ``study.optimize``;
- heartbeats (``optuna.storages._heartbeat``): the stacked loop sends them as optimize does, and
  journal storage gets them (Optuna gives them to RDBStorage only);
- RDBStorage's ``*_without_commit`` writes and scoped session: a stack's N reports in one
  transaction (adamtune.storage.writes);
- ``Trial._cached_frozen_trial``: the copy ``should_prune`` reads, kept in step with those writes;
- TPE's group decomposition (``TPESampler._group_decomposed_search_space``,
  ``optuna.search_space.group_decomposed``): folded in trial by trial instead of from every
  trial at every ask (``incremental_groups``).
"""

from __future__ import annotations

import copy
import datetime
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

WRITTEN_AGAINST = "5.0"
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def storage_of(study: optuna.Study) -> Any:
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def cached_trial(trial: optuna.Trial) -> FrozenTrial:
    """The trial's own cached copy, which ``should_prune`` and the pruners read."""
    return trial._cached_frozen_trial


def stop_requested(study: optuna.Study) -> bool:
    return bool(study._stop_flag)


@contextmanager
def optimize_loop(study: optuna.Study, *, fresh: bool = True) -> Iterator[None]:
    """Inside the block this thread runs the study's optimize loop: ``study.stop()`` is allowed
    and ends it (``stop_requested``). ``fresh=False`` joins a loop another thread runs: a stop
    already requested stands."""
    if fresh:
        study._stop_flag = False
    study._thread_local.in_optimize_loop = True
    try:
        yield
    finally:
        study._thread_local.in_optimize_loop = False


def heartbeat_enabled(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return bool(is_heartbeat_enabled(study._storage))


def asked_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters, also for a WAITING trial whose parameters were only enqueued
    (Optuna keeps those in the system attribute ``fixed_params`` until the trial runs)."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})


def fail_stale(study: optuna.Study) -> None:
    """Fail (and retry, as the storage's callback says) the study's trials whose process died:
    silent for 3 heartbeats, or never heard from (see never_beat_and_old). A no-op where the
    storage has no heartbeats."""
    if not heartbeat_enabled(study):
        return
    import warnings

    with warnings.catch_warnings():  # stable since Optuna 2.8; still flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def heartbeat_thread(study: optuna.Study, trial: optuna.Trial) -> Any:
    """Optuna's heartbeat sender for ``trial`` (a no-op one where heartbeats are off): start()
    it when the trial starts, join() it when the trial is told. The first heartbeat is
    recorded here, at once, not when the thread first runs (see first_heartbeat)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    first_heartbeat(study, trial)
    return get_heartbeat_thread(trial._trial_id, study._storage)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Journal storage with heartbeats (adamtune.storage.journal): a running trial's heartbeat
    is a system attribute holding the writer's wall-clock time; one older than 3 heartbeats
    is stale, and Optuna's ``fail_stale_trials`` fails it and calls back."""

    def __init__(
        self, backend: Any, heartbeat: int, on_stale: StaleCallback | None, attr: str
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat
        self.grace_period = 3 * heartbeat
        self.on_stale = on_stale
        self.attr = attr

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, self.attr, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:  # Optuna's hook
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            trial._trial_id
            for trial in running
            if (
                now - float(trial.system_attrs[self.attr]) > self.grace_period
                if self.attr in trial.system_attrs
                else never_beat_and_old(trial.datetime_start, self.grace_period)
            )
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.on_stale


def never_beat_and_old(started: datetime.datetime | None, grace_period: float) -> bool:
    """A RUNNING trial that never sent a heartbeat is stale once it started more than a grace
    period ago: its process died between asking it and the first heartbeat (Optuna ignores
    such a trial, and it would stay RUNNING for good)."""
    if started is None:
        return False
    return (datetime.datetime.now() - started).total_seconds() > grace_period


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, whose stale trials include the RUNNING trials that never sent a
    heartbeat and started more than a grace period ago (see never_beat_and_old)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        if self.heartbeat_interval is None:
            return stale
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import orm

        grace = self.grace_period or 2 * self.heartbeat_interval
        with _create_scoped_session(self.scoped_session, True) as session:
            running = (
                session.query(models.TrialModel)
                .options(orm.selectinload(models.TrialModel.heartbeats))
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(models.TrialModel.study_id == study_id)
                .all()
            )
            silent = [
                t.trial_id
                for t in running
                if not t.heartbeats and never_beat_and_old(t.datetime_start, grace)
            ]
        return stale + [t for t in silent if t not in stale]


def first_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record the trial's first heartbeat now, before anything else can take time: a process
    killed after asking the trial then leaves it stale rather than RUNNING for good."""
    storage = study._storage
    if heartbeat_enabled(study) and isinstance(storage, BaseHeartbeat):
        storage.record_heartbeat(trial._trial_id)


def rdb_backend(trial: optuna.Trial, helper: str) -> Any:
    """The trial's RDBStorage when this Optuna has ``helper`` and the scoped session, else
    None (the caller then writes through the public calls)."""
    storage = trial.storage
    backend = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in a cache
    if not isinstance(backend, optuna.storages.RDBStorage) or not hasattr(backend, helper):
        return None
    try:
        from optuna.storages._rdb.storage import _create_scoped_session  # noqa: F401
    except ImportError:
        return None
    return backend


def set_intermediate_without_commit(
    rdb: Any, session: Any, trial: optuna.Trial, step: int, value: float
) -> None:
    rdb._set_trial_intermediate_value_without_commit(session, trial._trial_id, step, value)


def set_user_attr_without_commit(
    rdb: Any, session: Any, trial: optuna.Trial, key: str, value: Any
) -> None:
    from optuna.storages._rdb import models

    rdb._set_trial_attr_without_commit(
        session, models.TrialUserAttributeModel, trial._trial_id, key, value
    )


@contextmanager
def one_session(rdb: Any) -> Iterator[Any]:
    """One RDBStorage session, committed at the end of the block (rolled back on an error)."""
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        yield session


def replace_trial_reads(storage: Any, get_all_trials: Callable[..., list[FrozenTrial]]) -> Any:
    """Swap ``storage.get_all_trials`` (adamtune.storage.reads serves a sampler's many reads of
    one moment from one); returns the storage's own read."""
    read = storage.get_all_trials
    storage.get_all_trials = get_all_trials
    return read


def incremental_groups(sampler: optuna.samplers.BaseSampler) -> None:
    """Make a ``TPESampler(group=True)`` fold each finished trial into its group decomposition
    once, instead of every finished trial at every ask (about 25 ms an ask at 1,000 trials).

    Optuna's decomposition keeps its groups between asks and re-adds every trial's
    distributions; adding a trial's a second time changes nothing (a set of names splits
    groups by intersection, and a name keeps the distribution it was first seen with), so
    adding only the trials not yet added gives the same groups, and the same samples. A
    sampler without a group decomposition (another sampler, ``group=False``) is left alone."""
    inner = getattr(sampler, "_group_decomposed_search_space", None)
    if type(inner) is _GroupDecomposedSearchSpace:
        sampler._group_decomposed_search_space = _IncrementalGroups(inner._include_pruned)  # type: ignore[attr-defined]


class _IncrementalGroups(_GroupDecomposedSearchSpace):
    """Optuna's group decomposition, each finished trial folded in once."""

    def __init__(self, include_pruned: bool = False) -> None:
        super().__init__(include_pruned)
        self._added: set[int] = set()  # numbers of the trials folded in

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> _SearchSpaceGroup:
        if self._study_id is None:
            self._study_id = study._study_id
        elif self._study_id != study._study_id:
            raise ValueError("a group decomposition serves one study")
        states = (
            (TrialState.COMPLETE, TrialState.PRUNED)
            if self._include_pruned
            else (TrialState.COMPLETE,)
        )
        for trial in study._get_trials(deepcopy=False, states=states, use_cache=use_cache):
            if trial.number not in self._added:
                self._added.add(trial.number)
                self._search_space.add_distributions(trial.distributions)
        return copy.deepcopy(self._search_space)
