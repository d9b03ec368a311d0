"""Optuna storage from a URL, with errors that name the host and never the password.

Accepted: any SQLAlchemy URL Optuna's RDBStorage takes (``sqlite:///adamtune.db``,
``postgresql://user:pw@host/db``, ``mysql+pymysql://...``), ``journal:PATH`` for Optuna's
journal file storage (several processes on one machine or a shared file system) and
``grpc://HOST:PORT`` for Optuna's gRPC storage proxy in front of a database.

Every way a storage can be wrong is answered here, before a study is touched: an in-memory or
missing SQLite file, a file that is MLflow's store (or not a database at all), a journal that
is not a regular file or holds garbage, a server that refuses. ``read_only=True`` (listing,
showing, exporting) never creates or writes anything.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adamtune._util.urls import journal_path, redact, scrub, sqlite_path, unencoded_userinfo
from adamtune.errors import StorageError, describe, one_line, safe_str

EXAMPLES = (
    "sqlite:///adamtune.db, postgresql://user@host/db, mysql+pymysql://user@host/db, journal:FILE"
)
DRIVERS = {"postgresql": "'psycopg[binary]'", "mysql": "pymysql"}
OPTUNA_TABLES = {"studies", "trials", "version_info"}
MLFLOW_TABLES = {"experiments", "runs", "metrics"}
if TYPE_CHECKING:  # optuna loads only when a storage is opened: the tracking check needs none
    import optuna

SCHEMA_RACE_TRIES = 8  # workers started together on a new database race to create the schema


def describe_host(url: str) -> str:
    """``host:port/database`` of a URL, for messages; the file for sqlite and journal."""
    if url.startswith("journal:"):
        return url.removeprefix("journal:")
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.host or 'localhost'}{port}/{parsed.database or ''}"


def read_only_uri(path: Path) -> str:
    """A SQLite URI that reads ``path`` without writing a byte: ``mode=ro``, or, where even
    that cannot open it (a database in WAL mode on a read-only mount, or in a directory this
    user cannot write, needs its -shm file), ``immutable=1``, which nobody can be changing
    there. Raises sqlite3.DatabaseError when the file is not a database."""
    resolved = path.resolve()
    try:
        uri = f"file:{resolved}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as connection:
            connection.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        return uri
    except sqlite3.OperationalError:
        return f"file:{resolved}?immutable=1"


def sqlite_tables(path: Path) -> set[str]:
    """The table names of the SQLite database at ``path``, read without writing anything;
    raises sqlite3.DatabaseError when the file is not a database."""
    uri = read_only_uri(path)
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {name for (name,) in rows}


def open_storage(
    url: str, *, read_only: bool = False, heartbeat: int = 0, on_stale: Any = None
) -> optuna.storages.BaseStorage:
    """Open (and, unless ``read_only``, create) the storage at ``url``; every problem is one
    StorageError line. ``heartbeat`` seconds (0: off) turn on the dead-trial check: a running
    trial silent for 3 heartbeats is failed and ``on_stale(study, trial)`` is called."""
    try:
        if url.startswith("journal:"):
            return _journal(url, read_only, heartbeat, on_stale)
        if url.startswith("grpc://"):
            return _grpc(url)
        return _rdb(url, read_only, heartbeat, on_stale)
    except StorageError as exc:
        raise StorageError(scrub(str(exc), [url])) from None


def _rdb(url: str, read_only: bool, heartbeat: int, on_stale: Any) -> optuna.storages.RDBStorage:
    backend = _check_url(url)
    if backend == "sqlite":
        _check_sqlite_file(url, read_only)
    options: dict[str, Any] = {}
    if heartbeat and not read_only:
        options = {
            "heartbeat_interval": heartbeat,
            "grace_period": 3 * heartbeat,
            "heartbeat_stale_trial_callback": on_stale,
        }
    if backend == "sqlite":
        options["engine_kwargs"] = {"connect_args": {"timeout": 30}}
        if read_only:
            path = sqlite_path(url)
            assert path is not None  # _check_sqlite_file refused the rest
            options["engine_kwargs"]["creator"] = partial(_connect_read_only, read_only_uri(path))
    storage = _create_rdb(url, options)
    if backend == "sqlite" and not read_only:
        _use_write_ahead_log(storage)
    return storage


def _connect_read_only(uri: str) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)


def _check_url(url: str) -> str:
    """The URL's backend name (sqlite, postgresql, ...), or a StorageError saying what is off."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown_url = redact(url)
    if unencoded_userinfo(url):
        raise StorageError(
            f"--storage {shown_url!r}: the user name or password holds a raw '@' or '/'; "
            "percent-encode it ('@' is %40, '/' is %2F)"
        )
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        parsed.get_dialect()
    except NoSuchModuleError:  # a subclass of ArgumentError: keep it first
        raise StorageError(
            f"--storage {shown_url!r}: unknown database {url.split(':', 1)[0]!r}; "
            f"expected one of {EXAMPLES}"
        ) from None
    except (ArgumentError, ValueError):
        raise StorageError(
            f"--storage {shown_url!r}: not a storage URL (a password with '@', '/' or ':' "
            f"must be percent-encoded); expected one of {EXAMPLES}"
        ) from None
    except ImportError as exc:
        package = DRIVERS.get(backend, "the database driver")
        raise StorageError(
            f"--storage {shown_url!r}: the {backend} driver is missing "
            f"(pip install {package}): {one_line(safe_str(exc))}"
        ) from None
    return backend


