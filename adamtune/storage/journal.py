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

import os
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial

from adamtune.storage.optuna_private import HeartbeatJournalStorage

HEARTBEAT_ATTR = "adamtune:heartbeat"
BLOCK = 1 << 16
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def mend_torn_tail(path: Path) -> int:
    """Cut a torn last line (no newline at its end: a writer died, or the disk filled, in the
    middle of an append) off the journal at ``path``, under the journal's own write lock;
    return how many bytes were cut. Optuna's reader skips such a line, but its writer appends
    after it, which glues the next record onto the torn one and makes the whole journal
    unreadable from then on."""
    if path.stat().st_size == 0 or _ends_with_newline(path):
        return 0
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            end = size
            while end > 0:  # back to the last newline, a block at a time
                start = max(0, end - BLOCK)
                handle.seek(start)
                block = handle.read(end - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    end = start + cut + 1
                    break
                end = start
            if end == size:  # another process finished the line meanwhile
                return 0
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
            return size - end
    finally:
        lock.release()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def open_journal(path: str, heartbeat: int, on_stale: StaleCallback | None) -> JournalStorage:
    """The journal at ``path``; with ``heartbeat`` > 0, one whose dead trials are failed."""
    backend = JournalFileBackend(path)
    if heartbeat:
        return HeartbeatJournalStorage(backend, heartbeat, on_stale, HEARTBEAT_ATTR)
    return JournalStorage(backend)
