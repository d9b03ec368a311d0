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
import torch
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


# 5. a stack refused mid-search stops the search instead of asking again forever -------------


def test_a_stack_refused_after_the_search_began_stops_it_in_one_line(storage, monkeypatch):
    from adamtune.config.settings import SearchSettings
    from adamtune.errors import TaskError
    from adamtune.search.run import run_search
    from adamtune.training.stacked import model

    calls = []

    def changes_its_mind(task):
        calls.append(task)
        if len(calls) > 50:  # the old search asked again forever: stop it, as a failure
            raise KeyboardInterrupt
        return None if len(calls) == 1 else "its model changed between builds"

    monkeypatch.setattr(model, "why_not_stackable", changes_its_mind)
    settings = SearchSettings(
        task="digits-mlp",
        n_trials=4,
        epochs=1,
        stack=4,
        storage=storage,
        tracking_uri=None,
        confirm=0,
        study_name="s",
    )
    with pytest.raises(TaskError, match="failed before its first trial: .*changed between builds"):
        run_search(settings)
    study = optuna.load_study(study_name="s", storage=storage)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


# 4. --stack auto's timing runs: the user's errors are the user's ----------------------------

RAISING_DATASET = """
import os, sys
import torch
from torch.nn import functional as F
from adamtune import Task, accuracy


class Rows(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if 40 <= i < 100 and os.environ.get("BREAK") == "raise":
            raise IndexError(f"row {i} is corrupt")
        if 40 <= i < 100 and os.environ.get("BREAK") == "exit":
            sys.exit(3)
        return self.x[i], self.y[i]


def make_task():
    model = lambda: torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return Task("rows", model, Rows(160), Rows(32), F.cross_entropy, accuracy,
                "val_accuracy", "maximize", epochs=2, batch_size=16)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_dataset_failing_while_auto_times_the_stack_is_the_users_error(tmp_path, how):
    (tmp_path / "rows_task.py").write_text(RAISING_DATASET)
    result = subprocess.run(
        [ADAMTUNE, "search", "--task", "rows_task.py:make_task", "--n-trials", "3"]
        + ["--no-tracking", "--confirm", "0", "--stack", "auto", "--max-failures", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BREAK": how},
    )
    assert result.returncode == 1, result.stderr
    assert "a bug in adamtune" not in result.stderr and "Traceback" not in result.stderr
    timing = [line for line in result.stderr.splitlines() if "while a few steps were timed" in line]
    assert len(timing) == 1, result.stderr
    what = "IndexError: row" if how == "raise" else "SystemExit: 3"
    assert what in timing[0] and "rows_task.py, line" in timing[0], timing[0]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and what in errors[0], result.stderr


class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise KeyError(f"no row {i}")


def test_an_error_in_a_dataloader_worker_is_described_as_the_users_own_line():
    import torch

    from adamtune.errors import describe

    loader = torch.utils.data.DataLoader(_Broken(), batch_size=2, num_workers=1)
    with pytest.raises(KeyError) as caught:
        next(iter(loader))
    text = describe(caught.value)
    assert "\n" not in text and "Traceback" not in text
    assert text.startswith("KeyError: 'no row 0'") and "test_reliability_round4.py, line" in text


# 3. nothing left RUNNING: a trial whose process died before its first heartbeat -------------


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_that_never_sent_a_heartbeat_is_failed_once_its_grace_is_over(tmp_path, kind):
    from adamtune.storage.optuna_private import fail_stale
    from adamtune.storage.store import open_storage

    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'j.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=1))
    study.ask()  # asked, then the process died before any heartbeat
    fail_stale(study)
    assert study.trials[0].state == TrialState.RUNNING  # inside its grace: maybe alive
    time.sleep(3.3)  # past 3 heartbeats
    fail_stale(study)
    assert study.trials[0].state == TrialState.FAIL


def test_a_trials_first_heartbeat_is_recorded_before_its_thread_runs(tmp_path):
    from adamtune.storage.optuna_private import heartbeat_thread
    from adamtune.storage.store import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=60)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    heartbeat_thread(study, trial)  # not started: the first beat is written all the same
    import sqlite3

    rows = sqlite3.connect(tmp_path / "s.db").execute("select trial_id from trial_heartbeats")
    assert [r[0] for r in rows] == [trial._trial_id]


@pytest.mark.slow
def test_a_plain_search_on_a_killed_populations_study_fails_its_members_first(tmp_path):
    from tests.faults.test_faults import SLOW_TASK, wait_for_running

    (tmp_path / "slow_task.py").write_text(SLOW_TASK)
    base = ["--task", "slow_task.py:make_task", "--space", "lr-only", "--heartbeat", "1"]
    base += ["--no-tracking", "--no-baseline"]
    population = subprocess.Popen(
        [ADAMTUNE, "search", *base, "--strategy", "pbt", "--population", "6"],
        cwd=tmp_path,
        env={**os.environ, "MARKER": str(tmp_path / "m")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_running(tmp_path / "adamtune.db", 6)
    population.kill()
    population.wait(timeout=30)
    time.sleep(3.5)  # three missed heartbeats
    plain = subprocess.run(
        [ADAMTUNE, "search", *base, "--n-trials", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert plain.returncode == 1 and "holds a population" in plain.stderr, plain.stderr
    study = optuna.load_study(
        study_name="slow_task-make_task-lr-only", storage=f"sqlite:///{tmp_path / 'adamtune.db'}"
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 6
