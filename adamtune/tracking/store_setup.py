"""An MLflow client whose store is created once, however many processes start together.

MLflow creates and migrates a SQL store's schema the first time a client opens it, without a
lock (``SqlAlchemyStore.__init__``). Processes that open a fresh store at the same moment
(separately started workers, ``--workers`` children, a search and its tracking worker) raced
there, and the losers got "table experiments already exists", "duplicate column name",
"_alembic_tmp_experiments already exists" or Alembic's "Online migration expected to match
one row", and then logged nothing for the whole run. Here the first open of a SQL store is
made under an exclusive file lock, one per store (which serialises every process on this
machine), and retried with backoff while the schema is being created elsewhere (processes
on other machines sharing one database server).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from adamtune._util.urls import sqlite_path

SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
TRIES = 10  # with backoff: about 30 s in all before the error stands
SCHEMA_RACE = (
    "already exists",
    "duplicate column",
    "duplicate key",
    "online migration",
    "alembic",
    "unique constraint",
    "deadlock",
    "database is locked",
    "no such table",
    "out-of-date database schema",
)


def open_client(tracking_uri: str, client_class: Any) -> Any:
    """``client_class(tracking_uri)`` (an MlflowClient), its store created once."""
    scheme = tracking_uri.partition(":")[0].split("+")[0].lower()
    if scheme not in SQL_SCHEMES:
        return client_class(tracking_uri)  # a server or a file store creates nothing shared
    with _store_lock(tracking_uri):
        for attempt in range(TRIES):
            try:
                return client_class(tracking_uri)
            except Exception as exc:
                if attempt + 1 == TRIES or not is_schema_race(exc):
                    raise
                time.sleep(min(8.0, 0.2 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def is_schema_race(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(sign in text for sign in SCHEMA_RACE)


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock for the store at ``tracking_uri``: a SQLite file by its real path
    (two spellings of one file share it), another store by its URI."""
    path = sqlite_path(tracking_uri)
    key = str(path.resolve()) if path is not None else tracking_uri
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    lock_path = os.path.join(tempfile.gettempdir(), f"adamtune-mlflow-store-{digest}.lock")
    try:
        handle = open(lock_path, "a")  # noqa: SIM115  (held for the block)
    except OSError:  # no writable temp directory: the retries alone must do
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