def _check_sqlite_file(url: str, read_only: bool) -> None:
    path = sqlite_path(url)
    if path is None:
        raise StorageError(
            f"--storage {url!r}: an in-memory SQLite database keeps nothing after the command; "
            "give a file, e.g. sqlite:///adamtune.db"
        )
    if not path.exists():
        if read_only:
            raise StorageError(f"--storage {url!r}: no such file {str(path)!r}")
        if not path.parent.is_dir():
            raise StorageError(f"--storage {url!r}: directory {str(path.parent)!r} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise StorageError(
                f"--storage {url!r}: cannot create {str(path)!r}: directory is not writable"
            )
        return
    if not path.is_file():
        raise StorageError(f"--storage {url!r}: {str(path)!r} is not a regular file")
    try:
        tables = sqlite_tables(path)
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"--storage {url!r}: {str(path)!r} is not a readable SQLite database "
            f"({one_line(safe_str(exc))})"
        ) from None
    if tables >= MLFLOW_TABLES and not tables >= OPTUNA_TABLES:
        raise StorageError(
            f"--storage {url!r}: {str(path)!r} is an MLflow tracking store, not an Optuna "
            "storage; use another file, e.g. sqlite:///adamtune.db"
        )
    if not read_only and not os.access(path, os.W_OK):
        raise StorageError(f"--storage {url!r}: {str(path)!r} is read-only")


def _create_rdb(url: str, options: dict[str, Any]) -> optuna.storages.RDBStorage:
    """RDBStorage(url), retried while other workers create the same schema at the same moment
    (PostgreSQL then answers 'duplicate key ... pg_type_typname_nsp_index' to all but one)."""
    from adamtune.storage.optuna_private import HeartbeatRDBStorage

    for attempt in range(SCHEMA_RACE_TRIES):
        try:
            return HeartbeatRDBStorage(url, **options)
        except Exception as exc:
            if attempt + 1 < SCHEMA_RACE_TRIES and _is_schema_race(exc):
                time.sleep(0.1 + random.random() * 0.4 * (attempt + 1))
                continue
            raise StorageError(
                f"--storage {redact(url)!r}: cannot open storage at "
                f"{describe_host(url)}: {_first_line(exc)}"
            ) from None
    raise AssertionError("unreachable")


def _is_schema_race(exc: BaseException) -> bool:
    text = safe_str(getattr(exc, "orig", None) or exc).lower()
    return any(
        sign in text
        for sign in ("duplicate key", "already exists", "unique constraint", "deadlock")
    )


