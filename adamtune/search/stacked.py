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

Asked ahead, on a GPU: the trials that the rows freed at an epoch's end will take are asked
and sampled on a thread while that epoch trains (``_AskAhead``), so the sampler's cost (tens
of milliseconds a trial with TPE, more as the study grows) is off the training's critical
path while the CPU waits on the GPU. The thread is joined before the epoch's results are
reported or told, so the sampler sees the study as it stood when the epoch started: the same
seed gives the same trials, run after run. On a CPU the thread competes with the training for
the GIL and the cores (measured on 2 cores: 0.90-0.97x the trial throughput of asking at the
epoch's end, benchmarks/results/search_overhead_cpu.md), so there the trials are asked at the
boundary.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.config.adam import AdamConfig
from adamtune.errors import TaskError, describe
from adamtune.search.objective import INTERRUPTED, Objective, TrialOutcome
from adamtune.storage.optuna_private import (
    fail_stale,
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
    ask_ahead: bool | None = None,
) -> None:
    """Run ``n_trials`` trials (or start new ones until ``timeout`` seconds have passed),
    ``rows`` at a time, until ``stop()`` says so; the trials running then finish.
    ``ask_ahead``: ask the next trials on a thread while an epoch trains; by default on a GPU
    only (see the module's docstring)."""
    if ask_ahead is None:
        ask_ahead = objective.device.type == "cuda"
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
            while search.pending or search.ready or may_start():
                search.run_stack(may_start, ask_ahead)
    except KeyboardInterrupt:
        search.ahead.settle()
        for trial in list(search.running.values()):
            search.finish(trial, INTERRUPTED, None, TrainingLog())
        raise
    except Exception as exc:  # the storage failed (disk full, server gone): fail what runs
        search.ahead.settle()
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
    # asked ahead and sampled, in the order asked, for the next free rows
    ready: deque[tuple[optuna.Trial, AdamConfig]] = field(default_factory=deque)
    heartbeats: dict[int, Any] = field(default_factory=dict)
    ahead: _AskAhead = field(init=False)

    def __post_init__(self) -> None:
        self.ahead = _AskAhead(self)

    def run_stack(self, may_start: Callable[[], bool], ask_ahead: bool) -> None:
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
            while len(self.pending) < self.rows:
                if self.ready:
                    started: tuple[optuna.Trial, AdamConfig] | None = self.ready.popleft()
                elif may_start():
                    self.asked += 1
                    started = self.start_trial()
                else:
                    break
                if started is None:
                    continue  # sampling failed: that trial is told FAIL; ask another
                if kind is None or _kind(started[1]) == kind:
                    kind = _kind(started[1])
                    members.append(started)
                    return started[1]
                self.pending.append(started)  # other settings: it waits for its own stack
            return None

        def on_result(i: int, result: TrainResult) -> None:
            self.ahead.left += 1
            trial, config = members[i]
            try:
                self.finish(trial, self.objective.outcome(result), config, result.log)
            except BaseException as exc:  # storage lost, Ctrl-C: not the user's code
                raise _SearchFailed from exc

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
                overlap=partial(self.ahead.start, may_start) if ask_ahead else None,
            )
        except KeyboardInterrupt:
            raise
        except _SearchFailed as exc:
            cause = exc.__cause__
            assert cause is not None
            raise cause  # noqa: B904  (its own chain kept: the database reason, storage_lost)
        except BaseException as exc:  # noqa: BLE001  (user code: the stack's trials fail)
            if not members:  # refused before it took a trial: every next stack would too
                raise TaskError(
                    f"--stack {self.rows}: a stack of task {self.objective.task.name!r} failed "
                    f"before its first trial: {describe(exc)}; use --stack 1"
                ) from None
            failed = TrialOutcome("FAIL", reason=describe(exc))
            for trial, config in members:
                if trial.number in self.running:  # not finished before the error
                    self.finish(trial, failed, config, TrainingLog())

    def start_trial(self) -> tuple[optuna.Trial, AdamConfig] | None:
        """Ask the sampler for a trial (after failing dead workers' trials) and sample its
        configuration; None when sampling failed (the trial is then told FAIL). The caller
        has counted it in ``asked``."""
        study = self.study
        fail_stale(study)
        # One read of the trials serves the ask (TPE's relative sampling) and the sampling of
        # the space: the study as it stood before this trial was created, which the sampler
        # would leave this trial out of anyway.
        with one_read_of_trials(study):
            with warnings.catch_warnings():  # heartbeats are sent below, as optimize sends them
                warnings.simplefilter("ignore", UserWarning)
                try:
                    trial = study.ask()
                except Exception as exc:  # the storage or the sampler: never the task's fault
                    raise _SearchFailed from exc
            self.running[trial.number] = trial
            heartbeat = self.heartbeats[trial.number] = heartbeat_thread(study, trial)
            heartbeat.start()
            self.objective.tracker.start_trial(trial.number)
            try:
                return trial, self.objective.begin(trial)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001  (sampling failed: this trial fails)
                failed = TrialOutcome("FAIL", reason=describe(exc))
        self.finish(trial, failed, None, TrainingLog())
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


