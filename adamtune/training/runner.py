"""Training configurations outside Optuna's trials: a baseline that lies outside the space, and
the confirmation runs of a study's top trials under further seeds.

Each (configuration, seed) pair trains exactly as a trial with that seed would (same epochs,
device, optimizer, early stopping). Where the task stacks, every (configuration, seed) pair is a
row of one stacked model, each row with its own seed (rows sharing ``decoupled``/``amsgrad``
share a stack), so K seeds of the top five cost about one stacked run, not 5K runs. A run that diverges or whose user code raises is an
outcome with its reason, never an exception: one bad seed must not lose the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.values import Values
from adamtune.errors import DivergedError, describe
from adamtune.tasks import Task
from adamtune.training.builders import build_optimizer
from adamtune.training.single import Evaluation, TrainingLog, TrainResult, train


@dataclass
class Evaluated:
    """One configuration trained under one seed."""

    seed: int
    value: float | None  # the task's metric; None when the run did not finish
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # why there is no value
    log: TrainingLog = field(default_factory=TrainingLog, repr=False)
    ended: float = field(default_factory=time.time)  # epoch seconds
    seconds: float = 0.0  # how long it trained

    @property
    def started(self) -> float:
        return self.ended - self.seconds


OUT_OF_TIME = "out of time: the --timeout budget ran out before this run finished"


@dataclass(frozen=True)
class Runner:
    """How a study trains: what every evaluation shares with the study's trials."""

    task: Task
    epochs: int | None = None
    device: torch.device = torch.device("cpu")
    optimizer: str = "fused"
    patience: int | None = None
    rows: int = 1  # > 1: train configurations and seeds this many at a time as one stack
    precision: str = "fp32"
    declared: dict[str, Any] = field(default_factory=dict)  # the space's model: section

    def evaluate(
        self,
        configs: Sequence[AdamConfig],
        seeds: Sequence[int],
        on_done: Callable[[int, Evaluated], None] | None = None,
        on_eval: Callable[[Evaluation], None] | None = None,
        values: Sequence[dict[str, Any]] | None = None,
        deadline: float | None = None,
    ) -> list[list[Evaluated]]:
        """``result[i][j]``: configuration ``i`` trained under ``seeds[j]``; ``on_done(i, run)``
        is called as each run finishes, ``on_eval`` with the evaluations on the way.
        ``values[i]``: configuration ``i``'s values of the user's own (adamtune.values), as its
        trial stored them; a value not there takes its default. ``deadline`` (time.monotonic):
        no run starts after it, and a run still training then ends at its next evaluation;
        either is an Evaluated with no value and the reason OUT_OF_TIME."""
        values = list(values) if values is not None else [{} for _ in configs]
        pairs = [(i, seed) for seed in seeds for i in range(len(configs))]
        done: dict[tuple[int, int], Evaluated] = {}

        def finished(pair: tuple[int, int], run: Evaluated) -> None:
            done[pair] = run
            if on_done is not None:
                on_done(pair[0], run)

        late = _late(deadline)
        if self.rows > 1 and len(pairs) > 1:
            self._stacked(configs, pairs, finished, on_eval, late)
        else:
            for i, seed in pairs:
                if late():
                    finished((i, seed), Evaluated(seed, None, reason=OUT_OF_TIME))
                    continue
                finished((i, seed), self._alone(configs[i], seed, on_eval, values[i], late))
        return [[done[(i, seed)] for seed in seeds] for i in range(len(configs))]

    def _alone(
        self,
        config: AdamConfig,
        seed: int,
        on_eval: Callable[[Evaluation], None] | None = None,
        stored: dict[str, Any] | None = None,
        late: Callable[[], bool] = lambda: False,
    ) -> Evaluated:
        log = TrainingLog()
        started = time.perf_counter()
        values = Values(stored=stored or {}, declared=self.declared)

        def watch(evaluation: Evaluation) -> str | None:
            if on_eval is not None:
                on_eval(evaluation)
            return OUT_OF_TIME if late() else None

        try:
            task = self.task.per_trial(values) if self.task.per_trial else self.task
            result = train(
                task,
                config,
                seed=seed,
                epochs=self.epochs,
                device=self.device,
                optimizer_factory=partial(build_optimizer, optimizer=self.optimizer),
                log=log,
                patience=self.patience,
                precision=self.precision,
                on_eval=watch,
                values=values,
            )
        except KeyboardInterrupt:
            raise
        except DivergedError as exc:
            seconds = time.perf_counter() - started
            return Evaluated(seed, None, reason=f"diverged: {exc}", log=log, seconds=seconds)
        except BaseException as exc:  # noqa: BLE001  (user code: this run fails, not the others)
            seconds = time.perf_counter() - started
            return Evaluated(seed, None, reason=describe(exc), log=log, seconds=seconds)
        return self._outcome(result, seed)

    def _stacked(
        self,
        configs: Sequence[AdamConfig],
        pairs: list[tuple[int, int]],
        finished: Callable[[tuple[int, int], Evaluated], None],
        on_eval: Callable[[Evaluation], None] | None = None,
        late: Callable[[], bool] = lambda: False,
    ) -> None:
        """Every (configuration, seed) pair as a row of one refilling stack per kernel setting
        (rows sharing ``decoupled``/``amsgrad``), ``rows`` at a time."""
        from adamtune.training.stacked.loop import train_stack

        out: dict[tuple[int, int], Evaluated] = {}
        groups: dict[tuple[bool, bool], list[tuple[int, int]]] = {}
        for i, seed in pairs:
            groups.setdefault((configs[i].decoupled, configs[i].amsgrad), []).append((i, seed))
        for members in groups.values():
            queue = iter([(configs[i], seed) for i, seed in members])

            def source(
                queue: Iterator[tuple[AdamConfig, int]] = queue,
            ) -> tuple[AdamConfig, int] | None:
                return None if late() else next(queue, None)

            def collect(
                row: int, result: TrainResult, members: list[tuple[int, int]] = members
            ) -> None:
                out[members[row]] = self._outcome(result, members[row][1])
                finished(members[row], out[members[row]])

            try:
                train_stack(
                    self.task,
                    source,
                    rows=min(self.rows, len(members)),
                    epochs=self.epochs,
                    device=self.device,
                    on_result=collect,
                    on_epoch=partial(_watch_stack, on_eval, late),
                    patience=self.patience,
                    precision=self.precision,
                )
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001  (the shared forward failed)
                for pair in members:
                    if pair not in out:
                        out[pair] = Evaluated(pair[1], None, reason=describe(exc))
                        finished(pair, out[pair])
            for pair in members:  # never started: the budget ran out first
                if pair not in out:
                    out[pair] = Evaluated(pair[1], None, reason=OUT_OF_TIME)
                    finished(pair, out[pair])

    def _outcome(self, result: TrainResult, seed: int) -> Evaluated:
        reason = result.failed or result.stopped
        took = result.seconds
        if reason:
            return Evaluated(seed, None, result.metrics, reason, result.log, seconds=took)
        if not math.isfinite(result.value):
            why = f"{self.task.metric_name} is {result.value} (not a finite number)"
            return Evaluated(seed, None, result.metrics, why, result.log, seconds=took)
        return Evaluated(
            seed, float(result.value), dict(result.metrics), "", result.log, seconds=took
        )


def _watch_stack(
    on_eval: Callable[[Evaluation], None] | None,
    late: Callable[[], bool],
    evaluations: dict[int, Evaluation],
) -> dict[int, str]:
    """A stack's epoch for ``on_eval`` (its most advanced row's evaluation); stops every row
    once the budget has run out."""
    if on_eval is not None and evaluations:
        on_eval(max(evaluations.values(), key=lambda e: e.epoch))
    return dict.fromkeys(evaluations, OUT_OF_TIME) if late() else {}


def _late(deadline: float | None) -> Callable[[], bool]:
    """Whether ``deadline`` (time.monotonic) has passed; never, for None."""
    if deadline is None:
        return lambda: False
    return lambda: time.monotonic() >= deadline
