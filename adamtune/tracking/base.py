"""The Tracker protocol: what a study tells a tracker, and when.

Order of calls: start_study once; then, per trial, start_trial and end_trial (from whichever
thread runs the trial); then end_study and close, also when the study is interrupted or fails.
stale_trial(number) may come at any time: another worker's trial was found dead. log_run(name,
record) logs a finished run that is no Optuna trial (a baseline evaluated apart from the search,
a confirmation seed) under the study's parent run, between start_study and end_study.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store in the current directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@dataclass(frozen=True)
class TrialRecord:
    """Everything known about a finished trial (completed, pruned or failed)."""

    number: int
    state: str  # "COMPLETE", "PRUNED" or "FAIL", as Optuna's TrialState names
    reason: str  # why it was pruned or failed; "" when complete
    params: dict[str, Any]  # resolved configuration and run settings
    value: float | None
    metric_name: str
    learning_rates: list[float]  # the LR of every optimizer step taken
    train_losses: list[float]  # the loss of every step taken
    evaluations: list[tuple[int, int, dict[str, float]]]  # (epoch, step, metrics) per evaluation
    grad_norms: list[float] = field(default_factory=list)  # global gradient norm, every step
    # a user loop's own per-step metrics, trial.log(step, name=value): (step, metrics)
    step_metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    # the run's final metrics, test split's included: those no evaluation holds are logged at
    # its last step
    final_metrics: dict[str, float] = field(default_factory=dict)
    # when a run that is no trial (log_run) really started and ended, in epoch seconds;
    # None: when the tracker is told
    started: float | None = None
    ended: float | None = None
    # hyperparameters that changed during the run (a population's member): name -> every step
    hyperparameters: dict[str, list[float]] = field(default_factory=dict)


class Tracker(Protocol):
    def start_study(self, study_name: str, settings: dict[str, Any], space_text: str) -> None: ...
    def start_trial(self, number: int) -> None: ...
    def end_trial(self, record: TrialRecord) -> None: ...
    def stale_trial(self, number: int) -> None: ...
    def log_run(self, name: str, record: TrialRecord) -> None: ...
    def end_study(self, study_name: str, *, interrupted: bool = False) -> None: ...
    def close(self) -> None: ...


class NullTracker:
    """Tracking off: every call does nothing."""

    def start_study(self, study_name: str, settings: dict[str, Any], space_text: str) -> None:
        pass

    def start_trial(self, number: int) -> None:
        pass

    def end_trial(self, record: TrialRecord) -> None:
        pass

    def stale_trial(self, number: int) -> None:
        pass

    def log_run(self, name: str, record: TrialRecord) -> None:
        pass

    def end_study(self, study_name: str, *, interrupted: bool = False) -> None:
        pass

    def close(self) -> None:
        pass
