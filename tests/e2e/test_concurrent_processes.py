"""Separately started `adamtune search` processes on one fresh study and one fresh MLflow store,
started at the same moment: every run logged, one baseline, one confirmation, one winner.

On the code before these guards every run here failed some of this: two processes enqueued
(and two trained) a baseline, one crashed telling a trial the other had told, the MLflow
store's schema was created twice and a loser logged nothing, each process confirmed the study
(three winners), and processes with one seed sampled the same points.
"""

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from adamtune.storage.claims import claim_name

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))
PROCESSES, TRIALS = 3, 3
CONFIRM_TOP, CONFIRM = 2, 1
QUICK = [
    "--space",
    "lr-only",
    "--pruner",
    "none",
    "--epochs",
    "2",
    "--study-name",
    "s",
    "--n-trials",
    str(TRIALS),
    "--confirm",
    str(CONFIRM),
    "--confirm-top",
    str(CONFIRM_TOP),
]


def start_together(
    directory: Path, storage: str, tracking: str, extra=()
) -> list[tuple[str, str, int]]:
    """PROCESSES searches started back to back (no waiting between), then waited for."""
    env = {**os.environ, "ADAMTUNE_CONFIRM": str(CONFIRM)}
    command = [ADAMTUNE, "search", *QUICK, "--storage", storage, "--tracking-uri", tracking]
    processes = [
        subprocess.Popen(
            [*command, *extra],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    return [(*p.communicate(timeout=600), p.returncode) for p in processes]


def check_one_study(results, storage, tracking: str, trials: int) -> None:
    for _out, err, code in results:
        assert code == 0, err
        assert "Error" not in err and "MLflow tracking" not in err, err
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == trials
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    assert sum("baseline" in t.user_attrs for t in study.trials) == 1  # one baseline
    points = Counter(t.params["lr"] for t in study.trials)
    assert max(points.values()) == 1, points  # no two processes drew the same point
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("s")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    per_trial = sorted(
        int(r.data.tags["adamtune.trial_number"])
        for r in runs
        if "adamtune.trial_number" in r.data.tags
    )
    assert per_trial == list(range(trials))  # one MLflow run per trial, none lost
    confirm_runs = [r for r in runs if r.data.tags.get("adamtune.role") == "confirm"]
    assert len(confirm_runs) == (CONFIRM_TOP + 1) * CONFIRM  # one confirmation, not one each
    assert "confirmation" in study.user_attrs
    assert study.user_attrs["confirmation"]["finished_trials"] == trials  # the whole study
    winners = {
        match
        for out, _, _ in results
        for match in re.findall(r"`adamtune export` exports trial (\d+)", out)
    }
    assert len(winners) == 1, winners  # printed once, or everywhere the same
    names = optuna.get_all_study_names(storage)
    assert names.count(claim_name("s", f"confirm-{trials}")) == 1


@pytest.mark.parametrize("attempt", range(2))
def test_processes_started_together_on_fresh_sqlite_stores(tmp_path, attempt):
    storage, tracking = f"sqlite:///{tmp_path / 'study.db'}", f"sqlite:///{tmp_path / 'ml.db'}"
    results = start_together(tmp_path, storage, tracking)
    check_one_study(results, storage, tracking, PROCESSES * TRIALS)


def test_processes_started_together_on_a_fresh_journal(tmp_path):
    from adamtune.storage.store import open_storage

    journal, tracking = f"journal:{tmp_path / 'study.log'}", f"sqlite:///{tmp_path / 'ml.db'}"
    results = start_together(tmp_path, journal, tracking)
    check_one_study(results, open_storage(journal), tracking, PROCESSES * TRIALS)


@pytest.mark.postgres
def test_processes_started_together_on_fresh_postgres_stores(tmp_path, postgres_url):
    tracking = f"sqlite:///{tmp_path / 'ml.db'}"  # one MLflow store shared by all of them
    results = start_together(tmp_path, postgres_url, tracking)
    storage = optuna.storages.RDBStorage(postgres_url)
    check_one_study(results, storage, tracking, PROCESSES * TRIALS)
    storage.engine.dispose()


def test_workers_flag_on_fresh_stores_confirms_once(tmp_path):
    storage, tracking = f"sqlite:///{tmp_path / 'study.db'}", f"sqlite:///{tmp_path / 'ml.db'}"
    command = [ADAMTUNE, "search", *QUICK, "--storage", storage, "--tracking-uri", tracking]
    command[command.index("--n-trials") + 1] = str(PROCESSES * TRIALS)
    done = subprocess.run(
        [*command, "--workers", str(PROCESSES)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    check_one_study([(done.stdout, done.stderr, done.returncode)], storage, tracking, 9)
