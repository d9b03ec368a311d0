"""`adamtune ui`: serve the MLflow UI for a tracking store and point at a study's experiment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable

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
    """The page of the experiment's runs table (MLflow 3's home page is a GenAI overview that
    says nothing of a study), or the UI's root where there is no experiment."""
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else f"http://{host}:{port}"
    return f"{base}/#/experiments/{experiment}/runs" if experiment else base


def newest_experiment(tracking_uri: str) -> tuple[str, str] | None:
    """(id, name) of the most recently created experiment other than MLflow's Default: the
    study `adamtune ui` opens when none is named. None where there is none."""
    import logging

    check_store(tracking_uri)
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        found = MlflowClient(tracking_uri).search_experiments(
            order_by=["creation_time DESC"], max_results=20
        )
    except Exception as exc:
        raise TrackingError(
            f"--tracking-uri {redact(tracking_uri)!r}: cannot read the MLflow store: "
            f"{describe(exc)}"
        ) from None
    studies = [e for e in found if e.name != "Default"]
    return (str(studies[0].experiment_id), studies[0].name) if studies else None


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


def _answers(process: subprocess.Popen[bytes], url: str) -> bool:
    """Wait until ``url`` answers; False when the UI exited first or never answered."""
    import time
    import urllib.request

    deadline = time.monotonic() + STARTUP_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  (our URL)
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the UI the way Ctrl-C does


STARTUP_SECONDS = 120.0  # the UI's first answer can take half a minute on a small machine


def serve(
    tracking_uri: str, host: str, port: int, on_ready: Callable[[], None] = lambda: None
) -> int:
    """Run the MLflow UI in the foreground until it exits, Ctrl-C or SIGTERM; returns its exit
    code. ``on_ready()`` is called once the UI answers (its first answer can take tens of
    seconds). The UI runs in a process group of its own, stopped whole on the way out: `mlflow
    ui` starts uvicorn, which starts workers, and stopping only the first would leave them
    serving."""
    check_port_free(host, port)
    process = subprocess.Popen(ui_command(tracking_uri, host, port), start_new_session=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if _answers(process, f"http://{host}:{port}/health"):
            on_ready()
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
