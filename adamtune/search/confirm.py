"""``--confirm K``: retrain a study's top trials, and its baseline, under K further seeds.

A search's best trial is the best of many noisy single runs, so its value is optimistic (the
winner's curse: on a small validation split one configuration moves by points from seed to
seed). Confirmation retrains the top trials with K new seeds each (new initial weights, new
batch order), ranks them by their mean over those seeds alone (the search's own run, the one
they were selected on, is left out of the mean) and names the best mean the winner. The
baseline gets the same seeds, so the confirmed gain compares like with like.

The result is the study user attribute ``confirmation`` (see adamtune.gain), and every run is
logged to the tracker as a run of its own under the study's parent run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.config.adam import AdamConfig
from adamtune.config.settings import SEED_LIMIT, SearchSettings
from adamtune.results.gain import Confirmation, mean_sd, study_baseline, study_confirmation
from adamtune.results.report import config_rows
from adamtune.results.studies import best_first, maximizes, population_candidates, trial_config
from adamtune.search.budget import Budget
from adamtune.space.baseline import TRIAL_ATTR
from adamtune.storage.claims import Claim, claim_state, take
from adamtune.storage.optuna_private import fail_stale
from adamtune.tracking import Tracker, TrialRecord
from adamtune.training.runner import OUT_OF_TIME, Evaluated, Runner
from adamtune.training.single import Evaluation

STUDY_ATTR = "confirmation"
DEFAULT_TOP = 5  # --confirm-top when not given, before the cost cap
COST_SHARE = 0.5  # by default confirmation trains at most this share of the search's epochs
RunProgress = Callable[[int, int, str], None]  # (runs done, runs in all, the best mean so far)


def confirmation_turn(study: optuna.Study, say: Callable[[str], None]) -> Claim | None:
    """Is it this process's turn to confirm the study? The claim to hold while confirming if so.

    Several processes may share the study; confirmation must run once, over the finished
    study. A process whose search is over while trials of other processes still run leaves it
    to them (the last one to finish sees none running); of processes finishing together,
    the one that claims ``confirm-N`` (N finished trials, adamtune.storage.claims) confirms, so
    a study resumed with more trials is confirmed again, over all of them. A confirmation that
    was interrupted, or whose process died, is claimed again by the next process."""
    fail_stale(study)  # a dead worker's trials are not running
    trials = study.get_trials(deepcopy=False)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if running:
        say(
            f"Confirmation: {running} trial{'s' if running != 1 else ''} of study "
            f"{study.study_name!r} still running in other processes; the last process to finish "
            "confirms the whole study (or, once all are done, run the same command with "
            "--n-trials 0)."
        )
        return None
    finished = sum(t.state.is_finished() for t in trials)
    turn = take(study, f"confirm-{finished}")
    if turn is None and claim_state(study, f"confirm-{finished}") == "done":
        say(
            f"Confirmation: the {finished} finished trials of study {study.study_name!r} are "
            "confirmed already (`adamtune show` names the winner)."
        )
    elif turn is None:
        say(
            f"Confirmation: another process confirms the {finished} finished trials of study "
            f"{study.study_name!r}; its summary names the confirmed winner "
            "(`adamtune show` once it is done)."
        )
    return turn


def trial_epochs(trials: list[FrozenTrial]) -> int:
    """Epochs the search trained: each finished trial's reported evaluations (one a trial
    that reported none)."""
    return sum(max(1, len(t.intermediate_values)) for t in trials if t.state.is_finished())


def affordable_top(search_epochs: int, k: int, epochs: int, share: float = COST_SHARE) -> int:
    """How many top trials K seeds can confirm, with the baseline, within ``share`` of the
    search's trial-epochs: at most DEFAULT_TOP, never fewer than the winner alone."""
    candidates = math.floor(share * search_epochs / max(1, k * epochs))
    return max(1, min(DEFAULT_TOP, candidates - 1))


def confirmation_seeds(seed: int, k: int) -> list[int]:
    """K seeds the search never trained with: seed + 1, ..., seed + K."""
    return [(seed + 1 + i) % SEED_LIMIT for i in range(k)]


