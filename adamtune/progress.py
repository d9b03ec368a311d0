"""Live progress of a study: an Optuna callback that draws one status line per finished trial.

On a terminal it redraws a single bar in place; elsewhere (CI logs, pipes) it prints one line
per trial, so the record survives.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.report import trial_value_text


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
        elapsed = time.perf_counter() - self.started
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        bar = ""
        if self.total:
            filled = round(self.width * min(self.done, self.total) / self.total)
            bar = "[" + "#" * filled + "." * (self.width - filled) + "] "
        try:  # one storage query; Optuna raises ValueError while no trial has completed
            best_trial = study.best_trial
            best = f"best {self.metric_name} {best_trial.value:.4g} (trial {best_trial.number})"
        except ValueError:
            best = "best: none yet"
        last = f"trial {trial.number} {trial_value_text(trial)}"
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        rows = f", {running} running" if running else ""  # a stack's rows, other workers' trials
        return f"{bar}{count} trials{rows} | {best} | {last} | {elapsed:.0f}s"
