"""Confirmation: the top trials retrained under further seeds and ranked by their mean; the gain
every summary reports."""

from dataclasses import dataclass

import optuna
import pytest
from optuna.distributions import FloatDistribution

from adamtune.config.adam import AdamConfig
from adamtune.results.gain import (
    best_line,
    confirmed_line,
    gain_text,
    study_baseline,
    study_confirmation,
    summary_metrics,
)
from adamtune.results.report import gain_cell, gain_report
from adamtune.results.studies import exported_trial
from adamtune.search.confirm import confirm_study, confirmation_seeds
from adamtune.tasks import resolve_task
from adamtune.tracking import NullTracker
from adamtune.training.runner import Evaluated, Runner


@dataclass
class ScriptedRunner:
    """Each lr's value per seed, as the script says; records what it was asked to train."""

    task: object
    script: dict[float, dict[int, float | None]]

    def evaluate(self, configs, seeds, on_done=None, values=None, deadline=None):
        self.asked = (list(configs), list(seeds))
        return [
            [
                Evaluated(
                    seed,
                    v,
                    {"test_accuracy": v - 0.01} if v is not None else {},
                    "" if v is not None else "diverged: boom",
                )
                for seed in seeds
                for v in [self.script[c.lr][seed]]
            ]
            for c in configs
        ]


class Recorder(NullTracker):
    def __init__(self):
        self.runs = []

    def log_run(self, name, record):
        self.runs.append((name, record.state, record.params["seed"]))


def study_with(values_by_lr, baseline_lr=None):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("metric", "val_accuracy")
    for lr, value in values_by_lr.items():
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr},
                distributions={"lr": FloatDistribution(1e-5, 1.0, log=True)},
                value=value,
                user_attrs={"config": AdamConfig(lr=lr).to_dict(), "seed": 0},
            )
        )
    if baseline_lr is not None:
        study.set_user_attr(
            "baseline",
            {
                "label": "AdamW defaults",
                "config": AdamConfig(lr=baseline_lr, weight_decay=0.01).to_dict(),
                "how": "separate",
                "value": 0.5,
                "state": "COMPLETE",
            },
        )
    return study


def test_a_config_that_wins_its_search_run_but_loses_on_mean_is_not_the_winner():
    lucky, steady = 0.01, 0.002
    study = study_with({lucky: 0.9, steady: 0.8}, baseline_lr=1e-3)
    script = {
        lucky: {1: 0.85, 2: 0.60, 3: 0.62},  # wins seed 1, mean 0.69
        steady: {1: 0.80, 2: 0.79, 3: 0.81},  # mean 0.80
        1e-3: {1: 0.70, 2: 0.70, 3: 0.70},
    }
    runner = ScriptedRunner(resolve_task("wine-mlp"), script)
    tracker = Recorder()
    confirmation = confirm_study(study, runner, k=3, top=5, seed=0, tracker=tracker)
    assert confirmation.winner == 1  # the second trial
    assert [c.trial for c in confirmation.candidates] == [1, 0]
    assert confirmation.candidates[0].mean == pytest.approx(0.80)
    assert confirmation.baseline.mean == pytest.approx(0.70)
    assert confirmation.test_metric == "test_accuracy"
    assert runner.asked[1] == [1, 2, 3]  # further seeds, never the search's own
    assert len(tracker.runs) == 9 and ("confirm-trial-1-seed-2", "COMPLETE", 2) in tracker.runs
    assert ("confirm-baseline-seed-3", "COMPLETE", 3) in tracker.runs
    assert exported_trial(study).trial_number == 1  # export takes the confirmed winner
    assert exported_trial(study).chosen.startswith("the confirmed winner: mean val_accuracy 0.8")
    line = confirmed_line(confirmation, maximize=True)
    assert line == (
        "confirmed over 3 seeds: trial 1 0.8 ± 0.01 vs AdamW defaults 0.7 ± 0: +10.0 points; "
        "test_accuracy 0.79 ± 0.01 vs 0.69 ± 0: +10.0 points"
    )


def test_a_candidate_with_failed_seeds_ranks_after_those_without():
    study = study_with({0.1: 0.95, 0.01: 0.7})
    script = {0.1: {1: 0.99, 2: None}, 0.01: {1: 0.7, 2: 0.71}}
    confirmation = confirm_study(
        study,
        ScriptedRunner(resolve_task("wine-mlp"), script),
        k=2,
        top=2,
        seed=0,
        tracker=Recorder(),
    )
    assert confirmation.winner == 1
    assert confirmation.candidates[1].failed == 1
    assert study.user_attrs["confirmation"]["candidates"][1]["reasons"] == ["diverged: boom"]


