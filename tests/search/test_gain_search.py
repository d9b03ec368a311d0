"""A search measured against its baseline, end to end: the baseline trial, a baseline outside
the space, --no-baseline, resume, confirmation, and the gain in search, show, studies and
MLflow."""

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from adamtune.cli.app import cli
from adamtune.config.adam import AdamConfig
from adamtune.config.settings import SearchSettings
from adamtune.search.run import run_search

pytestmark = pytest.mark.slow


def settings(storage, **overrides):
    base = dict(task="wine-mlp", n_trials=4, epochs=2, storage=storage, confirm=0, pruner="none")
    return SearchSettings(**{**base, **overrides})


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("stack", [1, 4])
def test_a_new_study_first_trains_the_baseline_as_trial_0(storage, stack):
    said = []
    study = run_search(settings(storage, stack=stack), warn=said.append)
    first = study.trials[0]
    assert first.user_attrs["baseline"] == "AdamW defaults"
    assert AdamConfig.from_dict(first.user_attrs["config"]) == AdamConfig(weight_decay=0.01)
    assert first.state == optuna.trial.TrialState.COMPLETE
    recorded = study.user_attrs["baseline"]
    assert recorded["how"] == "trial" and recorded["trial"] == 0
    assert recorded["value"] == first.value and recorded["state"] == "COMPLETE"
    assert len(study.trials) == 4  # the baseline is one of the --n-trials
    assert "Baseline: AdamW defaults, trial 0." in said
    assert all("baseline" not in t.user_attrs for t in study.trials[1:])


def test_no_baseline_and_resume_add_none(storage):
    study = run_search(settings(storage, baseline=False, n_trials=2, study_name="off"))
    assert "baseline" not in study.user_attrs
    assert all("baseline" not in t.user_attrs for t in study.trials)
    run_search(settings(storage, n_trials=1))
    resumed = run_search(settings(storage, n_trials=2))
    assert sum("baseline" in t.user_attrs for t in resumed.trials) == 1
    assert len(resumed.trials) == 3


def test_a_baseline_outside_the_space_is_evaluated_apart_and_never_told_to_the_sampler(
    storage, tmp_path
):
    space = write(tmp_path, "lr: {low: 1.0e-2, high: 1.0e-1}\n")
    said = []
    study = run_search(settings(storage, space=space), warn=said.append)
    assert (
        "Baseline: AdamW defaults, outside the space; evaluating it apart from the search." in said
    )
    recorded = study.user_attrs["baseline"]
    assert recorded["how"] == "separate" and recorded["state"] == "COMPLETE"
    assert 0 < recorded["value"] <= 1 and "val_loss" in recorded["metrics"]
    assert len(study.trials) == 4
    assert all(1e-2 <= t.params["lr"] <= 1e-1 for t in study.trials)


def test_a_baseline_that_diverges_is_recorded_with_its_reason(storage, tmp_path):
    space = write(tmp_path, "lr: {low: 1.0e-3, high: 1.0e-2}\nbaseline: {lr: 1.0e+6}\n")
    study = run_search(settings(storage, space=space, n_trials=2))
    recorded = study.user_attrs["baseline"]
    assert recorded["value"] is None and recorded["state"] == "FAIL"
    assert recorded["reason"].startswith("diverged")
    assert len(study.trials) == 2  # the study went on


def test_confirmation_stores_the_ranking_and_the_cli_reports_the_gain(in_tmp):
    runner = CliRunner()
    args = ["--task", "wine-mlp", "--epochs", "2", "--n-trials", "4", "--pruner", "none"]
    result = runner.invoke(
        cli, ["search", *args, "--confirm", "2", "--confirm-top", "2", "--no-tracking"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Best val_accuracy" in out and "vs AdamW defaults" in out
    assert "Confirmed over 2 seeds: trial " in out
    assert "mean ± sd over 2 seeds" in out and "AdamW defaults" in out
    study = optuna.load_study(study_name="wine-mlp-default", storage="sqlite:///adamtune.db")
    confirmation = study.user_attrs["confirmation"]
    assert confirmation["seeds"] == [1, 2] and len(confirmation["candidates"]) == 2
    assert all(len(c["values"]) == 2 for c in confirmation["candidates"])
    assert confirmation["baseline"]["label"] == "AdamW defaults"
    assert confirmation["candidates"][0]["trial"] != 0  # the baseline trial is the baseline
    shown = runner.invoke(cli, ["show", "wine-mlp-default"])
    assert "Confirmed over 2 seeds" in shown.output and "vs AdamW defaults" in shown.output
    listing = runner.invoke(cli, ["studies"])
    assert "gain" in listing.output.splitlines()[0] and "(confirmed)" in listing.output
    exported = runner.invoke(cli, ["export", "wine-mlp-default"])
    winner = confirmation["winner"]
    assert f"Exported trial {winner}, the confirmed winner" in exported.stderr
    assert f"trial {winner}:" in exported.stdout.splitlines()[1]
    assert "# the confirmed winner: mean val_accuracy" in exported.stdout


def test_the_mlflow_parent_run_has_the_gain_and_a_run_per_confirmation_seed(storage, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = run_search(
        settings(storage, tracking_uri=uri, confirm=2, confirm_top=2, study_name="tracked")
    )
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    metrics = parent.data.metrics
    assert metrics["baseline_value"] == study.trials[0].value
    assert metrics["gain"] == pytest.approx(study.best_value - study.trials[0].value)
    assert {"confirmed_mean", "confirmed_sd", "baseline_confirmed_mean", "confirmed_gain"} <= set(
        metrics
    )
    confirm_runs = [r for r in runs if r.data.tags.get("adamtune.role") == "confirm"]
    assert len(confirm_runs) == 6  # (2 trials + the baseline) x 2 seeds
    names = {r.info.run_name for r in confirm_runs}
    assert "confirm-baseline-trial-0-seed-1" in names
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in confirm_runs)
    assert all(r.info.status == "FINISHED" for r in confirm_runs)
    baseline_run = next(r for r in runs if r.info.run_name == "trial-0")
    assert baseline_run.data.params["baseline"] == "AdamW defaults"
    assert parent.data.tags["adamtune.exported_trial"] == str(
        study.user_attrs["confirmation"]["winner"]
    )