class _AskAhead:
    """Asks, on a thread while an epoch trains, the trials that the rows freed at its end will
    take: those finishing their last epoch, plus as many as left early (pruned, diverged or
    stopped) at the last epoch's end, a forecast of what this one will free. A forecast too
    high leaves trials ready (RUNNING, with heartbeats) for the next free rows; too low, the
    rest are asked at the epoch's end as before. Every count comes from the results, never
    from the clock, so the trials asked stay the same run after run."""

    def __init__(self, search: _Search) -> None:
        self.search = search
        self.left = 0  # rows that finished since the last epoch started
        self.planned = 0  # of those, the ones that were ending their last epoch
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, may_start: Callable[[], bool], ending: int) -> Callable[[], None]:
        search = self.search
        early = max(0, self.left - self.planned)
        self.left, self.planned = 0, ending
        count = 0
        while count < min(ending + early, search.rows - len(search.ready)) and may_start():
            search.asked += 1  # counted now, so n_trials holds while the thread asks
            count += 1
        if count:
            self.thread = threading.Thread(
                target=self._ask, args=(count,), name="adamtune-ask-ahead", daemon=True
            )
            self.thread.start()
        return self.wait

    def _ask(self, count: int) -> None:
        search = self.search
        try:
            with optimize_loop(search.study, fresh=False):  # a sampler may call study.stop()
                for _ in range(count):
                    started = search.start_trial()
                    if started is not None:
                        search.ready.append(started)
        except BaseException as exc:  # noqa: BLE001  (storage lost: raised where the epoch ends)
            self.error = exc

    def wait(self) -> None:
        """Join the thread; what it raised (a storage failure) is raised here."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        error, self.error = self.error, None
        if isinstance(error, _SearchFailed):
            raise error
        if error is not None:
            raise _SearchFailed from error

    def settle(self) -> None:
        """Join the thread before the search fails what runs; its error is already beside."""
        with contextlib.suppress(BaseException):
            self.wait()


def _kind(config: AdamConfig) -> tuple[bool, bool]:
    """What rows of one stack must share."""
    return config.decoupled, config.amsgrad


class _SearchFailed(Exception):
    """Telling a finished row's trial, or asking one ahead, failed (the storage, Ctrl-C): its
    cause is re-raised, never blamed on the task."""


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
        pruned = {
            row: objective.prune_reason(evaluation)
            for row, evaluation in evaluations.items()
            if trials[row].should_prune()
        }
    for row, evaluation in evaluations.items():
        late = objective.out_of_time(evaluation)
        if late and row not in pruned:
            pruned[row] = late
    return pruned
