"""The tracking worker process on its own: its protocol, and what it does when its search dies."""

import json
import subprocess
import sys


def run_worker(stdin: str) -> tuple[dict, str]:
    """Run the worker on ``stdin`` (in the test's tmp_path: see conftest.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "adamtune.tracking.worker"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def start_study(store) -> str:
    """The job that opens study "s" in the SQLite store at ``store``, as the worker reads it."""
    job = {
        "op": "start_study",
        "tracking_uri": f"sqlite:///{store}",
        "experiment": None,
        "study_name": "s",
        "settings": {"task": "t"},
        "space_text": "lr: 0.1\n",
        "storage_url": None,
        "started_ms": 0,
    }
    return json.dumps(job) + "\n"


def test_a_torn_last_line_ends_input_cleanly(tmp_path):
    status, stderr = run_worker(start_study(tmp_path / "m.db") + '{"op": "start_trial", "numb')
    assert status == {"errors": ["the search process stopped in the middle of a message"]}
    assert "Traceback" not in stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]  # the open parent run was closed


def test_unknown_ops_are_reported_not_fatal():
    status, _ = run_worker(json.dumps({"op": "format_disk"}) + "\n")
    assert status == {"errors": ["format_disk: ValueError: unknown op 'format_disk'"]}


def test_the_sql_store_is_loaded_ahead_only_for_sql_tracking_uris():
    """The worker imports MLflow's SQL store before the first job when the tracking URI is a
    database (so the study's first trials don't pay for it), and not for a tracking server."""
    probe = (
        "import sys\n"
        "from adamtune.tracking.worker import _preload_store\n"
        "_preload_store(sys.argv[1])\n"
        "print('mlflow.store.tracking.sqlalchemy_store' in sys.modules)\n"
    )
    loaded = {
        scheme: subprocess.run(
            [sys.executable, "-c", probe, scheme], capture_output=True, text=True, check=True
        ).stdout.strip()
        for scheme in ("sqlite", "postgresql+psycopg2", "http")
    }
    assert loaded == {"sqlite": "True", "postgresql+psycopg2": "True", "http": "False"}


def test_the_store_is_one_file_when_the_worker_is_done(tmp_path):
    """The worker writes SQLite stores in WAL mode; on its way out it folds the log back in, so
    no mlflow.db-wal (holding the latest runs) is left for a copy of mlflow.db to miss."""
    end = {"op": "end_study", "study_name": "s", "interrupted": False, "ended_ms": 1}
    status, _ = run_worker(start_study(tmp_path / "mlflow.db") + json.dumps(end) + "\n")
    assert status == {"errors": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlruns"]
