"""MlflowTracker: one experiment per study, a parent run per invocation, a child run per trial.

All MLflow work happens in a separate worker process (adamtune.tracking.worker) fed through a
pipe, so the mlflow import, the store's set-up, per-trial logging and the summary plots run on
another core instead of competing with training for this process's GIL; a background thread
here only writes to the pipe, so training never waits on MLflow. Each trial's per-step metrics
are sent once, when it ends, and logged in batches of at most 1000.

``launch()`` starts the worker ahead of the study (the CLI does so before its own imports), so
that loading MLflow, the store's module and matplotlib (about three seconds of CPU) overlaps the
search's set-up rather than its first trials; ``start_study`` launches it if nobody did.
``close()`` waits for the worker to drain its queue; the worker then closes every run still
open as KILLED. If this process dies (even by SIGKILL), the worker sees its pipe close and does
the same, so no run is left RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from adamtune._util.urls import redact, scrub
from adamtune.errors import one_line
from adamtune.tracking.base import TrialRecord

# The worker is bookkeeping: one thread per numeric library, or its BLAS/OpenMP pools take
# every core and slow training (benchmarks/results/tracking_overhead_cpu.md).
WORKER_ENV = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
}
WORKER_ENV["PYTHONWARNINGS"] = "ignore"  # library chatter would land in the user's terminal
# A server that stops answering mid-study costs seconds, not MLflow's default minutes of retries.
WORKER_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "2"
WORKER_ENV["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "20"
CLEANUP_SECONDS = 60  # a fresh worker closing what a dead one left open


def _enlarge_pipe(stream: Any) -> None:
    """Let the pipe hold ~1 MiB (dozens of trials) instead of 64 KiB: while the worker starts up,
    messages then wait in the kernel, where they survive this process being killed."""
    import fcntl

    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # capped by /proc/sys/fs/pipe-max-size
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)


def _now_ms() -> int:
    return int(time.time() * 1000)


class MlflowTracker:
    def __init__(
        self, tracking_uri: str, experiment: str | None = None, storage_url: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.storage_url = storage_url  # lets the worker read the study for the summary
        self.errors: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._study_started = False  # until then the worker has nothing to log or close
        self._experiment_name: str | None = None
        self.session = uuid.uuid4().hex  # tags this invocation's runs (see sink.close_session)
        self.dead = False  # the worker stopped mid-study: tracking goes on no further

    def launch(self) -> None:
        """Start the worker process now; it loads MLflow while the caller goes on."""
        if self._process is not None:
            return
        self._process = _start_worker(self.tracking_uri)
        _enlarge_pipe(self._process.stdin)
        self._writer = threading.Thread(target=self._write, name="adamtune-mlflow", daemon=True)
        self._writer.start()

    def start_study(self, study_name: str, settings: dict[str, Any], space_text: str) -> None:
        self.launch()
        self._study_started = True
        self._experiment_name = self.experiment or study_name
        self._send(
            "start_study",
            tracking_uri=self.tracking_uri,
            experiment=self.experiment,
            study_name=study_name,
            settings=settings,
            space_text=space_text,
            storage_url=self.storage_url,
            started_ms=_now_ms(),
            session=self.session,
        )

    def start_trial(self, number: int) -> None:
        self._send("start_trial", number=number, started_ms=_now_ms())

    def end_trial(self, record: TrialRecord) -> None:
        self._send("end_trial", **_record_payload(record))

    def log_run(self, name: str, record: TrialRecord) -> None:
        started = _now_ms() if record.started is None else int(record.started * 1000)
        self._send("log_run", name=name, started_ms=started, **_record_payload(record))

    def stale_trial(self, number: int) -> None:
        self._send("stale_trial", number=number, ended_ms=_now_ms())

    def end_study(self, study_name: str, *, interrupted: bool = False) -> None:
        self._send(
            "end_study",
            study_name=study_name,
            interrupted=interrupted,
            ended_ms=_now_ms(),
        )

    def close(self) -> None:
        """Wait until everything is logged and every run is closed; report failures once."""
        if self._process is None:
            return
        self._outbox.put(None)
        assert self._writer is not None
        self._writer.join()
        if not self._study_started:  # e.g. the search refused its input: stop the worker now,
            self._process.kill()  # rather than wait for it to finish loading MLflow
            self._process.wait()
            assert self._process.stdout is not None
            self._process.stdout.close()
            self._process = None
            return
        assert self._process.stdout is not None
        out = self._process.stdout.read()  # the writer closed stdin: the worker is finishing
        self._process.stdout.close()
        self._process.wait()
        for line in out.splitlines():
            if line.startswith("{"):
                self.errors = json.loads(line).get("errors", [])
        if self._process.returncode != 0:
            self.dead = True
            if not self.errors:
                self.errors = [f"tracking worker exited with status {self._process.returncode}"]
        self._process = None
        if self.dead:
            self._close_left_open()
        if self.errors:
            urls = [self.tracking_uri, *([self.storage_url] if self.storage_url else [])]
            first = one_line(scrub(self.errors[0], urls), 300)
            print(
                f"Warning: MLflow tracking at {redact(self.tracking_uri)} failed "
                f"{len(self.errors)} time(s); first: {first}. "
                "The Optuna study is complete regardless.",
                file=sys.stderr,
            )

    def _close_left_open(self) -> None:
        """A fresh worker closes the runs of this invocation that the dead one left RUNNING."""
        if self._experiment_name is None:
            return
        job = {
            "op": "close_session",
            "tracking_uri": self.tracking_uri,
            "experiment": self._experiment_name,
            "session": self.session,
        }
        process = _start_worker(self.tracking_uri)
        try:
            out, _ = process.communicate(json.dumps(job) + "\n", timeout=CLEANUP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            self.errors.append("closing the runs left open took too long")
            return
        for line in out.splitlines():
            if line.startswith("{"):
                self.errors += [f"closing runs: {e}" for e in json.loads(line).get("errors", [])]

    def _send(self, op: str, **payload: Any) -> None:
        if self.dead:
            return
        self._outbox.put(json.dumps({"op": op, **payload}))

    def _write(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        stdin = self._process.stdin
        try:
            while (line := self._outbox.get()) is not None:
                stdin.write(line + "\n")
                stdin.flush()
        except (BrokenPipeError, OSError):
            self.dead = True
            print(
                "Warning: the MLflow logging process stopped; the search goes on untracked, "
                "and the runs it left open are closed at the end.",
                file=sys.stderr,
            )
            while self._outbox.get() is not None:  # drop the rest: nobody reads it
                pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()


def _record_payload(record: TrialRecord) -> dict[str, Any]:
    return {
        "number": record.number,
        "state": record.state,
        "reason": record.reason,
        "params": {k: str(v) for k, v in record.params.items()},
        "value": record.value,
        "learning_rates": record.learning_rates,
        "train_losses": record.train_losses,
        "grad_norms": record.grad_norms,
        "evaluations": [list(e) for e in record.evaluations],
        **({"step_metrics": [list(m) for m in record.step_metrics]} if record.step_metrics else {}),
        **({"final_metrics": record.final_metrics} if record.final_metrics else {}),
        **({"hyperparameters": record.hyperparameters} if record.hyperparameters else {}),
        "ended_ms": _now_ms() if record.ended is None else int(record.ended * 1000),
    }


def _start_worker(tracking_uri: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "adamtune.tracking.worker", urlsplit(tracking_uri).scheme],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C is for the search; the worker closes runs after it
        env={**os.environ, **WORKER_ENV},
    )
