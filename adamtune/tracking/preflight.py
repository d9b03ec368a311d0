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

from adamtune.errors import TrackingError, describe
from adamtune.urls import redact, sqlite_path, unencoded_userinfo

CONNECT_SECONDS = 3.0
OPTUNA_TABLES = {"studies", "trials", "version_info"}


def check_tracking_uri(uri: str, storage_url: str | None = None) -> None:
    """Raise TrackingError when ``uri`` cannot be an MLflow store for this study."""
    where = f"--tracking-uri {redact(uri)!r}"
    if unencoded_userinfo(uri):
        raise TrackingError(
            f"{where}: the user name or password holds a raw '@' or '/'; percent-encode it "
            "('@' is %40, '/' is %2F)"
        )
    if uri.startswith(("http://", "https://")):
        _check_server(uri, where)
    elif uri.startswith("sqlite:"):
        _check_sqlite(uri, where, storage_url)


def _check_server(uri: str, where: str) -> None:
    request = urllib.request.Request(uri.rstrip("/") + "/health", method="GET")
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
        return
    if not path.is_file():
        raise TrackingError(f"{where}: {str(path)!r} is not a regular file")
    from adamtune.storage import sqlite_tables

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


def _same_file(a: os.PathLike[str], b: os.PathLike[str]) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)
