"""`adamtune ui`: serve the MLflow UI for a tracking store and point at a study's experiment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from adamtune._util.urls import redact, sqlite_path
from adamtune.errors import AdamtuneError, TrackingError, describe, shown
from adamtune.tracking.preflight import check_tracking_uri


def check_store(tracking_uri: str) -> None:
    """Refuse, in seconds, a store the UI cannot serve: a missing SQLite file (which `mlflow ui`
    would create empty), a file that is not MLflow's, a server that does not answer."""
    path = sqlite_path(tracking_uri)
    if tracking_uri.startswith("sqlite:") and (path is None or not path.is_file()):
        raise AdamtuneError(
            f"no MLflow store at {redact(tracking_uri)} (run `adamtune search` with tracking on "
            "first)"
        )
    check_tracking_uri(tracking_uri, writing=False)


def experiment_id(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``; a missing store is reported, not created."""
    import logging

    check_store(tracking_uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    except Exception as exc:
        raise TrackingError(
            f"--tracking-uri {redact(tracking_uri)!r}: cannot read the MLflow store: "
            f"{describe(exc)}"
        ) from None
    if experiment is None:
        raise AdamtuneError(
            f"no MLflow experiment {shown(name)} at {redact(tracking_uri)} "
            "(run `adamtune search` with tracking on first)"
        )
    return str(experiment.experiment_id)


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ui_url(tracking_uri: str, host: str, port: int, experiment: str | None) -> str:
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else f"http://{host}:{port}"
    return f"{base}/#/experiments/{experiment}" if experiment else base


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The `mlflow ui` command serving ``tracking_uri``, from this Python environment."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
    ]


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on: `mlflow ui` would log the failure to bind
    and exit 0, as if it had served."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        raise AdamtuneError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "pass another --port"
        ) from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the UI the way Ctrl-C does


def serve(tracking_uri: str, host: str, port: int) -> int:
    """Run the MLflow UI in the foreground until it exits, Ctrl-C or SIGTERM; returns its exit
    code. The UI runs in a process group of its own, stopped whole on the way out: `mlflow ui`
    starts uvicorn, which starts workers, and stopping only the first would leave them serving."""
    check_port_free(host, port)
    process = subprocess.Popen(ui_command(tracking_uri, host, port), start_new_session=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