def _use_write_ahead_log(storage: optuna.storages.RDBStorage) -> None:
    """SQLite in WAL mode with synchronous=NORMAL: a commit no longer waits for an fsync, which
    cut Optuna's report + should_prune by about a third here. Committed trials still survive a
    crash or kill of the process (only a power cut can drop the last commits), and readers no
    longer block the writer when several threads share the file.

    Every transaction also begins with BEGIN IMMEDIATE. Python's sqlite3 starts a transaction
    only at the first write, so Optuna's claim of a WAITING trial (read: still WAITING? then
    write RUNNING) ran as two steps, and two processes both claimed the same enqueued trial
    (the baseline: "Cannot tell a COMPLETE trial"). Taking the write lock at BEGIN makes each
    of Optuna's sessions one atomic step, as PostgreSQL's SELECT ... FOR UPDATE does."""
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        write_ahead_log(connection)
        connection.isolation_level = None  # transactions are begun below, not by sqlite3

    event.listen(storage.engine, "connect", on_connect)
    event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    storage.engine.dispose()  # the connection made while creating tables predates the listener


def write_ahead_log(connection: Any) -> None:
    """WAL and synchronous=NORMAL on a fresh SQLite DB-API connection (study and MLflow
    stores alike): commits stop waiting for an fsync, committed data still survives a crash."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _grpc(url: str) -> optuna.storages.BaseStorage:
    """Optuna's gRPC storage proxy (for hundreds of workers): grpc://host:port."""
    host, _, port = url.removeprefix("grpc://").rstrip("/").partition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StorageError(
            f"--storage {redact(url)!r}: expected grpc://HOST:PORT, e.g. grpc://db:13000"
        )
    import optuna

    try:
        return optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    except ImportError as exc:
        raise StorageError(
            f"--storage {url!r}: needs grpcio (pip install grpcio protobuf): {one_line(str(exc))}"
        ) from None


def _journal(
    url: str, read_only: bool, heartbeat: int, on_stale: Any
) -> optuna.storages.BaseStorage:
    path = journal_path(url)
    if path is None or not url.removeprefix("journal:").strip():
        raise StorageError("--storage 'journal:': expected journal:FILE, e.g. journal:adamtune.log")
    where = f"--storage {url!r}"
    if path.exists():
        if not path.is_file():
            raise StorageError(f"{where}: {str(path)!r} is not a regular file")
        if not os.access(path, os.R_OK):
            raise StorageError(f"{where}: {str(path)!r} is not readable")
        if not read_only and not os.access(path, os.W_OK):
            raise StorageError(f"{where}: {str(path)!r} is read-only")
        if not _looks_like_a_journal(path):
            raise StorageError(f"{where}: {str(path)!r} is not an Optuna journal file")
    elif read_only:
        raise StorageError(f"{where}: no such file {str(path)!r}")
    elif not path.parent.is_dir():
        raise StorageError(f"{where}: directory {str(path.parent)!r} does not exist")
    from adamtune.storage.journal import mend_torn_tail, open_journal

    if path.exists() and not read_only:
        try:
            torn = mend_torn_tail(path)
        except OSError as exc:
            raise StorageError(
                f"{where}: cannot repair its torn last line: {describe(exc)}"
            ) from None
        if torn:
            print(
                f"Warning: {where}: its last line was torn ({torn} bytes without an end, left by "
                "a crash or a full disk in the middle of a write); removed it, every complete "
                "record is kept.",
                file=sys.stderr,
            )
    try:
        storage = open_journal(str(path), heartbeat, on_stale)
        storage.get_all_studies()  # replays the file now, so garbage is found here
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(f"{where}: not a readable Optuna journal ({_first_line(exc)})") from None
    return storage


def _looks_like_a_journal(path: Path) -> bool:
    """An empty file, or one whose first line is a journal record ({"op_code": ...})."""
    import json

    with path.open("rb") as handle:
        first = handle.readline(1 << 20)
    if not first.strip():
        return not first or path.stat().st_size == len(first)
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def _first_line(exc: BaseException) -> str:
    """The driver's first message line, cleaned of SQLAlchemy's boilerplate."""
    text = safe_str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return one_line(text[0] if text else type(exc).__name__, 200)