def confirm_study(
    study: optuna.Study,
    runner: Runner,
    *,
    k: int,
    top: int,
    seed: int,
    tracker: Tracker,
    on_run: RunProgress | None = None,
    say: Callable[[str], None] = lambda message: None,
    chosen: list[tuple[FrozenTrial, str]] | None = None,
    deadline: float | None = None,
) -> Confirmation | None:
    """Retrain the ``top`` best completed trials (and the baseline) under ``k`` seeds, store the
    ranking on the study and return it; None when no trial completed. ``on_run(done, total,
    best)`` follows the runs as they finish. A candidate with no finished run cannot win:
    where none has one, the study gets no winner and ``say`` tells why."""
    trials = study.get_trials(deepcopy=False)
    maximize = maximizes(study)
    if chosen is None:
        ranked = [t for t in best_first(trials, maximize) if TRIAL_ATTR not in t.user_attrs]
        chosen = [(t, "") for t in ranked if trial_config(t)][:top]
    roles = [role for _, role in chosen]
    chosen_trials = [t for t, _ in chosen]
    if not chosen_trials:
        return None
    return _confirm(
        study,
        trials,
        maximize,
        chosen_trials,
        roles,
        runner,
        k,
        top,
        seed,
        tracker,
        on_run,
        say,
        deadline,
    )


def _confirm(
    study: optuna.Study,
    trials: list[FrozenTrial],
    maximize: bool,
    chosen: list[FrozenTrial],
    roles: list[str],
    runner: Runner,
    k: int,
    top: int,
    seed: int,
    tracker: Tracker,
    on_run: RunProgress | None,
    say: Callable[[str], None],
    deadline: float | None = None,
) -> Confirmation | None:
    """Retrain ``chosen`` (and the baseline) under ``k`` seeds; see confirm_study. ``trials``:
    the study's, as read once there."""
    configs = [AdamConfig.from_dict(trial_config(t), source=f"trial {t.number}") for t in chosen]
    labels: list[tuple[str, int | None, float | None]] = [
        (f"trial {t.number}", t.number, t.value) for t in chosen
    ]
    values = [dict(t.user_attrs.get("values") or {}) for t in chosen]
    baseline = study_baseline(study.user_attrs)
    if baseline is not None and baseline.config:
        configs.append(AdamConfig.from_dict(baseline.config, source="baseline"))
        labels.append((baseline.label, baseline.trial, baseline.value))
        own = [t for t in trials if t.number == baseline.trial]
        values.append(dict(own[0].user_attrs.get("values") or {}) if own else {})
    seeds = confirmation_seeds(seed, k)
    started = time.time()
    if on_run is None:
        results = runner.evaluate(configs, seeds, values=values, deadline=deadline)
    else:
        epochs = runner.epochs or runner.task.epochs
        follow = _Follow(labels, len(chosen), len(configs) * k, epochs, maximize, on_run)
        results = runner.evaluate(
            configs,
            seeds,
            on_done=follow.done,
            on_eval=follow.epoch,
            values=values,
            deadline=deadline,
        )
    seeds, results = _in_time(seeds, results, say)
    metric = runner.task.metric_name
    test_metric = _test_metric(metric, results)
    candidates = []
    for (label, number, value), config, runs in zip(labels, configs, results, strict=True):
        for run in runs:
            tracker.log_run(
                _run_name(label, number, run.seed), run_record(run, number, config, metric)
            )
        candidates.append(_candidate(label, number, value, runs, test_metric))
    for candidate, role in zip(candidates, roles, strict=False):  # the baseline has none
        if role:
            candidate["role"] = role
    base = candidates.pop() if baseline is not None and baseline.config else None
    candidates.sort(key=lambda c: _rank(c, maximize))
    winner = candidates[0]["trial"] if candidates[0]["mean"] is not None else None
    if winner is None:
        first = next((r for c in candidates for r in c["reasons"]), "no run finished")
        say(
            f"Confirmation: none of the {len(candidates)} candidates finished a run under "
            f"seeds {', '.join(map(str, seeds))} (first: {first}); there is no confirmed "
            "winner, and `adamtune export` exports the search's best trial."
        )
    study.set_user_attr(
        STUDY_ATTR,
        {
            "metric": metric,
            "test_metric": test_metric,
            "seeds": seeds,
            "top": top,
            "candidates": candidates,
            "baseline": base,
            "winner": winner,
            "finished_trials": sum(t.state.is_finished() for t in trials),
            "seconds": round(time.time() - started, 1),
        },
    )
    return study_confirmation(study.user_attrs)


