"""`adamtune ui`: serve the MLflow UI for a tracking store and point at a study's experiment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from adamtune.errors import AdamtuneError


def experiment_id(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``; a missing store is reported, not created."""
    import logging

    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise AdamtuneError(
                f"no MLflow store at {tracking_uri} (run `adamtune search` with tracking on first)"
            )
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if experiment is None:
        raise AdamtuneError(
            f"no MLflow experiment {name!r} at {tracking_uri} "
            "(run `adamtune search` with tracking on first)"
        )
    return experiment.experiment_id


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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the UI the way Ctrl-C does


def serve(tracking_uri: str, host: str, port: int) -> int:
    """Run the MLflow UI in the foreground until it exits, Ctrl-C or SIGTERM; returns its exit
    code. The UI runs in a process group of its own, stopped whole on the way out: `mlflow ui`
    starts uvicorn, which starts workers, and stopping only the first would leave them serving."""
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