def test_top_limits_the_candidates_and_the_baseline_trial_is_the_baseline_not_a_candidate():
    study = study_with({0.1: 0.9, 0.01: 0.8, 0.001: 0.7})
    study.set_user_attr(
        "baseline",
        {
            "label": "AdamW defaults",
            "config": AdamConfig(lr=0.5).to_dict(),
            "how": "trial",
            "trial": 9,
        },
    )
    script = {lr: {1: 0.5} for lr in (0.1, 0.01, 0.001, 0.5)}
    runner = ScriptedRunner(resolve_task("wine-mlp"), script)
    confirmation = confirm_study(study, runner, k=1, top=2, seed=0, tracker=Recorder())
    assert [c.trial for c in confirmation.candidates] == [0, 1]
    assert [c.lr for c in runner.asked[0]] == [0.1, 0.01, 0.5]
    assert confirmation.baseline.label == "AdamW defaults"


def test_nothing_to_confirm_without_a_completed_trial():
    study = optuna.create_study()
    assert (
        confirm_study(study, ScriptedRunner(None, {}), k=3, top=5, seed=0, tracker=Recorder())
        is None
    )
    assert "confirmation" not in study.user_attrs


def test_confirmation_seeds_are_new_and_wrap():
    assert confirmation_seeds(0, 3) == [1, 2, 3]
    assert confirmation_seeds(2**32 - 1, 2) == [0, 1]


@pytest.mark.parametrize(
    "gain, base, metric, maximize, text",
    [
        (0.082, 0.602, "val_accuracy", True, "+8.2 points"),
        (-0.01, 0.9, "val_accuracy", True, "-1.0 points"),
        (20.0, 100.0, "val_mse", False, "20.0% lower"),
        (-20.0, 100.0, "val_mse", False, "20.0% higher"),
        (1.0, 4.0, "val_perplexity", False, "25.0% lower"),
    ],
)
def test_gain_text(gain, base, metric, maximize, text):
    assert gain_text(gain, base, metric, maximize) == text


def test_the_best_line_says_how_much_better_than_the_baseline():
    study = study_with({0.01: 0.684}, baseline_lr=1e-3)
    study.set_user_attr("baseline", {**study.user_attrs["baseline"], "value": 0.602})
    baseline = study_baseline(study.user_attrs)
    assert best_line("val_accuracy", 0.684, 37, baseline, True) == (
        "best val_accuracy 0.684 (trial 37) vs AdamW defaults 0.602: +8.2 points"
    )
    assert gain_cell(study.user_attrs, 0.684, "val_accuracy", True) == "+8.2 points"
    metrics = summary_metrics(study.user_attrs, 0.684, True)
    assert metrics == {"baseline_value": 0.602, "gain": pytest.approx(0.082)}
    report = gain_report(study.user_attrs, study.best_trial, "val_accuracy", True)
    assert report.startswith("Best val_accuracy 0.684 (trial 0) vs AdamW defaults 0.602")


def test_a_baseline_without_a_value_says_why():
    attrs = {
        "baseline": {
            "label": "AdamW defaults",
            "config": {},
            "value": None,
            "reason": "diverged: x",
        }
    }
    line = best_line("val_accuracy", 0.7, 3, study_baseline(attrs), True)
    assert line == "best val_accuracy 0.7 (trial 3); AdamW defaults: no value (diverged: x)"
    assert gain_cell(attrs, 0.7, "val_accuracy", True) == ""


@pytest.mark.parametrize("attr", [None, "x", {"label": 3}, {"candidates": "no"}, []])
def test_attributes_adamtune_did_not_write_are_ignored(attr):
    attrs = {"baseline": attr, "confirmation": attr}
    assert study_baseline(attrs) is None and study_confirmation(attrs) is None
    assert summary_metrics(attrs, 0.5, True) == {}


@pytest.mark.slow
def test_stacked_and_lone_evaluations_agree_and_each_row_has_its_own_seed():
    task = resolve_task("wine-mlp")
    configs = [AdamConfig(lr=3e-3), AdamConfig(lr=1e-2)]
    stacked = Runner(task, epochs=3, rows=8).evaluate(configs, [1, 2])
    alone = Runner(task, epochs=3).evaluate(configs, [1, 2])
    for i in range(2):
        for j in range(2):
            assert stacked[i][j].seed == alone[i][j].seed == [1, 2][j]
            assert stacked[i][j].metrics["val_loss"] == pytest.approx(
                alone[i][j].metrics["val_loss"], rel=1e-5
            )
    # other seeds train other runs
    assert alone[0][0].metrics["val_loss"] != alone[0][1].metrics["val_loss"]