def _in_time(
    seeds: list[int], results: list[list[Evaluated]], say: Callable[[str], None]
) -> tuple[list[int], list[list[Evaluated]]]:
    """The seeds that every candidate trained before the budget ran out: a seed some did not
    finish in time is left out for all, so the means compare the same seeds."""
    late = {j for runs in results for j, run in enumerate(runs) if run.reason == OUT_OF_TIME}
    if not late:
        return seeds, results
    kept = [j for j in range(len(seeds)) if j not in late]
    say(
        f"Confirmation: the budget ran out before seed{'s' if len(late) > 1 else ''} "
        f"{', '.join(str(seeds[j]) for j in sorted(late))} finished for every candidate; "
        f"{'the means compare seeds ' + ', '.join(str(seeds[j]) for j in kept) if kept else 'no seed finished'}."
    )
    return [seeds[j] for j in kept], [[runs[j] for j in kept] for runs in results]


class _Follow:
    """Confirmation's progress for ``on_run``: runs done, the best mean of a searched trial so
    far, and, while a stack's rows are still training, their epoch."""

    def __init__(
        self,
        labels: list[tuple[str, int | None, float | None]],
        searched: int,
        total: int,
        epochs: int,
        maximize: bool,
        on_run: RunProgress,
    ) -> None:
        self.labels, self.searched, self.total, self.epochs = labels, searched, total, epochs
        self.maximize, self.on_run = maximize, on_run
        self.values: dict[int, list[float]] = {}
        self.finished = 0
        self.at_epoch = 0
        on_run(0, total, "")

    def done(self, i: int, run: Evaluated) -> None:
        self.finished += 1
        if run.value is not None:
            self.values.setdefault(i, []).append(run.value)
        self.on_run(self.finished, self.total, self._best())

    def epoch(self, evaluation: Evaluation) -> None:
        if evaluation.epoch > self.at_epoch:
            self.at_epoch = evaluation.epoch
            best = self._best()
            where = f"epoch {evaluation.epoch}/{self.epochs}"
            self.on_run(self.finished, self.total, f"{best}, {where}" if best else where)

    def _best(self) -> str:
        means = {j: sum(v) / len(v) for j, v in self.values.items() if j < self.searched}
        if not means:
            return ""
        j = (max if self.maximize else min)(means, key=means.__getitem__)
        return f"best mean {means[j]:.4g} ({self.labels[j][0]})"


def _rank(candidate: dict[str, Any], maximize: bool) -> tuple[int, float]:
    """Fewest failed runs first, then the best mean."""
    values = candidate["values"]
    failed = sum(v is None for v in values)
    mean = candidate["mean"]
    if mean is None:
        return failed, float("inf")
    return failed, -mean if maximize else mean


def _candidate(
    label: str,
    number: int | None,
    search_value: float | None,
    runs: list[Evaluated],
    test_metric: str | None,
) -> dict[str, Any]:
    values = [run.value for run in runs]
    tests = [
        run.metrics.get(test_metric) if test_metric and run.value is not None else None
        for run in runs
    ]
    mean, sd = mean_sd(values)
    test_mean, test_sd = mean_sd(tests)
    return {
        "label": label,
        "trial": number,
        "search_value": search_value,
        "values": values,
        "mean": mean,
        "sd": sd,
        "reasons": [run.reason for run in runs if run.reason],
        "test_values": tests if test_metric else [],
        "test_mean": test_mean,
        "test_sd": test_sd,
    }


def _test_metric(metric: str, results: list[list[Evaluated]]) -> str | None:
    """``test_accuracy`` beside ``val_accuracy`` when the task has a test split."""
    if not metric.startswith("val_"):
        return None
    name = "test_" + metric.removeprefix("val_")
    seen = any(name in run.metrics for runs in results for run in runs)
    return name if seen else None


def _run_name(label: str, number: int | None, seed: int) -> str:
    who = f"trial-{number}" if number is not None else "baseline"
    if label != f"trial {number}" and number is not None:
        who = f"baseline-trial-{number}"
    return f"confirm-{who}-seed-{seed}"


def run_record(
    run: Evaluated,
    number: int | None,
    config: AdamConfig,
    metric: str,
    role: str = "confirm",
) -> TrialRecord:
    """A run that is no trial, as the tracker records it (``role`` tags it in MLflow): the
    same record as a trial's (per-step lr, loss and gradient norm, every evaluation, the test
    split's metrics at the end) with the run's own start and end times."""
    log = run.log
    return TrialRecord(
        number=number if number is not None else -1,
        state="COMPLETE" if run.value is not None else "FAIL",
        reason=run.reason,
        params={**dict(config_rows(config.to_dict())), "seed": run.seed, "role": role},
        value=run.value,
        metric_name=metric,
        learning_rates=log.learning_rates,
        train_losses=log.train_losses,
        evaluations=[(e.epoch, e.step, e.metrics) for e in log.evaluations],
        grad_norms=log.grad_norms,
        step_metrics=log.step_metrics,
        final_metrics=run.metrics,
        started=run.started,
        ended=run.ended,
    )


