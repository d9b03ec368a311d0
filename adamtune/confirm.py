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

from typing import Any

import optuna

from adamtune.baseline import TRIAL_ATTR
from adamtune.config import AdamConfig
from adamtune.evaluations import Evaluated, Runner
from adamtune.gain import Confirmation, mean_sd, study_baseline, study_confirmation
from adamtune.report import config_rows
from adamtune.settings import SEED_LIMIT
from adamtune.studies import best_first, maximizes, trial_config
from adamtune.tracking import Tracker, TrialRecord

STUDY_ATTR = "confirmation"


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
) -> Confirmation | None:
    """Retrain the ``top`` best completed trials (and the baseline) under ``k`` seeds, store the
    ranking on the study and return it; None when no trial completed."""
    trials = study.get_trials(deepcopy=False)
    maximize = maximizes(study)
    ranked = [t for t in best_first(trials, maximize) if TRIAL_ATTR not in t.user_attrs]
    chosen = [t for t in ranked if trial_config(t)][:top]
    if not chosen:
        return None
    configs = [AdamConfig.from_dict(trial_config(t), source=f"trial {t.number}") for t in chosen]
    labels: list[tuple[str, int | None, float | None]] = [
        (f"trial {t.number}", t.number, t.value) for t in chosen
    ]
    baseline = study_baseline(study.user_attrs)
    if baseline is not None and baseline.config:
        configs.append(AdamConfig.from_dict(baseline.config, source="baseline"))
        labels.append((baseline.label, baseline.trial, baseline.value))
    seeds = confirmation_seeds(seed, k)
    results = runner.evaluate(configs, seeds)
    metric = runner.task.metric_name
    test_metric = _test_metric(metric, results)
    candidates = []
    for (label, number, value), config, runs in zip(labels, configs, results, strict=True):
        for run in runs:
            tracker.log_run(
                _run_name(label, number, run.seed), run_record(run, number, config, metric)
            )
        candidates.append(_candidate(label, number, value, runs, test_metric))
    base = candidates.pop() if baseline is not None and baseline.config else None
    candidates.sort(key=lambda c: _rank(c, maximize))
    study.set_user_attr(
        STUDY_ATTR,
        {
            "metric": metric,
            "test_metric": test_metric,
            "seeds": seeds,
            "top": top,
            "candidates": candidates,
            "baseline": base,
            "winner": candidates[0]["trial"],
        },
    )
    return study_confirmation(study.user_attrs)


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
    curves: bool = False,
) -> TrialRecord:
    """A run that is no trial, as the tracker records it (``role`` tags it in MLflow): its
    final metrics (test included) at its last step, and with ``curves`` its per-step lr,
    loss and gradient norm and every evaluation. A confirmation run is a replicate of a trial
    whose own run has the curves; logging them again would cost ~0.2 s a run after the
    search, while the user waits."""
    log = run.log
    if curves:
        evaluations = [(e.epoch, e.step, e.metrics) for e in log.evaluations]
    else:
        last = log.evaluations[-1] if log.evaluations else None
        evaluations = [(last.epoch, last.step, run.metrics)] if last is not None else []
    return TrialRecord(
        number=number if number is not None else -1,
        state="COMPLETE" if run.value is not None else "FAIL",
        reason=run.reason,
        params={**dict(config_rows(config.to_dict())), "seed": run.seed, "role": role},
        value=run.value,
        metric_name=metric,
        learning_rates=log.learning_rates if curves else [],
        train_losses=log.train_losses if curves else [],
        evaluations=evaluations,
        grad_norms=log.grad_norms if curves else [],
    )
