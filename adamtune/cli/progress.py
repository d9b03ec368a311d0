"""Live progress of a study: an Optuna callback that draws one status line per finished trial,
and ``epoch`` for the evaluations of trials still running.

On a terminal it redraws a single bar in place, which also shows where the running trials are
(epoch of how many, and the time their remaining epochs will take at their pace so far). A
stack's epoch arrives as one call, ``stack``, for all its rows: the line then shows the rows,
their epoch, the best row so far and the time left.
Elsewhere (CI logs, pipes) it prints one line per trial, so the record survives, and for long
trials at most one line per evaluation, and none within EPOCH_LINE_EVERY seconds of the last. The study's best trial and running count are read from
storage at most once a second (a stack finishes many trials within milliseconds) and for the
last trial; in between, the trials this process finishes update the best and the count.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.results.report import trial_value_text

READ_EVERY = 1.0  # seconds between reads of the study (best trial, running count)
EPOCH_LINE_EVERY = 5.0  # seconds between a log's lines about running trials
REDRAW_EVERY = 0.1  # seconds between a terminal's redraws for running trials


def _seconds(value: float) -> str:
    return "<1s" if value < 1 else f"~{value:.0f}s"


@dataclass
class _Running:
    """Where one running trial is: its latest epoch, and its pace since it was first seen."""

    epoch: int
    epochs: int
    first_seen: float
    first_epoch: int
    at: float
    value: float | None = None  # its metric at its latest epoch

    def seconds_left(self) -> float | None:
        done = self.epoch - self.first_epoch
        if done <= 0:
            return None
        return (self.at - self.first_seen) / done * (self.epochs - self.epoch)


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
        maximize: bool = True,  # for a stack's best row
    ) -> None:
        self.total = total
        self.metric_name = metric_name
        self.maximize = maximize
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.width = width
        self.done = 0
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._best: FrozenTrial | None = None
        self._running = 0
        self._read_at: float | None = None  # when the study was last read
        self._trials: dict[int, _Running] = {}  # running trials this process trains
        self._line_text = ""  # the last status line drawn
        self._epoch_line_at = -float("inf")  # when running trials were last drawn or printed
        self._confirm_started: float | None = None  # when confirmation's first run finished
        self._open = False  # a terminal line drawn in place and not yet ended

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            self.done += 1
            self._trials.pop(trial.number, None)
            self._line_text = self._line(study, trial)
            if self.live:
                self.stream.write("\r\033[K" + self._line_text + self._running_text())
                self._open = True
            else:
                self.stream.write(self._line_text + "\n")
            self.stream.flush()

    def epoch(self, number: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        """Trial ``number`` finished epoch ``epoch`` of ``epochs`` with these metrics."""
        now = time.perf_counter()
        with self._lock:
            seen = self._see(number, epoch, epochs, metrics, now)
            if not self._due(now):
                return
            if self.live:
                self._redraw()
            else:
                value = metrics.get(self.metric_name)
                shown = f", {self.metric_name} {value:.4g}" if value is not None else ""
                left = seen.seconds_left()
                eta = f", {_seconds(left)} left" if left is not None else ""
                others = len(self._trials) - 1
                also = f" ({others} more running)" if others > 0 else ""
                self.stream.write(
                    f"trial {number}: epoch {epoch}/{epochs}{shown}{eta}{also} | "
                    f"{now - self.started:.0f}s\n"
                )
            self.stream.flush()

    def stack(self, rows: list[tuple[int, int, int, dict[str, float]]]) -> None:
        """One epoch of a stack: (trial number, epoch, epochs, metrics) for each of its rows."""
        now = time.perf_counter()
        with self._lock:
            for number, epoch, epochs, metrics in rows:
                self._see(number, epoch, epochs, metrics, now)
            if not self._due(now):
                return
            if self.live:
                self._redraw()
            else:
                numbers = {number for number, *_ in rows}
                rows_now = [(n, r) for n, r in self._trials.items() if n in numbers]
                text = self._where(rows_now)
                self.stream.write(
                    f"stack of {len(rows_now)} rows {text} | {now - self.started:.0f}s\n"
                )
            self.stream.flush()

    def _see(
        self, number: int, epoch: int, epochs: int, metrics: dict[str, float], now: float
    ) -> _Running:
        seen = self._trials.get(number)
        if seen is None:
            seen = self._trials[number] = _Running(epoch, epochs, now, epoch, now)
        seen.epoch, seen.epochs, seen.at = epoch, epochs, now
        seen.value = metrics.get(self.metric_name)
        return seen

    def _due(self, now: float) -> bool:
        """Whether to draw now: a terminal's redraws and a log's lines are spaced out."""
        if now - self._epoch_line_at < (REDRAW_EVERY if self.live else EPOCH_LINE_EVERY):
            return False
        self._epoch_line_at = now
        return True

    def _redraw(self) -> None:
        text = self._line_text + self._running_text()
        self.stream.write("\r\033[K" + (text if self._line_text else text[3:]))
        self._open = True

    def say(self, message: str) -> None:
        """A line of its own (a warning, a note) below the bar, which is drawn again after it."""
        with self._lock:
            self._end_line()
            self.stream.write(message + "\n")
            self.stream.flush()

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False

    def _where(self, trials: list[tuple[int, _Running]]) -> str:
        """``at epoch 3/20, best trial 5 val_accuracy 0.61, ~9s left`` for these trials."""
        running = [r for _, r in trials]
        lefts = [left for left in (r.seconds_left() for r in running) if left is not None]
        eta = f", {_seconds(max(lefts))} left" if lefts else ""
        epochs = max(r.epochs for r in running)
        low, high = min(r.epoch for r in running), max(r.epoch for r in running)
        span = f"{low}" if low == high else f"{low}-{high}"
        scored = [
            (r.value, n) for n, r in self._trials.items() if r in running and r.value is not None
        ]
        best = ""
        if scored:
            sign = -1.0 if self.maximize else 1.0  # ties: the lowest trial number
            value, number = min(scored, key=lambda vn: (sign * vn[0], vn[1]))
            best = f", best trial {number} {self.metric_name} {value:.4g}"
        return f"at epoch {span}/{epochs}{best}{eta}"

    def _running_text(self) -> str:
        """`` | trial 7 epoch 3/20, ~12s left`` or `` | 16 running at epoch 3-4/20, ~9s left``."""
        if not self._trials:
            return ""
        running = list(self._trials.values())
        lefts = [left for left in (r.seconds_left() for r in running) if left is not None]
        eta = f", {_seconds(max(lefts))} left" if lefts else ""
        epochs = max(r.epochs for r in running)
        if len(running) == 1:
            (number,) = self._trials
            return f" | trial {number} epoch {running[0].epoch}/{epochs}{eta}"
        return f" | {len(running)} running " + self._where(list(self._trials.items()))

    def confirm_run(self, done: int, total: int, best: str) -> None:
        """Confirmation's progress: ``done`` of ``total`` (configuration, seed) runs finished,
        the best mean so far. A terminal redraws one line; a log gets a line per run, none
        within EPOCH_LINE_EVERY seconds of the last (but the last run's)."""
        now = time.perf_counter()
        with self._lock:
            if self._confirm_started is None:
                self._confirm_started = now
                self._end_line()
            final = done >= total
            if not final and now - self._epoch_line_at < (
                REDRAW_EVERY if self.live else EPOCH_LINE_EVERY
            ):
                return
            self._epoch_line_at = now
            filled = round(self.width * done / total) if total else self.width
            bar = "[" + "#" * filled + "." * (self.width - filled) + "]"
            shown = f" | {best}" if best else ""
            text = f"{bar} {done}/{total} confirmation runs{shown} | {now - self._confirm_started:.0f}s"
            if self.live:
                self.stream.write("\r\033[K" + text + ("\n" if final else ""))
                self._open = not final
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        self._end_line()
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
