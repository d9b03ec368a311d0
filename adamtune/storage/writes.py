"""Many small writes to an Optuna study in one storage transaction.

Optuna commits every ``Trial.report`` and every ``Trial.set_user_attr`` on its own: on SQLite
or PostgreSQL a transaction each (about 1.2 ms on SQLite here). A stack of N trials reports N
values every epoch, so those writes go in one transaction where the storage is a database and
this Optuna release has RDBStorage's ``*_without_commit`` helpers (Optuna 5 has them), and one
public call each anywhere else (journal files, in memory, other releases). Either way each
trial's own cached copy is updated as the public calls would update it, so ``should_prune``
and the pruners see the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna

from adamtune.storage.optuna_private import (
    cached_trial,
    one_session,
    rdb_backend,
    set_intermediate_without_commit,
    set_user_attr_without_commit,
    trial_id,
)

Write = Callable[[Any], None]  # one write inside an open SQLAlchemy session


def report_all(reports: Sequence[tuple[optuna.Trial, float, int]]) -> None:
    """``trial.report(value, step)`` for every (trial, value, step); a step a trial already
    reported is skipped, as Trial.report skips it."""
    pending = []
    for trial, value, step in reports:
        value, step = float(value), int(step)
        if step < 0:
            raise ValueError(f"report step must be >= 0, got {step}")
        if step not in cached_trial(trial).intermediate_values:
            pending.append((trial, value, step))
    if not pending:
        return
    rdb = rdb_backend(pending[0][0], "_set_trial_intermediate_value_without_commit")

    def write(trial: optuna.Trial, value: float, step: int) -> Write:
        return lambda session: set_intermediate_without_commit(rdb, session, trial, step, value)

    if rdb is None or not _in_one_transaction(rdb, [write(*p) for p in pending]):
        for trial, value, step in pending:
            trial.storage.set_trial_intermediate_value(trial_id(trial), step, value)
    for trial, value, step in pending:
        cached_trial(trial).intermediate_values[step] = value


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr(key, value)`` for every item, in one transaction where possible."""
    if not attrs:
        return
    rdb = rdb_backend(trial, "_set_trial_attr_without_commit")

    def write(key: str, value: Any) -> Write:
        return lambda session: set_user_attr_without_commit(rdb, session, trial, key, value)

    if rdb is None or not _in_one_transaction(rdb, [write(k, v) for k, v in attrs.items()]):
        for key, value in attrs.items():
            trial.storage.set_trial_user_attr(trial_id(trial), key, value)
    cached_trial(trial).user_attrs.update(attrs)


def _in_one_transaction(rdb: Any, writes: list[Write]) -> bool:
    """Run ``writes`` in one session and commit; False (nothing written) when the database
    refused the batch on a key conflict, so the caller writes one by one as Optuna would."""
    import sqlalchemy.exc

    try:
        with one_session(rdb) as session:
            for write in writes:
                write(session)
    except sqlalchemy.exc.IntegrityError:
        return False
    return True
