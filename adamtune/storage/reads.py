"""One read of a study's trials for everything a sampler or a pruner asks in one go.

Optuna's TPE sampler with its constant liar (on by default in Optuna 5) reads every trial of
the study, RUNNING ones included, from storage at each ``suggest_*`` call and again for its
relative search space: five or six reads to sample one trial, each about 9 ms on SQLite with a
stack's 16 trials running. Inside ``one_read_of_trials(study)`` the first read is kept and the
others are served from it, as Optuna itself does for the samplers without a constant liar (its
per-trial cache): the snapshot is taken when this trial's sampling starts, so it holds every
trial running at that moment. The same serves a stack's pruning, every row judged against one
read. Per thread: other threads (``--n-jobs``) read storage as before.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Container, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.storage.optuna_private import replace_trial_reads, storage_of

_local = threading.local()
_MARK = "_adamtune_one_read"


@contextmanager
def one_read_of_trials(study: optuna.Study) -> Iterator[None]:
    """Within the block, this thread reads the study's trials from storage once; a block
    inside another shares the outer one's read."""
    storage = storage_of(study)
    if not getattr(storage, _MARK, False):
        _serve_from_snapshot(storage)
    outer = getattr(_local, "snapshots", None)
    if outer is not None:
        yield
        return
    _local.snapshots = {}
    try:
        yield
    finally:
        _local.snapshots = None


def _serve_from_snapshot(storage: Any) -> None:
    """Make ``storage.get_all_trials`` answer from this thread's snapshot while it has one."""

    def get_all_trials(
        study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        snapshots = getattr(_local, "snapshots", None)
        if snapshots is None:
            return read(study_id, deepcopy=deepcopy, states=states)
        if study_id not in snapshots:
            snapshots[study_id] = read(study_id, deepcopy=False)
        trials = [t for t in snapshots[study_id] if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    read = replace_trial_reads(storage, get_all_trials)
    setattr(storage, _MARK, True)
