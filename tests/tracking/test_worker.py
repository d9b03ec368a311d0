"""The tracking worker process on its own: its protocol, and what it does when its search dies."""

import json
import subprocess
import sys


def run_worker(stdin: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-m", "adamtune.tracking.worker"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_torn_last_line_ends_input_cleanly(tmp_path):
    start = json.dumps(
        {
            "op": "start_study",
            "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}",
            "experiment": None,
            "study_name": "s",
            "settings": {"task": "t"},
            "space_text": "lr: 0.1\n",
            "storage_url": None,
            "started_ms": 0,
        }
    )
    status, stderr = run_worker(start + "\n" + '{"op": "start_trial", "numb')
    assert status == {"errors": ["the search process stopped in the middle of a message"]}
    assert "Traceback" not in stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]  # the open parent run was closed


def test_unknown_ops_are_reported_not_fatal():
    status, _ = run_worker(json.dumps({"op": "format_disk"}) + "\n")
    assert status == {"errors": ["format_disk: ValueError: unknown op 'format_disk'"]}
