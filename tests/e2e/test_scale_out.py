"""Many workers on one PostgreSQL study; a worker killed mid-trial; ours and MLflow's books."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from adamtune.search.workers import shares

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]
ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))
QUICK = ["--space", "lr-only", "--pruner", "none", "--study-name", "s"]


def child_runs(url: str) -> list:
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("s")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags], runs


def test_shares_split_the_trials_evenly():
    assert shares(30, 3) == [10, 10, 10]
    assert shares(10, 3) == [4, 3, 3]
    assert shares(2, 3) == [1, 1, 0]


def test_three_workers_share_one_postgres_study(tmp_path, postgres_url, mlflow_server):
    result = subprocess.run(
        [
            ADAMTUNE,
            "search",
            "--workers",
            "3",
            "--n-trials",
            "30",
            "--epochs",
            "1",
            "--storage",
            postgres_url,
            "--tracking-uri",
            mlflow_server,
            *QUICK,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    storage = optuna.storages.RDBStorage(postgres_url)
    study = optuna.load_study(study_name="s", storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 30 == len(set(numbers))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 30  # no replays
    children, runs = child_runs(mlflow_server)
    per_trial = sorted(int(r.data.tags["adamtune.trial_number"]) for r in children)
    assert per_trial == list(range(30))  # exactly one run per trial
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert "30/30 trials" in result.stderr
    storage.engine.dispose()


def test_a_killed_worker_leaves_a_trial_that_is_failed_and_retried(
    tmp_path, postgres_url, mlflow_server
):
    command = [
        ADAMTUNE,
        "search",
        "--epochs",
        "60",
        "--heartbeat",
        "1",
        "--storage",
        postgres_url,
        "--tracking-uri",
        mlflow_server,
        "--stack",
        "1",  # one trial in flight to kill (tests/training/test_stacked.py kills a stack)
        *QUICK,
    ]
    log = tmp_path / "killed.log"  # the killed search's stderr, and its tracking worker's
    with open(log, "w") as stderr:
        worker = subprocess.Popen(
            [*command, "--n-trials", "6"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "ADAMTUNE_TRACKING_TRACE": "1"},
        )
    storage = optuna.storages.RDBStorage(postgres_url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait for: 2 trials done and the third one training
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="s", storage=storage).trials
        except KeyError:
            continue
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        if done >= 2 and trials[-1].state == TrialState.RUNNING and trials[-1].intermediate_values:
            break
    tracking_worker = subprocess.run(
        ["pgrep", "-P", str(worker.pid), "-f", "adamtune.tracking.worker"],
        capture_output=True,
        text=True,
    ).stdout.split()
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    killed = trials[-1].number
    time.sleep(3.5)  # longer than the grace period of 3 heartbeats

    remaining = 6 - done
    subprocess.run(
        [*command, "--n-trials", str(remaining)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    study = optuna.load_study(study_name="s", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states[killed] == TrialState.FAIL
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 6
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback
    retried = [
        t for t in study.trials if t.number != killed and retry.retried_trial_number(t) == killed
    ]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == study.trials[killed].params
    storage.engine.dispose()
    # The killed search's tracking worker saw its pipe close: it logs what it was sent, then
    # closes its open runs as KILLED and exits (at low priority, so give it time).
    assert len(tracking_worker) == 1
    deadline = time.monotonic() + 120
    while Path(f"/proc/{tracking_worker[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    children, runs = child_runs(mlflow_server)
    running = [
        (r.info.run_name, r.data.tags.get("adamtune.trial_number"))
        for r in runs
        if r.info.status == "RUNNING"
    ]
    assert running == [], log.read_text()[-3000:]
    killed_runs = [r for r in children if r.data.tags["adamtune.trial_number"] == str(killed)]
    # A SIGKILL can take messages that never reached the pipe with it: the killed trial may
    # have no run at all, but never one that stays open.
    assert len(killed_runs) <= 1
    assert all(r.info.status in ("KILLED", "FAILED") for r in killed_runs)
