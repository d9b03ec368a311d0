import pytest

from adamtune._util.urls import redact
from adamtune.errors import StorageError
from adamtune.storage.store import open_storage


def test_redact_hides_passwords_only():
    assert redact("postgresql://bob:s3cret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert redact("sqlite:///adamtune.db") == "sqlite:///adamtune.db"


@pytest.mark.parametrize("url", ["sqlite:///{}/a.db", "journal:{}/a.log"])
def test_sqlite_and_journal_storages_open_and_keep_a_study(tmp_path, url):
    import optuna

    url = url.format(tmp_path)
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="s", storage=open_storage(url))  # a fresh open
    assert [t.value for t in again.trials] == [t.value for t in study.trials]
    assert len(again.trials) == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a storage URL"),
        ("foo://host/db", "unknown database 'foo'"),
        ("journal:", "expected journal:FILE"),
        ("postgresql://bob:s3cret@127.0.0.1:1/db", "cannot open storage at 127.0.0.1:1/db"),
    ],
)
def test_bad_storage_urls_give_one_line_without_password(url, message):
    with pytest.raises(StorageError) as info:
        open_storage(url)
    text = str(info.value)
    assert message in text
    assert "s3cret" not in text and "\n" not in text


def test_sqlite_storage_uses_the_write_ahead_log(tmp_path):
    import sqlite3

    import optuna

    path = tmp_path / "wal.db"
    study = optuna.create_study(storage=open_storage(f"sqlite:///{path}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert (
        len(optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{path}").trials) == 2
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:p@ss/w@rd@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
        ("mysql://u:pw@h/db?password=zz&x=1", "mysql://u:***@h/db?password=***&x=1"),
        ("http://bob@host:5000", "http://bob@host:5000"),
        ("journal:a.log", "journal:a.log"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_hides_every_form_of_password(url, shown):
    assert redact(url) == shown


def test_a_password_with_raw_at_or_slash_is_refused_not_parsed(tmp_path):
    with pytest.raises(StorageError, match="percent-encode it") as info:
        open_storage("postgresql://bob:p@ss/w0rd@127.0.0.1:1/optuna")
    assert "w0rd" not in str(info.value)


def test_schema_race_between_workers_is_retried(monkeypatch, tmp_path):
    """PostgreSQL answers all but one of the workers creating the schema together with a
    duplicate key error; those retry and join (the real race: tests/faults/test_faults.py)."""
    import optuna

    real = optuna.storages.RDBStorage
    calls = []

    def racing(url, **options):
        calls.append(url)
        if len(calls) < 3:
            raise RuntimeError(
                'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'
            )
        return real(url, **options)

    monkeypatch.setattr("adamtune.storage.optuna_private.HeartbeatRDBStorage", racing)
    monkeypatch.setattr("adamtune.storage.store.time.sleep", lambda seconds: None)
    storage = open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    assert storage.get_all_studies() == []  # the third try opened a working storage
    assert len(calls) == 3


def test_other_storage_errors_are_not_retried(monkeypatch, tmp_path):

    calls = []

    def refusing(url, **options):
        calls.append(url)
        raise RuntimeError("password authentication failed")

    monkeypatch.setattr("adamtune.storage.optuna_private.HeartbeatRDBStorage", refusing)
    with pytest.raises(StorageError, match="password authentication failed"):
        open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert len(calls) == 1


def test_reading_never_creates_or_alters_a_store(tmp_path):
    import optuna

    from adamtune.results.studies import list_studies, load_study

    missing = tmp_path / "missing.db"
    assert list_studies(f"sqlite:///{missing}") == []
    assert not missing.exists()
    path = tmp_path / "s.db"
    optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    before = path.read_bytes()
    assert [s.study_name for s in list_studies(f"sqlite:///{path}")] == ["s"]
    assert load_study("s", f"sqlite:///{path}").study_name == "s"
    assert path.read_bytes() == before


def test_journal_trials_without_heartbeat_for_three_intervals_are_stale(tmp_path, monkeypatch):
    import time

    import optuna

    from adamtune.storage.journal import HEARTBEAT_ATTR

    stale = []
    storage = open_storage(
        f"journal:{tmp_path / 'j.log'}", heartbeat=2, on_stale=lambda s, t: stale.append(t.number)
    )
    study = optuna.create_study(storage=storage, study_name="j")
    silent, alive, never = study.ask(), study.ask(), study.ask()
    now = time.time()
    storage.set_trial_system_attr(silent._trial_id, HEARTBEAT_ATTR, now - 7)
    storage.record_heartbeat(alive._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == [silent._trial_id]
    optuna.storages.fail_stale_trials(study)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "RUNNING", "RUNNING"]  # never: no heartbeat, never judged
    assert stale == [0]
    assert never.number == 2
    reopened = optuna.load_study(
        study_name="j", storage=open_storage(f"journal:{tmp_path / 'j.log'}")
    )
    assert [t.state.name for t in reopened.trials] == states  # the FAIL is in the file


CLAIM_SCRIPT = """
import sys, time
import optuna
from adamtune.storage.store import open_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1]))
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all processes ask at one moment
print(study.ask().number)
"""


def test_one_waiting_trial_is_claimed_by_exactly_one_process(tmp_path):
    """Processes asking at the same moment: each WAITING trial goes to one of them. With
    sqlite3's lazy transactions two processes both read WAITING and both took it."""
    import subprocess
    import sys
    import time

    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    for round_ in range(4):
        name = tmp_path / f"round{round_}"
        study = optuna.create_study(storage=open_storage(url), study_name="s", load_if_exists=True)
        study.enqueue_trial({"x": 1.0})
        at = str(time.time() + 4.0)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", CLAIM_SCRIPT, url, at], stdout=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        numbers = [int(p.communicate(timeout=120)[0]) for p in processes]
        assert len(set(numbers)) == len(numbers), (name, numbers)
