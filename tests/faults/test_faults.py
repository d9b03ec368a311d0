"""Faults, end to end in real processes: what survives a SIGTERM, a SIGKILL, a dead logging
process, user code that calls sys.exit(), and workers racing to create a schema."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from adamtune.config.adam import AdamConfig
from adamtune.config.settings import SearchSettings
from adamtune.search.run import run_search
from adamtune.tasks import Task, accuracy
from adamtune.training.single import train
from tests.servers import tracking_workers

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))
SLOW_TASK = """
import os, sys, time
import torch
from torch.nn import functional as F
from adamtune import Task, accuracy

def make_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()

    calls = [0]

    def loss(outputs, targets):
        calls[0] += 1
        if calls[0] <= 2:  # adamtune's one-batch try (a training batch, then an evaluation)
            return F.cross_entropy(outputs, targets)
        marker = os.environ.get("MARKER")
        if marker:  # slow only while the test wants a trial to kill
            open(marker, "a").close()
            time.sleep(0.05)
        hold = os.environ.get("HOLD")
        while hold and os.path.exists(hold):  # the test holds the trial until it removes the file
            time.sleep(0.02)
        if os.environ.get("EXIT_IN_LOSS"):
            sys.exit(4)
        return F.cross_entropy(outputs, targets)

    return Task("slow", lambda: torch.nn.Linear(4, 2), (x, y), (x, y), loss, accuracy,
                "val_accuracy", "maximize", epochs=50, batch_size=16)