def confirm_finished_study(
    study: optuna.Study,
    runner: Runner,
    settings: SearchSettings,
    tracker: Tracker,
    say: Callable[[str], None],
    on_run: RunProgress | None = None,
    budget: Budget | None = None,
) -> None:
    """``--confirm K``, once per finished study (adamtune.search.confirm.confirmation_turn): the top
    trials and the baseline under K further seeds. Without ``--confirm-top`` at most
    DEFAULT_TOP trials, fewer where they would train more than half the search's epochs."""
    turn = confirmation_turn(study, say)
    if turn is None:
        return
    with turn.held():
        _confirm_finished(study, runner, settings, tracker, say, on_run, budget)


def _confirm_finished(
    study: optuna.Study,
    runner: Runner,
    settings: SearchSettings,
    tracker: Tracker,
    say: Callable[[str], None],
    on_run: RunProgress | None,
    budget: Budget | None,
) -> None:
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return  # nothing to confirm: no "Confirming ..." line before "no trial completed"
    if study.user_attrs.get("strategy") == "pbt":
        _confirm_population(study, runner, settings, tracker, say, on_run, budget)
        return
    seeds = settings.confirm
    top = settings.confirm_top
    epochs = runner.epochs or runner.task.epochs
    deadline = budget.deadline if budget is not None else None
    if budget is not None and budget.seconds is not None:
        size = budget.confirmation_size(top or DEFAULT_TOP, seeds, epochs)
        if isinstance(size, str):
            say(size)
            return
        if size != (top or DEFAULT_TOP, seeds):
            say(
                f"Confirmation: the top {size[0]} under {size[1]} seeds, what fits in the "
                "budget's last share at the search's speed."
            )
        top, seeds = size
    if top is None:
        trials = study.get_trials(deepcopy=False)
        searched = trial_epochs(trials)
        epochs = runner.epochs or runner.task.epochs
        top = affordable_top(searched, seeds, epochs)
        if top < DEFAULT_TOP and sum(t.state == TrialState.COMPLETE for t in trials) > top:
            say(
                f"Confirmation: the top {top} instead of {DEFAULT_TOP}, so that it trains at "
                f"most half of the search's {searched} trial-epochs ({seeds} seeds x "
                f"{epochs} epochs a candidate); --confirm-top {DEFAULT_TOP} confirms "
                f"{DEFAULT_TOP}."
            )
    say(
        f"Confirming the top {top} trial{'s' if top != 1 else ''} and the baseline under {seeds} "
        f"further seed{'s' if seeds != 1 else ''}..."
    )
    confirm_study(
        study,
        runner,
        k=seeds,
        top=top,
        seed=settings.seed,
        tracker=tracker,
        on_run=on_run,
        say=say,
        deadline=deadline,
    )


def _confirm_population(
    study: optuna.Study,
    runner: Runner,
    settings: SearchSettings,
    tracker: Tracker,
    say: Callable[[str], None],
    on_run: RunProgress | None,
    budget: Budget | None = None,
) -> None:
    """Replay the population's winner from scratch (its exported schedule, as a user runs it)
    beside its best fixed configuration and the baseline, under K further seeds."""
    chosen = population_candidates(study, TRIAL_ATTR)
    seeds = settings.confirm
    what = f"the schedule of trial {chosen[0][0].number}"
    if chosen[0][1] == "fixed":
        what = f"trial {chosen[0][0].number} (never exploited: a fixed configuration)"
    elif len(chosen) > 1:
        what += f", the best fixed configuration (trial {chosen[1][0].number})"
    say(
        f"Confirming {what} and the baseline from scratch under {seeds} further "
        f"seed{'s' if seeds != 1 else ''}..."
    )
    confirm_study(
        study,
        runner,
        k=seeds,
        top=len(chosen),
        seed=settings.seed,
        tracker=tracker,
        on_run=on_run,
        say=say,
        chosen=chosen,
        deadline=budget.deadline if budget is not None else None,
    )
