"""``--stack N``: Optuna trials trained N at a time as one stacked model (adamtune.stacked).

A stack stays full: whenever a row finishes (completed, pruned or diverged) its trial is told
at once and, at the stack's next epoch boundary, the freed slot takes a new trial asked from
the sampler then, so the sampler sees every result as soon as it exists (TPE's constant liar
and GP's batch asks account for the RUNNING ones). Each trial samples its configuration,
reports every evaluation to the study's pruner and is told its own outcome through the same
Objective.record that one-at-a-time trials go through: the same user attributes, the same
MLflow run with its per-step learning rates. Every running trial sends heartbeats, as
study.optimize does for its one, so a killed stacked worker's trials are failed and retried.

Rows of a stack share ``decoupled`` and ``amsgrad`` (the kernel's non-numeric settings). A
trial sampled with other values waits, RUNNING, for a stack of its own, which starts when the
current one has drained.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.config.adam import AdamConfig
from adamtune.errors import describe
from adamtune.search.objective import INTERRUPTED, Objective, TrialOutcome
from adamtune.storage.optuna_private import (
    heartbeat_enabled,
    heartbeat_thread,
    optimize_loop,
    stop_requested,
    storage_of,
    trial_id,
)
from adamtune.storage.reads import one_read_of_trials
from adamtune.storage.writes import report_all
from adamtune.training.single import Evaluation, TrainingLog, TrainResult
from adamtune.training.stacked.loop import train_stack

Callback = Callable[[optuna.Study, FrozenTrial], None]
STATES = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAIL}


def run_stacked(
    study: optuna.Study,
    objective: Objective,
    *,
    rows: int,
    n_trials: int | None,
    timeout: float | None,
    callbacks: Sequence[Callback] = (),
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``n_trials`` trials (or start new ones until ``timeout`` seconds have passed),
    ``rows`` at a time, until ``stop()`` says so; the trials running then finish."""
    search = _Search(study, objective, rows, callbacks)
    deadline = time.monotonic() + timeout if timeout is not None else None

    def may_start() -> bool:
        if (
            stop()
            or stop_requested(study)
            or (deadline is not None and time.monotonic() >= deadline)
        ):
            return False
        return n_trials is None or search.asked < n_trials

    # This loop is the study's optimize loop: a sampler or callback may call study.stop() (the
    # grid sampler does when its grid is done), which then ends it as it ends study.optimize.
    try:
        with optimize_loop(study):
            while search.pending or may_start():
                search.run_stack(may_start)
    except KeyboardInterrupt:
        for trial in list(search.running.values()):
            search.finish(trial, INTERRUPTED, None, TrainingLog())
        raise
    except Exception as exc:  # the storage failed (disk full, server gone): fail what runs
        search.abandon(f"the search stopped: {describe(exc)}")
        raise
    finally:
        for heartbeat in search.heartbeats.values():
            heartbeat.join()


