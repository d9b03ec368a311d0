"""Check an MLflow tracking URI before a study starts, in seconds, without importing MLflow.

A server that does not answer, a SQLite store that is not a database, that is Optuna's study
storage, or that lies in a missing directory would otherwise show up as minutes of MLflow's
retries after the last trial. Each is one TrackingError line here instead.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from adamtune._util.urls import redact, scrub, sqlite_path, unencoded_userinfo
from adamtune.errors import TrackingError, describe, one_line, safe_str

CONNECT_SECONDS = 3.0
OPTUNA_TABLES = {"studies", "trials", "version_info"}
# Stores MLflow's client can write to (a scheme may carry a driver: postgresql+psycopg).
SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
SQL_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_tracking_uri(uri: str, storage_url: str | None = None, *, writing: bool = True) -> None:
    """Raise TrackingError when ``uri`` cannot be an MLflow store for this study (``writing``:
    a search logs to it; the UI only reads it)."""
    where = f"--tracking-uri {redact(uri)!r}"
    if unencoded_userinfo(uri):
        raise TrackingError(
            f"{where}: the user name or password holds a raw '@' or '/'; percent-encode it "
            "('@' is %40, '/' is %2F)"
        )
    scheme = uri.partition(":")[0].split("+")[0].lower() if "://" in uri else ""
    if scheme and scheme not in SCHEMES:
        raise TrackingError(
            f"{where}: MLflow cannot store runs at a {scheme!r} URI; expected one of "
            "sqlite:///FILE, http(s)://HOST:PORT, postgresql://..., mysql://..., file:///DIR"
        )
    if scheme in ("http", "https"):
        _check_server(uri, where)
    elif scheme == "sqlite":
        _check_sqlite(uri, where, storage_url)
        if writing:
            _check_artifact_root(where)
    elif scheme in SQL_PORTS:
        _check_port(uri, where, SQL_PORTS[scheme])
        if scheme in ("postgresql", "mysql"):
            _check_login(uri, where, scheme)
        if writing:
            _check_artifact_root(where)
    elif scheme in ("", "file"):
        _check_file_store(uri, where)


def _writable_dir(path: Path) -> str | None:
    """Why runs cannot be written under ``path`` (made if missing), or None."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{str(existing)!r} is not writable"
    if str(existing.resolve()).startswith(("/proc", "/sys")):
        return f"{str(existing)!r} is a kernel file system"
    return None


def _check_file_store(uri: str, where: str) -> None:
    """A plain path or file:// URI: MLflow's file store. MLflow 3 refuses to open one unless
    MLFLOW_ALLOW_FILE_STORE is set (it is in maintenance mode), and it must be writable."""
    from importlib.metadata import PackageNotFoundError, version
    from urllib.parse import unquote, urlsplit

    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true", "yes")
    try:
        major = int(version("mlflow").split(".")[0])
    except (PackageNotFoundError, ValueError):
        major = 3
    if major >= 3 and not allowed:
        raise TrackingError(
            f"{where}: a directory is MLflow's file store, which MLflow {major} no longer opens "
            "(set MLFLOW_ALLOW_FILE_STORE=true to use it anyway); use a database, e.g. "
            "sqlite:///mlflow.db"
        )
    path = Path(unquote(urlsplit(uri).path) if uri.startswith("file:") else uri)
    why = _writable_dir(path.expanduser())
    if why is not None:
        raise TrackingError(f"{where}: cannot write runs there: {why}")


def _check_artifact_root(where: str) -> None:
    """A SQL store keeps runs' artifacts (the summary's plots, the exported config) under
    ./mlruns by default: a directory that cannot be written is found now, not after the study."""
    why = _writable_dir(Path("mlruns").absolute())
    if why is not None:
        raise TrackingError(
            f"{where}: MLflow writes artifacts under ./mlruns, and {why}; run from a writable "
            "directory, or pass --no-tracking"
        )


