"""Faults of reliability round 3, one test each: torn journals, read-only and full disks,
damaged attributes, confirmation that no candidate survives, confirmation's turn and cost,
MLflow store races, leftover threads and unwritable output."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution

from adamtune.cli.app import cli
from adamtune.results.export import write_export
from adamtune.results.studies import exported_trial
from adamtune.search.confirm import affordable_top, confirm_study, confirmation_turn
from adamtune.storage.journal import mend_torn_tail
from adamtune.storage.store import open_storage
from adamtune.tasks import resolve_task
from adamtune.tracking.store_setup import open_client
from tests.search.test_confirm import Recorder, ScriptedRunner, study_with

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))
QUICK = ["--task", "wine-mlp", "--epochs", "1", "--no-tracking", "--confirm", "0"]


def search(*args, cwd):
    return subprocess.run(
        [ADAMTUNE, "search", *QUICK, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_a_torn_journal_tail_is_cut_and_the_study_goes_on(tmp_path):
    journal = tmp_path / "j.log"
    first = search("--n-trials", "2", "--storage", f"journal:{journal}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":5,"worker_id":"torn')  # a crash mid-append
    again = search("--n-trials", "2", "--storage", f"journal:{journal}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "last line was torn (30 bytes" in again.stderr
    study = optuna.load_study(
        study_name="wine-mlp-default", storage=open_storage(f"journal:{journal}")
    )
    assert len(study.trials) == 4  # the two before the tear, and two more after it
    assert journal.read_bytes().startswith(whole)


def test_mend_torn_tail_leaves_a_whole_journal_alone(tmp_path):
    journal = tmp_path / "j.log"
    journal.write_bytes(b'{"op_code":0}\n')
    assert mend_torn_tail(journal) == 0
    journal.write_bytes(b'{"op_code":0}\n{"op_')
    assert mend_torn_tail(journal) == 5
    assert journal.read_bytes() == b'{"op_code":0}\n'
    journal.write_bytes(b'{"op_code":0')  # not one whole line: nothing is left
    assert mend_torn_tail(journal) == 12 and journal.read_bytes() == b""


def _mount(kind, source, target, options):
    done = subprocess.run(
        ["mount", *kind, "-o", options, source, str(target)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()[:100]})")


def _unmount(target):
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_reading_commands_work_on_a_read_only_mount_of_a_wal_database(tmp_path):
    source, mounted = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    made = search("--n-trials", "2", "--storage", "sqlite:///a.db", cwd=source)
    assert made.returncode == 0, made.stderr
    _mount(["--bind"], str(source), mounted, "bind")
    try:
        _mount([], str(source), mounted, "remount,ro,bind")
        url = f"sqlite:///{mounted / 'a.db'}"
        for args in (["studies"], ["show", "wine-mlp-default"], ["export", "wine-mlp-default"]):
            result = CliRunner().invoke(cli, [*args, "--storage", url])
            assert result.exit_code == 0, result.output
        assert sorted(os.listdir(mounted)) == ["a.db"]  # no -wal or -shm made
    finally:
        _unmount(mounted)


def test_a_disk_that_fills_mid_study_is_one_line(tmp_path):
    mounted = tmp_path / "small"
    mounted.mkdir()
    _mount(["-t", "tmpfs"], "tmpfs", mounted, "size=600k")
    try:
        result = search(
            "--n-trials", "60", "--storage", f"sqlite:///{mounted / 'a.db'}", cwd=tmp_path
        )
    finally:
        _unmount(mounted)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --storage") and "the disk is full" in last, last
    assert "unexpected" not in result.stderr


def test_export_of_a_study_with_a_damaged_attribute_is_one_line(tmp_path):
    made = search("--n-trials", "1", "--storage", "sqlite:///a.db", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "a.db") as connection:
        connection.execute("UPDATE study_user_attributes SET value_json = '{not json' ")
    for args in (["export", "wine-mlp-default"], ["show", "wine-mlp-default"]):
        result = CliRunner().invoke(cli, [*args, "--storage", f"sqlite:///{tmp_path / 'a.db'}"])
        assert result.exit_code != 0
        assert result.stderr.startswith("Error: --storage") and "unexpected" not in result.stderr


def test_a_winner_whose_every_confirmation_run_diverged_is_no_winner():
    study = study_with({0.01: 0.9, 0.002: 0.8}, baseline_lr=1e-3)
    script = {0.01: {1: None, 2: None}, 0.002: {1: None, 2: None}, 1e-3: {1: 0.7, 2: 0.7}}
    said = []
    runner = ScriptedRunner(resolve_task("wine-mlp"), script)
    confirmation = confirm_study(
        study, runner, k=2, top=2, seed=0, tracker=Recorder(), say=said.append
    )
    assert confirmation.winner is None
    assert said and "there is no confirmed winner" in said[0] and "diverged: boom" in said[0]
    for trial in study.trials:
        trial.user_attrs.setdefault("config", {"lr": trial.params["lr"]})
    chosen = exported_trial(study)  # the search's best, not a crash
    assert chosen.trial_number == 0 and chosen.chosen == "the best trial"


def test_confirmation_waits_for_trials_running_elsewhere_and_runs_once():
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 1.0}, distributions={"x": FloatDistribution(0, 2)}, value=1.0
        )
    )
    running = study.ask()  # another process's trial, still training
    said = []
    assert confirmation_turn(study, said.append) is None
    assert "1 trial of study" in said[-1] and "last process to finish confirms" in said[-1]
    study.tell(running, 0.5)
    turn = confirmation_turn(study, said.append)
    assert turn is not None  # this process claims it
    assert confirmation_turn(study, said.append) is None  # a second one does not
    assert "another process confirms the 2 finished trials" in said[-1]
    study.tell(study.ask(), 0.7)  # a resumed study: confirmed again, over all of it
    assert confirmation_turn(study, said.append) is not None


def test_confirmation_costs_at_most_half_of_the_search():
    assert affordable_top(search_epochs=2000, k=3, epochs=20) == 5  # plenty: the default 5
    assert affordable_top(search_epochs=480, k=3, epochs=20) == 3  # 240 / 60 = 4 candidates
    assert affordable_top(search_epochs=60, k=3, epochs=20) == 1  # never fewer than the winner


def test_a_store_being_created_elsewhere_is_retried(monkeypatch):
    monkeypatch.setattr("adamtune.tracking.store_setup.time.sleep", lambda seconds: None)
    attempts = []

    def client(uri):
        attempts.append(uri)
        if len(attempts) < 3:
            raise RuntimeError("(sqlite3.OperationalError) table experiments already exists")
        return "client"

    assert open_client("sqlite:///m.db", client) == "client" and len(attempts) == 3

    def broken(uri):
        raise RuntimeError("no such driver")  # not a race: raised at once

    with pytest.raises(RuntimeError):
        open_client("sqlite:///m.db", broken)


def test_a_thread_the_task_leaves_running_does_not_hold_the_exit(tmp_path):
    task = tmp_path / "loop.py"
    task.write_text(
        "import threading, time\n"
        "import adamtune\n"
        "def train(trial):\n"
        "    threading.Thread(target=time.sleep, args=(3600,), name='prefetcher').start()\n"
        "    return {'value': 0.5}\n"
    )
    done = subprocess.run(
        [ADAMTUNE, "search", "--task", f"{task}:train", "--n-trials", "1", "--no-tracking"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ADAMTUNE_CONFIRM": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert "thread 'prefetcher' (started by the task, not daemon) still runs" in done.stderr


def test_output_that_cannot_be_written_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [ADAMTUNE, "studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr == "Error: cannot write the output: No space left on device\n"


def test_export_on_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("adamtune.results.export.os.fsync", full)
    with pytest.raises(Exception, match="No space left on device"):
        write_export("text", str(tmp_path / "best.py"))
    assert os.listdir(tmp_path) == []


def test_ui_on_a_busy_port_says_so(tmp_path):
    import socket

    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'ml.db'}"
    MlflowClient(store).search_experiments()  # a real, empty MLflow store
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["ui", "--port", str(port), "--tracking-uri", store])
    assert result.exit_code != 0
    assert result.stderr.startswith(f"Error: --port {port}: cannot listen on 127.0.0.1:{port}")


def test_an_artifact_root_that_cannot_be_written_is_refused_before_the_study(tmp_path):
    source, mounted = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    _mount(["--bind"], str(source), mounted, "bind")
    try:
        _mount([], str(source), mounted, "remount,ro,bind")
        done = subprocess.run(
            [ADAMTUNE, "search", "--task", "wine-mlp", "--n-trials", "1", "--confirm", "0"]
            + ["--storage", f"sqlite:///{tmp_path / 's.db'}"]
            + ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
            cwd=mounted,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        _unmount(mounted)
    assert done.returncode != 0
    assert "MLflow writes artifacts under ./mlruns, and" in done.stderr, done.stderr
    assert not (tmp_path / "s.db").exists()  # refused before the study was made
