"""Reliability round 4, one test (or a few) per cause: exports that cannot run code, no
password in any line, nothing left RUNNING, a user's error reported as the user's, claims that
expire with their holder, and the smaller gaps."""

import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from adamtune.cli.app import cli
from adamtune.cli.search_command import without_a_completed_trial
from adamtune.config.adam import AdamConfig
from adamtune.results.export import ExportedTrial, comment_text, python_literal, render
from adamtune.storage import claims
from adamtune.storage.claims import claim_name, claim_state, is_claim, take

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))
EVIL = [
    "acc\nimport os; os.system('echo pwned')\n#",
    "acc\r__import__('os').system('echo pwned')",
    'acc"""\n__import__("os")\n"""',
    "acc'''\n__import__('os')\n'''",
    "acc\x0b__import__('os')\u2028__import__('os')",
]


def exported(**overrides):
    base = dict(
        study_name="s",
        trial_number=3,
        value=0.91,
        metric="val_accuracy",
        direction="maximize",
        config=AdamConfig(lr=3e-3),
        total_steps=100,
        seed=0,
        task="digits-mlp",
    )
    return ExportedTrial(**{**base, **overrides})


def runs_clean(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# 1. code injection through an export -------------------------------------------------------


@pytest.mark.parametrize("metric", EVIL)
@pytest.mark.parametrize("fmt", ["torch", "adamtune", "hf", "lightning", "yaml"])
def test_a_metric_name_in_the_confirmed_winners_line_cannot_become_code(tmp_path, metric, fmt):
    chosen = f"the confirmed winner: mean {metric} 0.9 (sd 0.01) over 3 further seeds"
    text = render(exported(metric=metric, chosen=chosen, study_name=metric, task=metric), fmt)
    assert "pwned" not in runs_clean_or_loads(tmp_path, text, fmt)
    # every line that holds the name is a comment (or a quoted literal), whatever it held
    for line in text.splitlines():
        if "__import__" in line or "pwned" in line:
            assert line.lstrip().startswith("#") or fmt == "yaml", line


def runs_clean_or_loads(tmp_path: Path, text: str, fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        assert yaml.safe_load(text)["metric"]  # a comment header, then data
        return ""
    path = tmp_path / "exported.py"
    path.write_text(text)
    return runs_clean(path)


def test_comment_text_escapes_every_line_break():
    for text in EVIL:
        assert len(("# " + comment_text(text)).splitlines()) == 1


# 10. NaN and infinities among the user's values ---------------------------------------------


def test_nan_and_infinite_values_export_as_code_that_imports(tmp_path):
    values = {"a": math.nan, "b": math.inf, "c": -math.inf, "name\n'x'": "v\n'''"}
    path = tmp_path / "exported.py"
    path.write_text(render(exported(values=values), "torch"))
    out = subprocess.run(
        [sys.executable, "-c", f"exec(open({str(path)!r}).read()); print(repr(VALUES))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == repr(
        {"a": math.nan, "b": math.inf, "c": -math.inf, "name\n'x'": "v\n'''"}
    )
    assert python_literal(math.nan) == "float('nan')"


# 10. export -o DIR/ and the file's mode -----------------------------------------------------


@pytest.fixture
def finished_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="my/study", storage=storage, direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.set_user_attr("config", AdamConfig(lr=0.01).to_dict())
    study.tell(trial, 0.5)
    return storage


def test_export_into_a_directory_names_the_file_and_uses_the_umask(tmp_path, finished_study):
    out = tmp_path / "exports"
    out.mkdir()
    previous = os.umask(0o022)
    try:
        result = CliRunner().invoke(
            cli, ["export", "my/study", "--storage", finished_study, "-o", f"{out}/"]
        )
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    written = out / "my_study-trial0.py"
    assert written.is_file(), list(out.iterdir())
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    again = CliRunner().invoke(
        cli, ["export", "my/study", "--storage", finished_study, "-o", str(out), "--format", "json"]
    )
    assert again.exit_code == 0 and (out / "my_study-trial0.json").is_file()


def test_export_into_a_directory_that_does_not_exist_is_one_line(tmp_path, finished_study):
    result = CliRunner().invoke(
        cli, ["export", "my/study", "--storage", finished_study, "-o", f"{tmp_path}/nope/"]
    )
    assert result.exit_code == 1
    assert "directory does not exist" in result.output and "nope" in result.output
    assert not (tmp_path / "nope").exists()


# 6. no COMPLETE trial at the end of the command ---------------------------------------------


def _study_with(states):
    study = optuna.create_study(direction="maximize")
    for state in states:
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        if state == TrialState.PRUNED:
            trial.report(0.5, 1)  # pruned after a report: it has an intermediate value
        if state != TrialState.RUNNING:
            study.tell(trial, state=state)
    return study


def test_every_trial_pruned_after_a_report_is_one_line_and_exit_1():
    message, code = without_a_completed_trial(_study_with([TrialState.PRUNED] * 3))
    assert code == 1 and "3 pruned" in message and "completed" in message


def test_trials_still_running_elsewhere_say_the_study_goes_on():
    message, code = without_a_completed_trial(
        _study_with([TrialState.PRUNED, TrialState.RUNNING, TrialState.RUNNING])
    )
    assert code == 0 and "2 still running in other processes" in message and "1 pruned" in message


def test_a_study_with_a_complete_trial_has_an_answer():
    study = _study_with([TrialState.PRUNED])
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert without_a_completed_trial(study) is None


@pytest.mark.slow
def test_a_search_whose_every_trial_was_pruned_ends_in_one_line(tmp_path):
    """The pruner prunes every trial after its first report: the end of the command says so,
    with no traceback ("Record does not exist" at study.best_trial before)."""
    (tmp_path / "task.py").write_text(PRUNED_TASK)
    result = subprocess.run(
        [ADAMTUNE, "search", "--task", "task.py:train", "--n-trials", "3", "--no-tracking"]
        + ["--no-baseline", "--stack", "1", "--confirm", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "3 pruned" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


PRUNED_TASK = """
import optuna
import torch


def train(trial):  # the user's own loop: every trial is pruned after its first report
    model = torch.nn.Linear(4, 2)
    optimizer = trial.optimizer(model.parameters())
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    trial.report(0.5, 0)
    raise optuna.TrialPruned()
"""


# 7, 8. claims: a fixed-length name, released on interrupt, taken over from a dead holder ----


def test_claim_names_have_a_fixed_length_whatever_the_study_name():
    long = "s" * 512
    assert len(claim_name(long, "confirm-12")) == len(claim_name("s", "population")) < 64
    assert claim_name(long, "confirm-1") != claim_name(long, "confirm-2")
    assert is_claim(claim_name(long, "confirm-1"))


def test_a_users_study_named_like_a_claim_is_not_hidden():
    assert not is_claim("mine.adamtune-claim.study", {"mine"})
    assert not is_claim("x.adamtune-claim.population", {"other"})
    assert is_claim("x.adamtune-claim.population", {"x"})  # an old marker beside its study


def test_an_interrupted_claim_is_released_and_a_finished_one_kept(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    held = take(study, "confirm-3")
    assert held is not None and take(study, "confirm-3") is None  # held: nobody else
    with pytest.raises(KeyboardInterrupt), held.held():
        raise KeyboardInterrupt
    assert claim_state(study, "confirm-3") == "free"
    again = take(study, "confirm-3")
    assert again is not None
    with again.held():
        pass
    assert claim_state(study, "confirm-3") == "done" and take(study, "confirm-3") is None


def test_a_claim_whose_holder_went_silent_is_taken_over(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    assert take(study, "confirm-3") is not None  # then the holder is killed: no more beats
    assert take(study, "confirm-3") is None
    monkeypatch.setattr(claims, "STALE_SECONDS", 0.0)
    time.sleep(0.01)
    assert take(study, "confirm-3") is not None


@pytest.mark.postgres
def test_claims_of_a_512_character_study_name_work_on_postgres(postgres_url):
    study = optuna.create_study(study_name="s" * 512, storage=postgres_url)
    held = take(study, "confirm-12")
    assert held is not None
    with held.held():
        pass
    assert claim_state(study, "confirm-12") == "done"


@pytest.mark.slow
def test_n_trials_0_confirms_a_study_whose_confirmation_was_interrupted(tmp_path):
    quick = ["--task", "wine-mlp", "--epochs", "1", "--no-tracking", "--space", "lr-only"]
    first = subprocess.run(
        [ADAMTUNE, "search", *quick, "--n-trials", "3", "--confirm", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    # an interrupted confirmation: the claim was taken, then given back by the interrupt
    storage = f"sqlite:///{tmp_path / 'adamtune.db'}"
    study = optuna.load_study(study_name="wine-mlp-lr-only", storage=storage)
    held = take(study, "confirm-3")
    assert held is not None
    with pytest.raises(KeyboardInterrupt), held.held():
        raise KeyboardInterrupt
    again = subprocess.run(
        [ADAMTUNE, "search", *quick, "--n-trials", "0", "--confirm", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "Confirmed over 2 seeds" in again.stdout, again.stdout + again.stderr
