"""Live progress of a study: an Optuna callback that draws one status line per finished trial.

On a terminal it redraws a single bar in place; elsewhere (CI logs, pipes) it prints one line
per trial, so the record survives. The study's best trial and running count are read from
storage at most once a second (a stack finishes many trials within milliseconds) and for the
last trial; in between, the trials this process finishes update the best and the count.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.report import trial_value_text

READ_EVERY = 1.0  # seconds between reads of the study (best trial, running count)


class Progress:
    """Callback for ``study.optimize``: trials done, trials running (a stack's rows, other
    workers' trials), best value so far and its trial."""

    def __init__(
        self,
        total: int | None,
        metric_name: str,
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        width: int = 24,
    ) -> None:
        self.total = total
        self.metric_name = metric_name
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.width = width
        self.done = 0
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._best: FrozenTrial | None = None
        self._running = 0
        self._read_at: float | None = None  # when the study was last read

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            self.done += 1
            line = self._line(study, trial)
            if self.live:
                self.stream.write("\r\033[K" + line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live and self.done:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, study: optuna.Study, trial: FrozenTrial) -> str:
        now = time.perf_counter()
        final = self.total is not None and self.done >= self.total
        if final or self._read_at is None or now - self._read_at >= READ_EVERY:
            self._read(study)
            self._read_at = now
        else:  # this trial was running at the last read (or started since: then it evens out)
            self._running = max(0, self._running - 1)
        self._consider(study, trial)
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        bar = ""
        if self.total:
            filled = round(self.width * min(self.done, self.total) / self.total)
            bar = "[" + "#" * filled + "." * (self.width - filled) + "] "
        best = "best: none yet"
        if self._best is not None:
            value, number = self._best.value, self._best.number
            best = f"best {self.metric_name} {value:.4g} (trial {number})"
        last = f"trial {trial.number} {trial_value_text(trial)}"
        rows = f", {self._running} running" if self._running else ""  # stack rows, workers
        return f"{bar}{count} trials{rows} | {best} | {last} | {now - self.started:.0f}s"

    def _read(self, study: optuna.Study) -> None:
        """The study's best trial and running count, from storage (other workers' trials
        included)."""
        try:  # Optuna raises ValueError while no trial has completed
            self._best = study.best_trial
        except ValueError:
            self._best = None
        self._running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _consider(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """This process's finished trial, between reads of the study."""
        if trial.state != TrialState.COMPLETE or trial.value is None:
            return
        best = self._best
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        if (
            best is None
            or best.value is None
            or (trial.value > best.value if maximize else trial.value < best.value)
        ):
            self._best = trial