def _check_login(uri: str, where: str, scheme: str) -> None:
    """Log in to the database server, bounded in time: a database that does not exist, or a
    login refused, would otherwise cost minutes of MLflow's retries after the last trial."""
    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover  (optuna depends on sqlalchemy)
        return
    timeout = {"connect_timeout": int(CONNECT_SECONDS)}
    try:
        engine = sqlalchemy.create_engine(
            uri, connect_args=timeout, poolclass=sqlalchemy.pool.NullPool
        )
        with engine.connect():
            pass
    except ImportError as exc:
        raise TrackingError(f"{where}: the {scheme} driver is missing ({describe(exc)})") from None
    except Exception as exc:
        text = safe_str(getattr(exc, "orig", None) or exc).strip().splitlines()
        first = one_line(text[0] if text else type(exc).__name__, 200)
        raise TrackingError(
            f"{where}: cannot log in to the database: {scrub(first, [uri])}; create it, fix the "
            "URI, or pass --no-tracking"
        ) from None


def _check_server(uri: str, where: str) -> None:
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri.rstrip("/"))
    netloc = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(
        urlunsplit((parts.scheme, netloc, parts.path + "/health", "", "")), method="GET"
    )
    if parts.username is not None:  # urllib takes no user in the URL: send it as MLflow does
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=CONNECT_SECONDS):
            return
    except urllib.error.HTTPError:
        return  # something answers; MLflow says more at the first request if it is not MLflow
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        text = describe(reason) if isinstance(reason, BaseException) else str(reason)
        raise TrackingError(
            f"{where}: no MLflow server answers within {CONNECT_SECONDS:g} s ({text}); "
            "start it, or pass --no-tracking"
        ) from None


def _check_port(uri: str, where: str, default_port: int) -> None:
    """A database server behind the URI accepts connections (a TCP connect, no login)."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port or default_port
    except ValueError:
        raise TrackingError(f"{where}: not a valid URI") from None
    if not host:
        return  # a local socket: the driver says more
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise TrackingError(
            f"{where}: no database answers at {host}:{port} within {CONNECT_SECONDS:g} s "
            f"({describe(exc)}); start it, or pass --no-tracking"
        ) from None


def _check_sqlite(uri: str, where: str, storage_url: str | None) -> None:
    path = sqlite_path(uri)
    if path is None:
        raise TrackingError(
            f"{where}: an in-memory SQLite store keeps nothing; give a file, e.g. sqlite:///mlflow.db"
        )
    if storage_url is not None:
        storage_path = sqlite_path(storage_url)
        if storage_path is not None and _same_file(path, storage_path):
            raise TrackingError(
                f"{where}: is the study's own storage; MLflow needs a file of its own, "
                "e.g. sqlite:///mlflow.db"
            )
    if not path.exists():
        if not path.parent.is_dir():
            raise TrackingError(f"{where}: directory {str(path.parent)!r} does not exist")
        _check_free_space(path.parent, where)
        return
    if not path.is_file():
        raise TrackingError(f"{where}: {str(path)!r} is not a regular file")
    _check_free_space(path.parent, where)
    from adamtune.storage.store import sqlite_tables

    try:
        tables = sqlite_tables(path)
    except sqlite3.DatabaseError as exc:
        raise TrackingError(
            f"{where}: {str(path)!r} is not a readable SQLite database ({describe(exc)})"
        ) from None
    if tables >= OPTUNA_TABLES:
        raise TrackingError(
            f"{where}: {str(path)!r} is an Optuna study storage, not an MLflow store; "
            "use another file, e.g. sqlite:///mlflow.db"
        )
    if not os.access(path, os.W_OK):
        raise TrackingError(f"{where}: {str(path)!r} is read-only")


MIN_FREE_BYTES = 1 << 20  # less than this left on a store's disk: the first runs would fail


def _check_free_space(folder: os.PathLike[str], where: str) -> None:
    """A store on a full disk is refused before any trial: MLflow would fail at its first
    write (the read-only fallback that reads such a store cannot tell)."""
    try:
        found = os.statvfs(folder)
    except OSError:
        return  # not a POSIX file system we can ask: MLflow will say it if it fails
    free = found.f_bavail * found.f_frsize
    if free < MIN_FREE_BYTES:
        raise TrackingError(
            f"{where}: the disk holding {str(folder)!r} is full ({free} bytes free); free some "
            "space, log elsewhere, or pass --no-tracking"
        )


def _same_file(a: os.PathLike[str], b: os.PathLike[str]) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)
