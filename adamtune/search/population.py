"""``--strategy pbt``: one population trained as one stack, its members Optuna trials.

The members are asked from the study's sampler, so every space (shipped or the user's) works
unchanged; a study's baseline, where it lies inside the space, is its first member and one of
the anchors, the members never exploited. The population trains in
adamtune.training.stacked.population; each member is then recorded through the same
Objective.record as a search's trial (the same user attributes and MLflow run, beside them its
lr, beta1, beta2, eps and weight_decay at every step) and told its final validation metric.
Three user attributes say what it did: ``trajectory`` (the values it trained with, from each step
on), ``lineage`` (whom it copied, at which step and epoch) and ``config``, the schedule its final
weights trained with (an AdamConfig with phases: what confirmation replays and `adamtune export`
writes). ``anchor`` marks the members never exploited.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from adamtune.config.adam import AdamConfig
from adamtune.config.phases import each_step, from_segments
from adamtune.errors import StudyError, describe
from adamtune.search.objective import INTERRUPTED, Objective, TrialOutcome
from adamtune.space.baseline import TRIAL_ATTR
from adamtune.space.explore import Explorer
from adamtune.storage.claims import take
from adamtune.storage.optuna_private import (
    fail_stale,
    heartbeat_thread,
    optimize_loop,
    stop_requested,
)
from adamtune.storage.writes import report_all, set_user_attrs
from adamtune.training.single import Evaluation, TrainingLog
from adamtune.training.stacked.population import MemberResult, Rules, train_population

STRATEGY_ATTR = "strategy"  # study user attribute: "pbt" for a population's study
PER_STEP = ("beta1", "beta2", "eps", "weight_decay")  # logged beside lr at every step


def default_interval(epochs: int) -> int:
    """Evaluations between exploits: about ten exploit rounds a run."""
    return max(1, round(epochs / 10))


def check_fresh(study: optuna.Study) -> None:
    """A population trains in one process's memory: it cannot be resumed or added to. The
    members of one that was killed are failed first (their heartbeats stopped)."""
    fail_stale(study)
    trials = study.get_trials(deepcopy=False)
    if any(TRIAL_ATTR not in t.user_attrs for t in trials):  # more than a new baseline
        done = sum(t.state.is_finished() for t in trials)
        raise StudyError(
            f"--strategy pbt: study {study.study_name!r} already holds {len(trials)} trials "
            f"({done} finished); a population cannot be resumed or added to, since its members' "
            "weights lived in one process's memory: give a new --study-name"
        )


def run_population(
    study: optuna.Study,
    objective: Objective,
    *,
    size: int,
    rules: Rules,
    timeout: float | None,
    stop: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda message: None,
) -> None:
    """Ask ``size`` members, train them as one population and tell each its outcome. Under a
    ``timeout``, successive generations fill it: while the time left holds another generation
    (as long as the last one took), the next starts from the last one's best quarter (their
    sampled values, enqueued) beside new members from the sampler."""
    check_fresh(study)
    held = take(study, "population")
    if held is None:  # processes started together on one new study
        raise StudyError(
            f"--strategy pbt: another process trains the population of study "
            f"{study.study_name!r}; a population is one process: give this one another "
            "--study-name"
        )
    held.finish()  # a population is never resumed: its claim is taken for good
    study.set_user_attr(STRATEGY_ATTR, "pbt")
    deadline = time.monotonic() + timeout if timeout is not None else None
    members: list[tuple[optuna.Trial, AdamConfig]] = []
    asked: dict[int, optuna.Trial] = {}  # every trial asked, sampled or not
    heartbeats: dict[int, Any] = {}  # of the trials not told yet

    def finish(
        trial: optuna.Trial,
        outcome: TrialOutcome,
        log: TrainingLog,
        config: AdamConfig | None = None,
        hyperparameters: dict[str, list[float]] | None = None,
    ) -> None:
        heartbeat = heartbeats.pop(trial.number, None)
        if heartbeat is not None:
            heartbeat.join()
        try:
            objective.record(trial, outcome, config, log, hyperparameters=hyperparameters)
        finally:
            if outcome.state == "COMPLETE":
                study.tell(trial, outcome.value)
            else:
                study.tell(trial, state=TrialState[outcome.state])

    ended = lambda: (  # noqa: E731
        stop() or stop_requested(study) or (deadline is not None and time.monotonic() >= deadline)
    )
    try:
        with optimize_loop(study):
            generation = 1
            while True:
                started = time.monotonic()
                members.clear()
                _ask(study, objective, size, members, asked, heartbeats, finish)
                if not members:
                    return
                _train(study, objective, members, rules, ended, finish)
                took = time.monotonic() - started
                if deadline is None or ended() or time.monotonic() + took > deadline:
                    return
                generation += 1
                kept = _seed_next(study, [trial for trial, _ in members], size)
                say(
                    f"Population: generation {generation} ({size} members, {kept} of them the "
                    f"last generation's best, the rest new), since the budget leaves "
                    f"{deadline - time.monotonic():.0f} s and a generation takes {took:.0f} s."
                )
    except KeyboardInterrupt:
        for trial in asked.values():
            if trial.number in heartbeats:
                finish(trial, INTERRUPTED, TrainingLog())
        raise
    except Exception as exc:  # the storage failed: fail what runs, as far as it takes it
        for trial in asked.values():
            if trial.number in heartbeats:
                heartbeats.pop(trial.number).join()
                with contextlib.suppress(Exception):
                    trial.set_user_attr("fail_reason", f"the population stopped: {describe(exc)}")
                with contextlib.suppress(Exception):
                    study.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        for heartbeat in heartbeats.values():
            heartbeat.join()


def _seed_next(study: optuna.Study, last: list[optuna.Trial], size: int) -> int:
    """Enqueue the best quarter of the last generation's members (their sampled values) as the
    next generation's first members; how many."""
    numbers = {trial.number for trial in last}
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number in numbers and t.state == TrialState.COMPLETE and t.value is not None
    ]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    done.sort(key=lambda t: float(t.value or 0.0), reverse=maximize)  # type: ignore[arg-type]
    best = done[: max(1, size // 4)]
    for trial in best:
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return len(best)


def _ask(
    study: optuna.Study,
    objective: Objective,
    size: int,
    members: list[tuple[optuna.Trial, AdamConfig]],
    asked: dict[int, optuna.Trial],
    heartbeats: dict[int, Any],
    finish: Callable[..., None],
) -> None:
    """Ask ``size`` members from the sampler (the baseline first, where the study has one);
    a member whose sampling fails is told FAIL and the population goes on without it."""
    for index in range(size):
        with warnings.catch_warnings():  # heartbeats are sent below, as optimize sends them
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        asked[trial.number] = trial
        heartbeats[trial.number] = heartbeat_thread(study, trial)
        heartbeats[trial.number].start()
        objective.tracker.start_trial(trial.number)
        try:
            config = objective.begin(trial)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (sampling failed: this member fails)
            finish(trial, TrialOutcome("FAIL", reason=describe(exc)), TrainingLog())
            continue
        set_user_attrs(trial, {"member": index})
        members.append((trial, config))


def _train(
    study: optuna.Study,
    objective: Objective,
    members: list[tuple[optuna.Trial, AdamConfig]],
    rules: Rules,
    ended: Callable[[], bool],
    finish: Callable[..., None],
) -> None:
    """The population itself, then every member's record."""
    trials = [trial for trial, _ in members]
    metric = objective.task.metric_name
    baseline = [TRIAL_ATTR in t.user_attrs for t in _frozen(study, trials)]
    # The baseline, where it is a member, is an anchor: the anchors come first.
    order = sorted(range(len(members)), key=lambda i: not baseline[i])
    trials = [trials[i] for i in order]
    configs = [members[i][1] for i in order]
    rules = Rules(rules.interval, rules.quantile, max(rules.anchors, sum(baseline)))

    def on_epoch(epoch: int, evaluations: dict[int, Evaluation]) -> None:
        objective.show_stack([(trials[m].number, e) for m, e in evaluations.items()])
        report_all(
            [
                (trials[m], e.metrics[metric], e.epoch)
                for m, e in evaluations.items()
                if _finite(e.metrics.get(metric))
            ]
        )

    try:
        results = train_population(
            objective.task,
            configs,
            explore=Explorer(objective.space, random.Random(objective.seed + 1)),
            rules=rules,
            rng=random.Random(objective.seed),
            seed=objective.seed,
            epochs=objective.epochs,
            device=objective.device,
            precision=objective.precision,
            on_epoch=on_epoch,
            stop=ended,
            checked=True,
        )
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: every member fails with it)
        failed = TrialOutcome("FAIL", reason=describe(exc))
        for trial in trials:
            finish(trial, failed, TrainingLog())
        return
    numbers = [trial.number for trial in trials]
    for trial, result in zip(trials, results, strict=True):
        _record(trial, result, numbers, objective, finish)


def _record(
    trial: optuna.Trial,
    done: MemberResult,
    numbers: list[int],
    objective: Objective,
    finish: Callable[..., None],
) -> None:
    """One member's attributes and record (``numbers``: each member's trial number)."""
    member, result = done, done.result
    log = result.log
    total = log.total_steps
    schedule = member.member.schedule_config(total)
    set_user_attrs(
        trial,
        {
            "config": schedule.to_dict(),
            "anchor": member.member.anchor,
            "trajectory": [
                {"step": step, "config": values.to_dict()}
                for step, values in member.member.trajectory
            ],
            "lineage": [
                {
                    "step": e.step,
                    "epoch": e.epoch,
                    "copied": numbers[e.source],
                    "config": e.config.to_dict(),
                }
                for e in member.member.lineage
            ],
        },
    )
    first = member.member.trajectory[0][1]
    finish(
        trial,
        objective.outcome(result),
        log,
        config=first,
        hyperparameters=per_step(member.member.trajectory, total, len(log.learning_rates)),
    )


def per_step(
    trajectory: list[tuple[int, AdamConfig]], total_steps: int, taken: int
) -> dict[str, list[float]]:
    """beta1, beta2, eps and weight_decay at each of the ``taken`` steps, from a member's
    trajectory."""
    every = each_step(from_segments(trajectory, total_steps), total_steps)[:taken]
    return {name: [float(getattr(values, name)) for values in every] for name in PER_STEP}


def trajectory_values(trajectory: list[dict[str, Any]], steps: int) -> list[AdamConfig]:
    """A member's values at every step, from its ``trajectory`` user attribute."""
    segments = [(item["step"], AdamConfig.from_dict(item["config"])) for item in trajectory]
    return each_step(from_segments(segments, steps), steps)


def _frozen(study: optuna.Study, trials: list[optuna.Trial]) -> list[Any]:
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    return [by_number[t.number] for t in trials]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
