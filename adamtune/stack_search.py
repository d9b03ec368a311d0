"""``--stack N``: Optuna trials trained N at a time as one stacked model (adamtune.stacked).

Each round fails the trials of dead workers (heartbeats), asks the sampler for N trials (it sees
the RUNNING ones: TPE's constant liar, GP's batch asks), samples each one's configuration,
trains them as one stack per group of settings the kernel cannot vary per row (decoupled,
amsgrad), reports every row's evaluations to the study's pruner, and tells each trial its own
outcome through the same Objective.record that one-at-a-time trials go through: the same user
attributes, the same MLflow run with its per-step learning rates. Every trial of a round sends
heartbeats, as study.optimize does for its one, so a killed stacked worker's trials are failed
and retried by the next worker.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.config import AdamConfig
from adamtune.errors import describe
from adamtune.objective import INTERRUPTED, Objective, TrialOutcome
from adamtune.stacked import train_stacked
from adamtune.train import Evaluation, TrainingLog

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
    """Run ``n_trials`` trials (or until ``timeout`` seconds, checked between rounds), ``rows``
    at a time, until ``stop()`` says so."""
    deadline = time.monotonic() + timeout if timeout is not None else None
    left = n_trials
    while left is None or left > 0:
        if stop() or (deadline is not None and time.monotonic() >= deadline):
            return
        count = rows if left is None else min(rows, left)
        _round(study, objective, count, callbacks)
        if left is not None:
            left -= count


def _round(
    study: optuna.Study, objective: Objective, count: int, callbacks: Sequence[Callback]
) -> None:
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    with warnings.catch_warnings():  # heartbeats are sent below, as study.optimize sends them
        warnings.simplefilter("ignore", UserWarning)
        trials = [study.ask() for _ in range(count)]
    open_trials = {t.number: t for t in trials}
    heartbeats = [get_heartbeat_thread(trial._trial_id, study._storage) for trial in trials]
    for heartbeat in heartbeats:
        heartbeat.start()
    try:
        _train_round(study, objective, trials, open_trials, callbacks)
    except KeyboardInterrupt:
        for trial in list(open_trials.values()):
            log = TrainingLog()
            _finish(study, objective, trial, INTERRUPTED, None, log, callbacks, open_trials)
        raise
    finally:
        for heartbeat in heartbeats:
            heartbeat.join()


def _train_round(
    study: optuna.Study,
    objective: Objective,
    trials: list[optuna.Trial],
    open_trials: dict[int, optuna.Trial],
    callbacks: Sequence[Callback],
) -> None:
    groups: dict[tuple[bool, bool], list[tuple[optuna.Trial, AdamConfig]]] = {}
    for trial in trials:
        objective.tracker.start_trial(trial.number)
        try:
            config = objective.begin(trial)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (sampling failed: this trial fails)
            failed = TrialOutcome("FAIL", reason=describe(exc))
            _finish(study, objective, trial, failed, None, TrainingLog(), callbacks, open_trials)
            continue
        groups.setdefault((config.decoupled, config.amsgrad), []).append((trial, config))
    for members in groups.values():
        logs = [TrainingLog() for _ in members]
        configs = [config for _, config in members]
        stack_trials = [trial for trial, _ in members]
        try:
            results = train_stacked(
                objective.task,
                configs,
                seed=objective.seed,
                epochs=objective.epochs,
                device=objective.device,
                on_epoch=partial(_judge, study, objective, stack_trials),
                logs=logs,
            )
            outcomes = [objective.outcome(result) for result in results]
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (user code: the stack's trials fail)
            outcomes = [TrialOutcome("FAIL", reason=describe(exc))] * len(members)
        for (trial, config), outcome, log in zip(members, outcomes, logs, strict=True):
            _finish(study, objective, trial, outcome, config, log, callbacks, open_trials)


def _judge(
    study: optuna.Study,
    objective: Objective,
    trials: list[optuna.Trial],
    evaluations: dict[int, Evaluation],
) -> dict[int, str]:
    """One epoch of a stack: report every row, then ask the pruner about each. A median or
    percentile pruner judges every row against one snapshot of the study (one storage read
    per epoch instead of one per row); the others are asked as in study.optimize."""
    metric = objective.task.metric_name
    for row, evaluation in evaluations.items():
        trials[row].report(evaluation.metrics[metric], evaluation.epoch)
    reasons = {}
    if isinstance(study.pruner, optuna.pruners.PercentilePruner):
        snapshot = _Snapshot(study)
        for row, evaluation in evaluations.items():
            frozen = snapshot.trial(trials[row].number)
            if study.pruner.prune(snapshot, frozen):  # type: ignore[arg-type]
                reasons[row] = objective.prune_reason(evaluation)
        return reasons
    for row, evaluation in evaluations.items():
        if trials[row].should_prune():
            reasons[row] = objective.prune_reason(evaluation)
    return reasons


class _Snapshot:
    """A study as one read of its trials: what a percentile pruner asks of it, served from
    memory; everything else from the study itself."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._trials = study.get_trials(deepcopy=False)

    def get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None
    ) -> list[FrozenTrial]:
        chosen = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen

    def trial(self, number: int) -> FrozenTrial:
        return next(t for t in self._trials if t.number == number)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def _finish(
    study: optuna.Study,
    objective: Objective,
    trial: optuna.Trial,
    outcome: TrialOutcome,
    config: AdamConfig | None,
    log: TrainingLog,
    callbacks: Sequence[Callback],
    open_trials: dict[int, Any],
) -> None:
    """Record one trial's outcome (attributes, tracker), tell Optuna, call back."""
    open_trials.pop(trial.number, None)
    try:
        objective.record(trial, outcome, config, log)
    finally:
        if outcome.state == "COMPLETE":
            study.tell(trial, outcome.value)
        else:
            study.tell(trial, state=STATES[outcome.state])
    frozen = study._storage.get_trial(trial._trial_id)
    for callback in callbacks:
        callback(study, frozen)
