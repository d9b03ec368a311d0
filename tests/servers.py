"""Helpers that start real servers for tests (MLflow, the adamtune UI)."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture
def serve():
    """Start a server command, wait until ``url`` answers, stop it afterwards."""
    processes = []

    def start(command: list[str], url: str, cwd: Path) -> subprocess.Popen:
        # Its own process group: `mlflow server` runs uvicorn, which runs workers, and stopping
        # the first process alone leaves the others running (and holding memory) for good.
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        processes.append(process)
        wait_for_http(url, process)
        return process

    yield start
    for process in processes:
        stop_group(process)
        process.stdout.close()


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process's whole group, then SIGKILL whatever is left after 20 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of a clean exit
            return
        except subprocess.TimeoutExpired:
            continue


MLFLOW = [sys.executable, "-m", "mlflow"]
MLFLOW_SERVER_WORKERS = ["--workers", "1"]  # uvicorn's default is 4 processes per server


def tracking_workers(parent: int) -> list[int]:
    """The pids of the MLflow logging processes whose parent is ``parent``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"adamtune.tracking.worker" in cmdline and ppid == parent:
            found.append(int(proc.name))
    return found
