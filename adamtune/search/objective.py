"""Glue between one Optuna trial and the training loop.

trial -> AdamConfig (space) -> train(...) -> a TrialOutcome; ``Objective.__call__`` turns the
outcome into what Optuna expects (a value, TrialPruned, or an exception it records as FAIL),
into trial user attributes, and into the tracker's record, in that one place.

User attributes, readable without adamtune: ``config`` (the resolved AdamConfig), ``seed``,
``metrics``, ``total_steps``, ``seconds``, ``best_epoch`` and ``best_step`` for trials ended
by early stopping, ``pruned_reason`` for pruned trials and ``fail_reason`` for failed ones. User code (the task's model, loss and metric) may raise
anything, SystemExit included: that fails the trial with its reason, never the study.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna
import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.values import Values
from adamtune.errors import DivergedError, describe
from adamtune.results.gain import Baseline
from adamtune.results.report import config_rows
from adamtune.search.baseline import record_baseline_trial
from adamtune.space.search_space import SearchSpace
from adamtune.storage.reads import one_read_of_trials
from adamtune.storage.writes import set_user_attrs
from adamtune.tasks import Task
from adamtune.tracking import NullTracker, Tracker, TrialRecord
from adamtune.training.builders import build_optimizer
from adamtune.training.single import Evaluation, TrainingLog, TrainResult, train


class TrialFailed(Exception):
    """Raised to Optuna for a failed trial; the reason is already on the trial."""


@dataclass
class TrialOutcome:
    """What happened to one trial: the state Optuna will record, and why."""

    state: str  # "COMPLETE", "PRUNED" or "FAIL"
    value: float | None = None
    reason: str = ""  # why it was pruned or failed
    metrics: dict[str, float] = field(default_factory=dict)
    total_steps: int = 0
    seconds: float = 0.0
    early_stopping: dict[str, int] = field(default_factory=dict)  # best_epoch, best_step


INTERRUPTED = TrialOutcome("FAIL", reason="interrupted (Ctrl-C or SIGTERM)")


@dataclass
class Objective:
    task: Task
    space: SearchSpace
    seed: int = 0
    epochs: int | None = None
    device: torch.device = torch.device("cpu")
    optimizer: str = "fused"
    tracker: Tracker = field(default_factory=NullTracker)
    patience: int | None = None  # early stopping; None: the task's
    precision: str = "fp32"  # adamtune.training.precision.PRECISIONS
    baseline: Baseline | None = None  # the study's baseline; its trial's outcome is recorded
    # Progress of running trials: (trial number, epoch, epochs, metrics) at every evaluation
    on_epoch: Callable[[int, int, int, dict[str, float]], None] | None = None
    # A stack's epoch, all its rows at once: [(trial number, epoch, epochs, metrics)]
    on_stack: Callable[[list[tuple[int, int, int, dict[str, float]]]], None] | None = None
    warn: Callable[[str], None] = lambda message: None
    _told_epochs: bool = field(default=False, repr=False)  # a loop ignoring --epochs: said once
    # time.monotonic() when the command's --timeout is spent: a trial still training then ends
    # (PRUNED, "out of time") at its next evaluation
    deadline: float | None = None

    def out_of_time(self, evaluation: Evaluation) -> str | None:
        if self.deadline is None or time.monotonic() < self.deadline:
            return None
        return f"out of time: --timeout ended it at epoch {evaluation.epoch}"

    @property
    def effective_patience(self) -> int | None:
        return self.patience if self.patience is not None else self.task.patience

    def __call__(self, trial: optuna.Trial) -> float:
        self.tracker.start_trial(trial.number)
        log = TrainingLog()
        config: AdamConfig | None = None
        values = Values()
        try:
            config = self.begin(trial)
            values = self.begin_values(trial)
            outcome = self._run(trial, config, log, values)
        except KeyboardInterrupt:
            self.record(trial, INTERRUPTED, config, log, values)
            raise
        except BaseException as exc:  # noqa: BLE001  (sampling or user code: the trial fails)
            outcome = TrialOutcome("FAIL", reason=describe(exc))
        self.record(trial, outcome, config, log, values)
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "FAIL":
            raise TrialFailed(outcome.reason)
        assert outcome.value is not None
        return outcome.value

    def begin(self, trial: optuna.Trial) -> AdamConfig:
        """Sample the trial's configuration and record it (and the seed) on the trial."""
        with one_read_of_trials(trial.study):  # one read of the trials per sampled trial
            config = self.space.sample(trial)
        set_user_attrs(trial, {"config": config.to_dict(), "seed": self.seed})
        return config

    def begin_values(self, trial: optuna.Trial) -> Values:
        """The trial's values of the user's own: drawn by the sampler, the space's model:
        section's first; the baseline trial takes their defaults (it measures Adam's defaults
        on the model as the user would build it)."""
        if self.baseline is not None and self.baseline.trial == trial.number:
            return Values(stored={}, declared=self.space.model)
        with one_read_of_trials(trial.study):
            return Values(trial, declared=self.space.model)

    def _run(
        self, trial: optuna.Trial, config: AdamConfig, log: TrainingLog, values: Values
    ) -> TrialOutcome:
        """Train one configuration; pruning and divergence are outcomes, user errors raise."""
        task = self.task.per_trial(values) if self.task.per_trial is not None else self.task
        try:
            result = train(
                task,
                config,
                seed=self.seed,
                epochs=self.epochs,
                device=self.device,
                optimizer_factory=partial(build_optimizer, optimizer=self.optimizer),
                on_eval=partial(self.report, trial),
                log=log,
                patience=self.effective_patience,
                precision=self.precision,
                values=values,
            )
        except DivergedError as exc:
            return TrialOutcome("PRUNED", reason=f"diverged: {exc}", total_steps=log.total_steps)
        finally:
            self._tell_ignored_epochs(log)
        return self.outcome(result)

    def _tell_ignored_epochs(self, log: TrainingLog) -> None:
        """A loop that never read trial.epochs while --epochs was given: say so, once."""
        if self.epochs is None or log.epochs_read is not False or self._told_epochs:
            return
        self._told_epochs = True
        name = getattr(self.task.train_loop, "__name__", self.task.name)
        self.warn(
            f"Warning: --epochs {self.epochs} does not reach the training loop {name}(trial): "
            f"it never reads trial.epochs (it reported {len(log.evaluations)} time(s)); "
            "loop over range(trial.epochs) to let the flag set its length."
        )

    def outcome(self, result: TrainResult) -> TrialOutcome:
        """What a finished training run means for its trial."""
        log = result.log
        if result.failed:
            return TrialOutcome("FAIL", reason=result.failed, total_steps=log.total_steps)
        if result.stopped:
            return TrialOutcome("PRUNED", reason=result.stopped, total_steps=log.total_steps)
        if not math.isfinite(result.value):
            return TrialOutcome(
                "FAIL",
                reason=f"{self.task.metric_name} is {result.value} (not a finite number)",
                metrics=result.metrics,
                total_steps=result.total_steps,
            )
        best = result.best
        early = {"best_epoch": best.epoch, "best_step": best.step} if best is not None else {}
        return TrialOutcome(
            "COMPLETE", result.value, "", result.metrics, result.total_steps, result.seconds, early
        )

    def report(self, trial: optuna.Trial, evaluation: Evaluation) -> str | None:
        """Report to the pruner; a reason to stop when it prunes the trial."""
        self.show_epoch(trial.number, evaluation)
        value = evaluation.metrics[self.task.metric_name]
        trial.report(value, evaluation.epoch)
        if trial.should_prune():
            return self.prune_reason(evaluation)
        return self.out_of_time(evaluation)

    def show_epoch(self, number: int, evaluation: Evaluation) -> None:
        if self.on_epoch is not None:  # a loop may report more often than it planned
            epochs = max(self.epochs or self.task.epochs, evaluation.epoch)
            self.on_epoch(number, evaluation.epoch, epochs, evaluation.metrics)

    def show_stack(self, rows: list[tuple[int, Evaluation]]) -> None:
        """One epoch of a stack: to ``on_stack`` at once, else row by row to ``on_epoch``."""
        if self.on_stack is None:
            for number, evaluation in rows:
                self.show_epoch(number, evaluation)
            return
        epochs = self.epochs or self.task.epochs
        self.on_stack([(n, e.epoch, max(epochs, e.epoch), e.metrics) for n, e in rows])

    def prune_reason(self, evaluation: Evaluation) -> str:
        value = evaluation.metrics[self.task.metric_name]
        return (
            f"pruned at epoch {evaluation.epoch}: {self.task.metric_name} {value:.4g} not promising"
        )

    def record(
        self,
        trial: optuna.Trial,
        outcome: TrialOutcome,
        config: AdamConfig | None,
        log: TrainingLog,
        values: Values | None = None,
        hyperparameters: dict[str, list[float]] | None = None,
    ) -> None:
        """The one place an outcome becomes user attributes and the tracker's record.
        ``hyperparameters``: values that changed during the run (a population's member), one
        per step, logged beside the LR."""
        attrs: dict[str, Any] = {"values": values.values} if values and values.values else {}
        if outcome.state == "COMPLETE":
            attrs |= {
                "metrics": outcome.metrics,
                "total_steps": outcome.total_steps,
                "seconds": round(outcome.seconds, 3),
                **outcome.early_stopping,
            }
        elif outcome.state == "PRUNED":
            attrs["pruned_reason"] = outcome.reason
        else:
            attrs["fail_reason"] = outcome.reason
        is_baseline = self.baseline is not None and self.baseline.trial == trial.number
        try:
            set_user_attrs(trial, attrs)
            if is_baseline:
                record_baseline_trial(
                    trial.study, trial.number, outcome.state, outcome.value, outcome.reason
                )
        finally:
            self.tracker.end_trial(
                TrialRecord(
                    number=trial.number,
                    state=outcome.state,
                    reason=outcome.reason,
                    params={
                        **(values.values if values else {}),
                        **self._run_params(trial, config, log),
                        **outcome.early_stopping,
                        **(
                            {"baseline": self.baseline.label}
                            if is_baseline and self.baseline
                            else {}
                        ),
                    },
                    value=outcome.value,
                    metric_name=self.task.metric_name,
                    learning_rates=log.learning_rates,
                    train_losses=log.train_losses,
                    grad_norms=log.grad_norms,
                    evaluations=[(e.epoch, e.step, e.metrics) for e in log.evaluations],
                    step_metrics=log.step_metrics,
                    final_metrics=outcome.metrics,
                    hyperparameters=hyperparameters or {},
                )
            )

    def _run_params(
        self, trial: optuna.Trial, config: AdamConfig | None, log: TrainingLog
    ) -> dict[str, Any]:
        """The resolved configuration and how the trial ran, for trackers."""
        resolved = dict(config_rows(config.to_dict())) if config is not None else {}
        loop = self.task.train_loop is not None  # its batch size is its own: not invented here
        return {
            **log.params,
            **resolved,
            "trial_number": trial.number,
            "seed": self.seed,
            "task": self.task.name,
            "total_steps": log.total_steps,
            **({} if loop else {"batch_size": self.task.batch_size}),
            "device": str(self.device),
            "optimizer": self.optimizer_name(),
        }

    def optimizer_name(self) -> str:
        if self.optimizer != "fused":
            return self.optimizer
        from adamtune.optim import resolve_backend

        return f"fused/{resolve_backend('auto', self.device)}"
