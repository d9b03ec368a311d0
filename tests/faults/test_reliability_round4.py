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
def test_claims_of_a_512_character_study_name_work_on_postgres(postgres_url, request):
    storage = optuna.storages.RDBStorage(postgres_url)
    request.addfinalizer(storage.engine.dispose)  # before the fixture drops the database
    study = optuna.create_study(study_name="s" * 512, storage=storage)
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


# 2. no password in any line: the MLflow server dies after the study's runs exist ------------


@pytest.mark.slow
@pytest.mark.e2e
def test_a_dying_tracking_servers_errors_never_show_its_password(tmp_path, serve):
    from tests.faults.test_faults import SLOW_TASK, _run_names_so_far
    from tests.servers import MLFLOW, MLFLOW_SERVER_WORKERS, free_port, stop_group

    port = free_port()
    server = serve(
        [*MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        + ["--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1"]
        + ["--port", str(port), *MLFLOW_SERVER_WORKERS],
        f"http://127.0.0.1:{port}/health",
        tmp_path,
    )
    (tmp_path / "slow_task.py").write_text(SLOW_TASK)
    hold = tmp_path / "hold"
    hold.touch()
    secret = "S3cretPw"
    search = subprocess.Popen(
        [ADAMTUNE, "search", "--task", "slow_task.py:make_task", "--space", "lr-only"]
        + ["--n-trials", "3", "--epochs", "2", "--stack", "1", "--confirm", "0"]
        + ["--tracking-uri", f"http://bob:{secret}@127.0.0.1:{port}"],
        cwd=tmp_path,
        env={**os.environ, "HOLD": str(hold), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while "trial-0" not in _run_names_so_far(tmp_path / "mlflow.db"):
        assert time.time() < deadline, "the first trial's run never appeared"
        time.sleep(0.2)
    stop_group(server)  # the server dies while the study's runs are open
    hold.unlink()
    out, err = search.communicate(timeout=300)
    assert search.returncode == 0, err
    assert "failed" in err  # the tracking failure is said ...
    assert secret not in out + err, err  # ... with no password in any line
    assert "Trials logged" not in out and "failed during the study" in out, out


# 9. full disks: the tracking store's preflight, and threads that die of it ------------------


def test_a_tracking_store_on_a_full_disk_is_refused_before_any_trial(tmp_path, monkeypatch):
    from adamtune.errors import TrackingError
    from adamtune.tracking import preflight

    full = os.statvfs_result((4096, 4096, 100, 0, 0, 100, 0, 0, 0, 255))
    monkeypatch.setattr(preflight.os, "statvfs", lambda folder: full)
    for store in ("new.db", "existing.db"):
        if store == "existing.db":
            (tmp_path / store).write_bytes(b"")
        with pytest.raises(TrackingError, match=r"the disk holding .* is full \(0 bytes free\)"):
            preflight.check_tracking_uri(f"sqlite:///{tmp_path / store}")


def test_a_background_thread_that_dies_is_one_warning_line(capsys):
    import threading

    from adamtune.cli.app import thread_errors_in_one_line

    def beat():
        raise OSError(28, "No space left on device")

    with thread_errors_in_one_line():
        for _ in range(2):
            thread = threading.Thread(target=beat, name="heartbeat")
            thread.start()
            thread.join()
    err = capsys.readouterr().err
    assert (
        err == "Warning: thread 'heartbeat' stopped: OSError: [Errno 28] No space left on device\n"
    )


# 10. the database's own reason, however the layers between re-raised it ---------------------


def _commit_failure(message):
    import sqlite3

    import sqlalchemy.exc

    try:
        try:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError(message))
        except sqlalchemy.exc.OperationalError as exc:  # what Optuna's RDB storage does
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit."
            ) from exc
    except optuna.exceptions.StorageInternalError as exc:
        return exc


@pytest.mark.parametrize(
    "message, said",
    [
        (
            "database or disk is full",
            "the disk is full (OperationalError: database or disk is full)",
        ),
        (
            "database disk image is malformed",
            "lost during the study: OperationalError: database disk image is malformed",
        ),
    ],
)
def test_a_lost_storage_says_the_databases_reason_even_through_a_stack(message, said):
    from adamtune.search.run import storage_lost

    failure = _commit_failure(message)
    assert said in str(storage_lost("sqlite:///a.db", failure))

    class Wrapped(Exception):
        pass

    try:  # as the stacked search re-raises the storage's error out of its training loop
        try:
            raise Wrapped from failure
        except Wrapped as wrapped:
            raise wrapped.__cause__  # noqa: B904  (its own chain kept, as search/stacked.py)
    except optuna.exceptions.StorageInternalError as rethrown:
        assert said in str(storage_lost("sqlite:///a.db", rethrown))


# 10. values of the user's own: Optuna's rules as one line, one kind per name ----------------


@pytest.mark.parametrize(
    "ask, message",
    [
        (lambda v: v.suggest_float("d", 0.0, 0.5, step=0), "step must be > 0, got 0"),
        (lambda v: v.suggest_float("d", 0.0, 0.5, step=0.2), "step must divide high - low"),
        (lambda v: v.suggest_float("d", 0.1, 0.5, step=0.1, log=True), "cannot be combined"),
        (lambda v: v.suggest_int("w", 1, 10, step=0), "step must be > 0, got 0"),
        (lambda v: v.suggest_int("w", 1, 10, step=4), "step must divide high - low"),
        (lambda v: v.suggest_categorical("c", [[1], [2]]), "each choice must be None"),
    ],
)
def test_a_values_bad_step_or_choice_is_one_line(ask, message):
    from adamtune.config.values import Values
    from adamtune.errors import TaskError

    with pytest.raises(TaskError, match=message):
        ask(Values(trial=optuna.create_study().ask()))


def test_one_name_asked_as_two_kinds_is_refused_not_answered_wrong():
    from adamtune.config.values import Values
    from adamtune.errors import TaskError

    values = Values(trial=optuna.create_study().ask())
    values.suggest_int("width", 8, 64)
    assert values.suggest_int("width", 8, 64) == values.values["width"]  # the same ask: fine
    with pytest.raises(TaskError, match="'width' was asked before as an integer"):
        values.suggest_float("width", 0.0, 1.0)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"widths": {"choices": [[16, 32], [64]]}}, "model.widths.choices: each choice must be"),
        ({"cfg": {"choices": [{"a": 1}]}}, "model.cfg.choices: each choice must be"),
        (
            {"dropout": {"low": 0.0, "high": 0.5, "step": 0.2}},
            "model.dropout.step: step must divide",
        ),
    ],
)
def test_a_model_section_optuna_would_warn_about_is_refused(section, message):
    from adamtune.config.values import parse_model_section
    from adamtune.errors import SpaceError

    with pytest.raises(SpaceError, match=message):
        parse_model_section(section)