@dataclass
class _Search:
    """The trials of one stacked search: those asked, those waiting for a stack of their
    settings, and their heartbeats."""

    study: optuna.Study
    objective: Objective
    rows: int
    callbacks: Sequence[Callback]
    asked: int = 0
    running: dict[int, optuna.Trial] = field(default_factory=dict)  # by trial number
    pending: list[tuple[optuna.Trial, AdamConfig]] = field(default_factory=list)
    heartbeats: dict[int, Any] = field(default_factory=dict)

    def run_stack(self, may_start: Callable[[], bool]) -> None:
        """One stack: the first waiting trial's settings (or the first sampled), refilled
        from the sampler while ``may_start()`` and until trials wait for other settings."""
        members: list[tuple[optuna.Trial, AdamConfig]] = []
        kind = _kind(self.pending[0][1]) if self.pending else None

        def source() -> AdamConfig | None:
            nonlocal kind
            for i, (trial, config) in enumerate(self.pending):
                if kind is None or _kind(config) == kind:
                    del self.pending[i]
                    kind = _kind(config)
                    members.append((trial, config))
                    return config
            while len(self.pending) < self.rows and may_start():
                started = self.start_trial()
                if started is None:
                    continue  # sampling failed: that trial is told FAIL; ask another
                if kind is None or _kind(started[1]) == kind:
                    kind = _kind(started[1])
                    members.append(started)
                    return started[1]
                self.pending.append(started)  # other settings: it waits for its own stack
            return None

        def on_result(i: int, result: TrainResult) -> None:
            trial, config = members[i]
            try:
                self.finish(trial, self.objective.outcome(result), config, result.log)
            except BaseException as exc:  # storage lost, Ctrl-C: not the user's code
                raise _FinishFailed from exc

        try:
            train_stack(
                self.objective.task,
                source,
                rows=self.rows,
                seed=self.objective.seed,
                epochs=self.objective.epochs,
                device=self.objective.device,
                on_epoch=partial(_judge, self.study, self.objective, members),
                on_result=on_result,
                patience=self.objective.effective_patience,
                precision=self.objective.precision,
            )
        except KeyboardInterrupt:
            raise
        except _FinishFailed as exc:
            assert exc.__cause__ is not None
            raise exc.__cause__ from None
        except BaseException as exc:  # noqa: BLE001  (user code: the stack's trials fail)
            failed = TrialOutcome("FAIL", reason=describe(exc))
            for trial, config in members:
                if trial.number in self.running:  # not finished before the error
                    self.finish(trial, failed, config, TrainingLog())

    def start_trial(self) -> tuple[optuna.Trial, AdamConfig] | None:
        """Ask the sampler for a trial (after failing dead workers' trials) and sample its
        configuration; None when sampling failed (the trial is then told FAIL)."""
        study = self.study
        if heartbeat_enabled(study):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        with warnings.catch_warnings():  # heartbeats are sent below, as study.optimize sends them
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        self.asked += 1
        self.running[trial.number] = trial
        heartbeat = self.heartbeats[trial.number] = heartbeat_thread(study, trial)
        heartbeat.start()
        self.objective.tracker.start_trial(trial.number)
        try:
            return trial, self.objective.begin(trial)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (sampling failed: this trial fails)
            self.finish(trial, TrialOutcome("FAIL", reason=describe(exc)), None, TrainingLog())
            return None

    def abandon(self, reason: str) -> None:
        """Tell every running trial FAIL, as far as the storage still takes it; one it does
        not take stays RUNNING until a later search fails it (its heartbeats stop)."""
        for trial in list(self.running.values()):
            self.running.pop(trial.number, None)
            heartbeat = self.heartbeats.pop(trial.number, None)
            if heartbeat is not None:
                heartbeat.join()
            with contextlib.suppress(Exception):
                trial.set_user_attr("fail_reason", reason)
            with contextlib.suppress(Exception):
                self.study.tell(trial, state=TrialState.FAIL)

    def finish(
        self,
        trial: optuna.Trial,
        outcome: TrialOutcome,
        config: AdamConfig | None,
        log: TrainingLog,
    ) -> None:
        """Record one trial's outcome (attributes, tracker), tell Optuna, call back."""
        self.running.pop(trial.number, None)
        heartbeat = self.heartbeats.pop(trial.number, None)
        if heartbeat is not None:
            heartbeat.join()
        study = self.study
        try:
            self.objective.record(trial, outcome, config, log)
        finally:
            if outcome.state == "COMPLETE":
                study.tell(trial, outcome.value)
            else:
                study.tell(trial, state=STATES[outcome.state])
        frozen = storage_of(study).get_trial(trial_id(trial))
        for callback in self.callbacks:
            callback(study, frozen)


def _kind(config: AdamConfig) -> tuple[bool, bool]:
    """What rows of one stack must share."""
    return config.decoupled, config.amsgrad


class _FinishFailed(Exception):
    """Telling a finished row's trial failed; its cause is re-raised, never blamed on the task."""


def _judge(
    study: optuna.Study,
    objective: Objective,
    members: list[tuple[optuna.Trial, AdamConfig]],
    evaluations: dict[int, Evaluation],
) -> dict[int, str]:
    """One epoch of a stack: report every row (one transaction), then ask the study's pruner
    about each, every row judged against one read of the study."""
    trials = [trial for trial, _ in members]
    metric = objective.task.metric_name
    objective.show_stack([(trials[row].number, e) for row, e in evaluations.items()])
    report_all([(trials[row], e.metrics[metric], e.epoch) for row, e in evaluations.items()])
    with one_read_of_trials(study):
        return {
            row: objective.prune_reason(evaluation)
            for row, evaluation in evaluations.items()
            if trials[row].should_prune()
        }