"""


@pytest.fixture
def slow_task(in_tmp):
    (in_tmp / "slow_task.py").write_text(SLOW_TASK)
    return "slow_task.py:make_task"


def start(args, cwd, **env):
    return subprocess.Popen(
        [ADAMTUNE, "search", "--space", "lr-only", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path, seconds=120):
    deadline = time.time() + seconds
    while not Path(path).exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def runs(tracking_db):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tracking_db}")
    experiments = client.search_experiments()
    ids = [e.experiment_id for e in experiments]
    return client.search_runs(ids) if ids else []


@pytest.mark.parametrize("stack", ["1", "3"])
def test_sigterm_mid_trial_is_handled_like_ctrl_c(slow_task, in_tmp, stack):
    process = start(
        ["--task", slow_task, "--n-trials", "3", "--stack", stack],
        in_tmp,
        MARKER=str(in_tmp / "m"),
    )
    wait_for_running(in_tmp / "adamtune.db", int(stack))
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Interrupted: completed trials are saved" in err
    assert "Traceback" not in err
    study = optuna.load_study(
        study_name="slow_task-make_task-lr-only", storage="sqlite:///adamtune.db"
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL] * int(stack)
    for trial in study.trials:
        assert trial.user_attrs["fail_reason"] == "interrupted (Ctrl-C or SIGTERM)"
    statuses = {r.info.run_name: r.info.status for r in runs(in_tmp / "mlflow.db")}
    trials = {f"trial-{i}": "FAILED" for i in range(int(stack))}
    assert statuses == {"slow_task-make_task-lr-only": "KILLED", **trials}


def wait_for_running(study_db, count, seconds=120):
    """Until ``count`` trials are RUNNING and training (read-only, as the search writes)."""
    import sqlite3
    from contextlib import closing

    deadline = time.time() + seconds
    while True:
        assert time.time() < deadline, f"{count} running trials never appeared"
        time.sleep(0.1)
        if not study_db.exists():
            continue
        try:
            with closing(sqlite3.connect(f"file:{study_db}?mode=ro", uri=True)) as connection:
                (running,) = connection.execute(
                    "SELECT count(*) FROM trial_intermediate_values v JOIN trials t "
                    "ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND v.step = 1"
                ).fetchone()
        except sqlite3.OperationalError:  # tables not there yet, or locked
            continue
        if running >= count:
            return


@pytest.mark.parametrize("storage", ["sqlite:///adamtune.db", "journal:adamtune.log"])
def test_sigkill_mid_trial_then_resume_fails_the_dead_trial_and_its_run(slow_task, in_tmp, storage):
    args = ["--task", slow_task, "--storage", storage, "--heartbeat", "1"]
    process = start([*args, "--n-trials", "1"], in_tmp, MARKER=str(in_tmp / "m"))
    wait_for(in_tmp / "m")
    time.sleep(1.5)  # a heartbeat or two reach the storage
    process.kill()
    process.communicate(timeout=30)
    time.sleep(3.5)  # three heartbeats of silence: the trial is stale
    resumed = start([*args, "--n-trials", "2"], in_tmp)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Warning" not in err, err  # in particular no stale_trial error from the tracker
    study = optuna.load_study(
        study_name="slow_task-make_task-lr-only", storage=_optuna_url(storage)
    )
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and states.count(TrialState.COMPLETE) == 2
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert retried and retried[0].params == study.trials[0].params  # re-run with its parameters
    by_name = {r.info.run_name: r for r in runs(in_tmp / "mlflow.db")}
    assert all(r.info.status != "RUNNING" for r in by_name.values())
    dead = [r for r in by_name.values() if r.info.run_name == "trial-0"]
    assert dead and dead[0].info.status == "FAILED"
    assert "no heartbeat" in dead[0].data.tags["adamtune.reason"]


def _optuna_url(storage):
    if storage.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    return storage


def _run_names_so_far(tracking_db):
    """Read-only, so that polling never races the logging process's own schema migration
    (an MlflowClient opened on a store being created runs the migration a second time)."""
    import sqlite3
    from contextlib import closing

    if not tracking_db.exists():
        return set()
    try:
        with closing(sqlite3.connect(f"file:{tracking_db}?mode=ro", uri=True)) as connection:
            return {name for (name,) in connection.execute("SELECT name FROM runs")}
    except sqlite3.OperationalError:  # no runs table yet, or the database is locked
        return set()


def _tracking_worker_of(pid):
    found = tracking_workers(pid)
    return found[0] if found else None


def test_a_dead_logging_process_is_reported_once_and_its_runs_closed(slow_task, in_tmp):
    hold = in_tmp / "hold"
    hold.touch()  # trial-0 cannot finish before the logging process is killed
    process = start(  # one at a time: the stackability check calls the held loss too
        ["--task", slow_task, "--n-trials", "3", "--epochs", "3", "--pruner", "none"]
        + ["--stack", "1"],
        in_tmp,
        HOLD=str(hold),
    )
    deadline = time.time() + 120
    while "trial-0" not in _run_names_so_far(in_tmp / "mlflow.db"):
        assert time.time() < deadline, "the first trial's run never appeared"
        time.sleep(0.2)
    worker = _tracking_worker_of(process.pid)
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    hold.unlink()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert err.count("the MLflow logging process stopped") == 1, err
    study = optuna.load_study(
        study_name="slow_task-make_task-lr-only", storage="sqlite:///adamtune.db"
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    statuses = {r.info.run_name: r.info.status for r in runs(in_tmp / "mlflow.db")}
    assert "RUNNING" not in statuses.values(), statuses
    assert statuses["slow_task-make_task-lr-only"] == "KILLED"
    assert statuses["trial-0"] == "FAILED"  # its end was never logged: the logger was gone


def test_sys_exit_in_user_code_fails_only_that_trial(slow_task, in_tmp):
    process = start(
        ["--task", slow_task, "--n-trials", "2", "--max-failures", "0", "--epochs", "1"],
        in_tmp,
        EXIT_IN_LOSS="1",
    )
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "Error: no trial of study 'slow_task-make_task-lr-only' completed (2 fail); the reasons "
        "are above and in `adamtune show`"
    )
    assert "Traceback" not in err
    study = optuna.load_study(
        study_name="slow_task-make_task-lr-only", storage="sqlite:///adamtune.db"
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert study.trials[0].user_attrs["fail_reason"] == "SystemExit: 4"
    statuses = {r.info.run_name: r.info.status for r in runs(in_tmp / "mlflow.db")}
    assert statuses["trial-0"] == statuses["trial-1"] == "FAILED"


@pytest.mark.postgres
def test_workers_started_together_on_a_new_postgres_database_all_join(postgres_url):
    """A job array starts its workers at the same moment; each creates Optuna's schema."""
    at = time.time() + 6  # after every interpreter has imported adamtune.storage
    code = (
        "import sys, time, optuna\n"
        "from adamtune.storage import open_storage\n"
        f"time.sleep(max(0.0, {at} - time.time()))\n"
        "storage = open_storage(sys.argv[1])\n"
        "optuna.create_study(storage=storage, study_name='s', load_if_exists=True)\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        assert optuna.get_all_study_names(storage) == ["s"]
    finally:
        storage.engine.dispose()


def deep_task():
    """A model slow enough to build that two threads interleave while building."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, generator=g)
    y = (x[:, 0] > 0).long()
    return Task(
        "deep",
        lambda: torch.nn.Sequential(
            *[torch.nn.Linear(64, 64) for _ in range(30)], torch.nn.Linear(64, 2)
        ),
        (x, y),
        (x, y),
        torch.nn.functional.cross_entropy,
        accuracy,
        "val_accuracy",
        "maximize",
        epochs=1,
        batch_size=32,
    )


def test_threads_build_the_same_models_as_one_thread():
    """--n-jobs: a trial is reproducible from its config and seed, whatever runs beside it."""
    task, config = deep_task(), AdamConfig(lr=1e-3)
    alone = {seed: train(task, config, seed=seed).train_losses for seed in range(12)}
    together: dict[int, list[float]] = {}

    def work(seeds):
        for seed in seeds:
            together[seed] = train(task, config, seed=seed).train_losses

    threads = [threading.Thread(target=work, args=(range(i, 12, 2),)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_parallel_jobs_give_the_values_of_sequential_retraining(storage):
    study = run_search(
        SearchSettings(
            task="digits-mlp",
            storage=storage,
            n_trials=4,
            n_jobs=2,
            epochs=2,
            space="lr-only",
            sampler="random",
        )
    )
    from adamtune.tasks import resolve_task

    task = resolve_task("digits-mlp")
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        config = AdamConfig.from_dict(trial.user_attrs["config"])
        assert train(task, config, seed=0, epochs=2).value == trial.value


def test_sigterm_to_a_workers_search_stops_every_worker_cleanly(slow_task, in_tmp):
    process = start(
        [
            "--task",
            slow_task,
            "--n-trials",
            "4",
            "--workers",
            "2",
            "--storage",
            "journal:j.log",
            "--no-tracking",
        ],
        in_tmp,
        MARKER=str(in_tmp / "m"),
    )
    wait_for(in_tmp / "m")
    name, storage = "slow_task-make_task-lr-only", _optuna_url("journal:j.log")
    deadline = time.time() + 120
    while True:  # until both workers are inside a trial (the parent's start-up takes a while)
        assert time.time() < deadline, "the workers never ran two trials at once"
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except KeyError:  # the study is not created yet
            trials = []
        if sum(t.state == TrialState.RUNNING for t in trials) >= 2:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.trials and all(t.state != TrialState.RUNNING for t in study.trials)
    # A trial that finished before the signal (a worker that started late) is kept as it is.
    stopped = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert stopped
    assert {(t.state, t.user_attrs.get("fail_reason")) for t in stopped} == {
        (TrialState.FAIL, "interrupted (Ctrl-C or SIGTERM)")
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_of_a_stacked_worker_fails_and_retries_every_row(
    slow_task, in_tmp, backend, request
):
    url = "sqlite:///adamtune.db"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
    storage = optuna.storages.RDBStorage(url)  # one engine for every read below
    request.addfinalizer(storage.engine.dispose)
    args = ["--task", slow_task, "--heartbeat", "1", "--stack", "2", "--n-trials", "2"]
    args += ["--storage", url]
    process = start(args, in_tmp, MARKER=str(in_tmp / "m"))
    wait_for(in_tmp / "m")  # the storage exists; the stack is being tried, then trained
    deadline = time.time() + 120
    while sum(1 in t.intermediate_values for t in _running(storage)) < 2:
        assert time.time() < deadline, "the stack never trained"
        time.sleep(0.1)
    time.sleep(1.5)  # a heartbeat or two reach the storage
    process.kill()
    process.communicate(timeout=30)
    time.sleep(3.5)
    resumed = start(args, in_tmp)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    study = optuna.load_study(study_name="slow_task-make_task-lr-only", storage=storage)
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.FAIL, TrialState.FAIL]
    assert states[2:] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for dead in study.trials[:2]:
        retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
        assert retried and retried[0].params == dead.params
    statuses = {r.info.run_name: r.info.status for r in runs(in_tmp / "mlflow.db")}
    assert "RUNNING" not in statuses.values(), statuses
    assert statuses["trial-0"] == statuses["trial-1"] == "FAILED"


def _running(storage):
    try:
        study = optuna.load_study(study_name="slow_task-make_task-lr-only", storage=storage)
    except KeyError:  # the study is not created yet
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_population_stopped_by_a_signal_leaves_every_member_failed(slow_task, in_tmp, how):
    """--strategy pbt: SIGTERM fails every member at once; after a SIGKILL the next command
    fails them (their heartbeats stopped) and refuses to resume, in one line."""
    args = ["--task", slow_task, "--strategy", "pbt", "--population", "3", "--heartbeat", "1"]
    args += ["--no-baseline"]
    process = start(args, in_tmp, MARKER=str(in_tmp / "m"))
    wait_for_running(in_tmp / "adamtune.db", 3)
    if how == "sigterm":
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 130, err
    else:
        process.kill()
        process.communicate(timeout=30)
        time.sleep(3.5)  # three missed heartbeats
    again = start(args, in_tmp)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "a population cannot be resumed" in lines[0], err
    study = optuna.load_study(
        study_name="slow_task-make_task-lr-only", storage="sqlite:///adamtune.db"
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    statuses = {r.info.run_name: r.info.status for r in runs(in_tmp / "mlflow.db")}
    assert "RUNNING" not in statuses.values(), statuses
