"""The tracking worker process: ``python -m adamtune.tracking.worker [SCHEME]``.

SCHEME is the tracking URI's scheme (``sqlite``, ``http``, ...): it says which MLflow store to
load ahead, while the search process still sets up. Then the worker reads one JSON job per
line on stdin ({"op": method name, ...arguments}) and runs it on an MlflowSink, in order. At
end of input (a clean close, or the search process dying) it closes every run still open as
KILLED and prints {"errors": [...]} on stdout. A failing job is recorded and the rest go on:
tracking must never take a study down with it. ADAMTUNE_TRACKING_TRACE=1 prints on stderr when
the worker is ready, and each job's start time and duration.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from typing import Any

from adamtune.tracking.sink import MlflowSink

OPS = (
    "start_study",
    "start_trial",
    "end_trial",
    "log_run",
    "stale_trial",
    "end_study",
    "close_session",
)
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy store


def _preload_store(scheme: str) -> None:
    """Import the MLflow store module that the tracking URI's scheme needs, which MLflow
    imports only when the first client connects: for a SQL store, SQLAlchemy's ORM and
    Alembic (benchmarks/results/tracking_overhead_cpu.md has the per-phase split)."""
    if scheme.split("+")[0] in SQL_SCHEMES:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def _warm_up_summary() -> None:
    """Load what the summary plots need: optuna.importance, matplotlib, its font cache, and the
    text-layout caches that the first log axis, legend and bar chart fill (about a second of
    CPU). Done before the first job: the search process is still importing torch and loading
    data then, which leaves this process a second or two it would otherwise spend waiting."""
    import io

    import optuna.importance  # noqa: F401

    from adamtune.tracking.plots import warm_up_figure

    warm_up_figure().savefig(io.BytesIO(), format="png")


_SQLITE_CONNECTIONS: list[Any] = []  # every SQLite connection this process opened


def _sqlite_without_fsync_per_commit() -> None:
    """WAL + synchronous=NORMAL for every SQLite database this process opens (MLflow's store).

    By default SQLite fsyncs on every commit; on ext4 those flushes stall the search process's
    own storage writes, and cost a quarter of a default study's wall time here. Committed runs
    still survive a crash or kill (only a power cut can drop the last commits). This process is
    the tracking worker alone, so the class-wide listener touches nothing else.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from adamtune.storage.store import write_ahead_log

    @event.listens_for(Engine, "connect")
    def _pragmas(connection, _record):  # type: ignore[no-untyped-def]
        if type(connection).__module__.startswith("sqlite3"):
            write_ahead_log(connection)
            _SQLITE_CONNECTIONS.append(connection)


def _close_sqlite() -> None:
    """Close every SQLite connection, which os._exit would skip: the last one to close a
    database folds its write-ahead log back in and deletes it, so an MLflow store stays the one
    file users copy and share (with a -wal file beside it, a copy would lack the latest runs)."""
    for connection in _SQLITE_CONNECTIONS:
        with contextlib.suppress(Exception):
            connection.close()


_URL_KEYS = ("tracking_uri", "storage_url")  # the jobs' fields that hold a URL (a password)


def _learn_secrets(job: dict[str, Any], urls: list[str], secrets: list[str]) -> None:
    """Add the passwords of the URLs in ``job`` to ``secrets`` (the scrubbing stream's list)."""
    from adamtune._util.urls import secrets_in

    for key in _URL_KEYS:
        if isinstance(job.get(key), str) and job[key] not in urls:
            urls.append(job[key])
    secrets[:] = secrets_in(urls)


def _scrubbed(value: Any, secrets: list[str]) -> Any:
    """``value`` (a job's payload) with every secret in its strings replaced by ***: nothing
    logged to MLflow (a trial's failure reason, a setting) carries a password."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, list):
        return [_scrubbed(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: v if k in _URL_KEYS else _scrubbed(v, secrets) for k, v in value.items()}
    return value


def _say_failing(tracking_uri: str | None, error: str) -> None:
    from adamtune._util.urls import redact
    from adamtune.errors import one_line

    where = f" at {redact(tracking_uri)}" if tracking_uri else ""
    text = one_line(error, 300)  # stderr scrubs every known password
    print(
        f"Warning: MLflow tracking{where} failed: {text}. The search goes on; runs it could "
        "not log are missing from MLflow.",
        file=sys.stderr,
        flush=True,
    )


def main(store_scheme: str = "") -> None:
    # stdout is the status channel to the search process; MLflow prints "View run ... at" lines
    # on stdout when runs end, which would corrupt it, and raise BrokenPipeError (leaving runs
    # open) once the search process is gone. Keep the channel, send everything else to null.
    status = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the whole life of the process)
    # Whatever reaches stderr (our warnings, MLflow's log lines and tracebacks) is scrubbed of
    # the passwords of every URL a job names, from the moment the first job names it.
    from adamtune._util.urls import ScrubbedStream

    urls: list[str] = []
    secrets: list[str] = []
    sys.stderr = ScrubbedStream(sys.stderr, secrets)  # type: ignore[assignment]
    # MLflow logs its failures (with tracebacks) itself; this worker reports each failure in
    # one line (_say_failing, and the count at the end), so its own logging stays quiet.
    import logging

    logging.getLogger("mlflow").setLevel(logging.CRITICAL)
    # Bookkeeping yields to training: a lower priority, and one thread at a time (the warm-up
    # runs after the study's run is made, not beside the mlflow import).
    os.nice(10)
    # optuna.importance imports scikit-learn's forests for fANOVA whenever they can be found
    # (seconds of CPU, taken from training on a small machine); the summary ranks parameters with
    # PED-ANOVA, which needs none of it.
    sys.modules.setdefault("sklearn.ensemble", None)  # type: ignore[arg-type]
    _sqlite_without_fsync_per_commit()
    # Launched ahead of the study: load MLflow, its store and the plotting stack
    # while the search process sets up, instead of beside its first trials.
    from mlflow import MlflowClient  # noqa: F401

    _preload_store(store_scheme)
    _warm_up_summary()
    trace = os.environ.get("ADAMTUNE_TRACKING_TRACE") == "1"  # op timings, for diagnosis
    if trace:
        print(f"adamtune-tracking ready at {time.time():.2f}", file=sys.stderr, flush=True)
    sink = MlflowSink()
    warm = False
    errors: list[str] = []
    for line in sys.stdin:
        try:
            job = json.loads(line)
        except ValueError:  # a torn last line: the search process died while writing it
            errors.append("the search process stopped in the middle of a message")
            break
        _learn_secrets(job, urls, secrets)
        job = _scrubbed(job, secrets)
        op = job.pop("op")
        started = time.time()
        try:
            if op not in OPS:
                raise ValueError(f"unknown op {op!r}")
            getattr(sink, op)(**job)
            if not warm and sink.client is not None:
                sink.prepare_summary()
                # A full collection over MLflow, SQLAlchemy and matplotlib takes a noticeable pause
                # and came up in the middle of the summary; this process never unloads them.
                gc.freeze()
                warm = True
            if trace:
                print(
                    f"adamtune-tracking {op} {job.get('number', '')} at {started:.2f}: "
                    f"{time.time() - started:.3f} s",
                    file=sys.stderr,
                    flush=True,
                )
        except Exception as exc:
            errors.append(
                _scrubbed(
                    f"{op}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                    secrets,
                )
            )
            if len(errors) == 1:  # said now, while the search runs, not only in a count at the end
                _say_failing(urls[0] if urls else None, errors[0])
    if sink.client is not None:
        try:
            sink.kill_open_runs()
        except Exception as exc:
            errors.append(_scrubbed(f"closing runs: {type(exc).__name__}: {exc}", secrets))
    _close_sqlite()
    try:
        status.write(json.dumps({"errors": errors}) + "\n")
        status.flush()
    except BrokenPipeError:
        pass  # the search process is gone (killed); its runs are closed all the same


if __name__ == "__main__":
    main(*sys.argv[1:2])  # the tracking URI's scheme (not the URI: it may hold a password)
    # Everything is committed and reported; tearing down an interpreter holding mlflow,
    # matplotlib and optuna takes about a second that the search would spend waiting.
    os._exit(0)