def test_yaml_merge_keys_work_and_explicit_keys_still_count_once():
    from adamtune._util.yamlfile import parse

    text = "base: &b {low: 1.0e-4, high: 1.0e-2}\nlr:\n  <<: *b\n  high: 1.0e-1\n"
    assert parse(text)["lr"] == {"low": 1e-4, "high": 1e-1}
    with pytest.raises(ValueError, match="key 'high' is given twice"):
        parse("lr:\n  <<: {low: 1}\n  high: 2\n  high: 3\n")


# 10. models that cannot train or stack say why, in one line ---------------------------------

ODD_MODELS = """
import torch
from torch.nn import functional as F
from adamtune import Task, accuracy

g = torch.Generator().manual_seed(0)
x = torch.randn(64, 4, generator=g)
y = (x[:, 0] > 0).long()


def meta():
    def build():
        with torch.device("meta"):
            return torch.nn.Linear(4, 2)
    return Task("meta", build, (x, y), (x, y), F.cross_entropy, accuracy, "val_accuracy",
                "maximize", epochs=1, batch_size=16)


def nan_loss():
    loss = lambda out, target: F.cross_entropy(out, target) * float("nan")
    return Task("nan", lambda: torch.nn.Linear(4, 2), (x, y), (x, y), loss, accuracy,
                "val_accuracy", "maximize", epochs=1, batch_size=16)


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Linear(4, 4)
        self.out = torch.nn.Linear(4, 4)
        self.out.weight = self.emb.weight

    def forward(self, inputs):
        return self.out(torch.relu(self.emb(inputs)))[:, :2]


def tied():
    return Task("tied", Tied, (x, y), (x, y), F.cross_entropy, accuracy, "val_accuracy",
                "maximize", epochs=1, batch_size=16)
"""


@pytest.mark.parametrize(
    "factory, stack, message",
    [
        ("meta", "auto", "'weight' is on the meta device"),
        ("nan_loss", "auto", "loss on one training batch is nan at the initial weights"),
        ("tied", "4", "its model ties weights (out.weight is emb.weight)"),
    ],
)
def test_a_model_that_cannot_train_or_stack_is_one_line(
    tmp_path, monkeypatch, factory, stack, message
):
    (tmp_path / "odd_models.py").write_text(ODD_MODELS)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["search", "--task", f"odd_models.py:{factory}", "--n-trials", "2", "--no-tracking"]
        + ["--stack", stack],
    )
    assert result.exit_code == 1, result.output
    assert message in result.output and "a bug in adamtune" not in result.output
