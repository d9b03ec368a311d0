"""Optuna's journal file storage with heartbeats, so a killed worker's trial is failed and
retried on ``journal:`` storage as it is on a database.

Optuna gives heartbeats to RDBStorage only; a trial whose process died stays RUNNING in a
journal forever. Here a running trial's heartbeat is a trial system attribute holding the
writer's wall-clock time, written every ``heartbeat`` seconds by Optuna's own heartbeat thread;
a running trial whose last heartbeat is older than 3 heartbeats is stale, and Optuna's own
``fail_stale_trials`` (called before each new trial) fails it and calls back. As with
RDBStorage, a trial that never sent a heartbeat (heartbeats off) is never judged stale. Clocks
of the machines sharing a journal must agree to well within the grace period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "adamtune:heartbeat"
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    def __init__(self, backend: Any, heartbeat: int, on_stale: StaleCallback | None) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat
        self.grace_period = 3 * heartbeat
        self.on_stale = on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [
            trial._trial_id
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if HEARTBEAT_ATTR in trial.system_attrs
            and now - float(trial.system_attrs[HEARTBEAT_ATTR]) > self.grace_period
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.on_stale


def open_journal(path: str, heartbeat: int, on_stale: StaleCallback | None) -> JournalStorage:
    """The journal at ``path``; with ``heartbeat`` > 0, one whose dead trials are failed."""
    backend = JournalFileBackend(path)
    if heartbeat:
        return HeartbeatJournalStorage(backend, heartbeat, on_stale)
    return JournalStorage(backend)
