import pytest

from adamtune.errors import StorageError
from adamtune.storage import open_storage, redact


def test_redact_hides_passwords_only():
    assert redact("postgresql://bob:s3cret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert redact("sqlite:///adamtune.db") == "sqlite:///adamtune.db"


def test_sqlite_and_journal_storages_open(tmp_path):
    assert open_storage(f"sqlite:///{tmp_path / 'a.db'}") is not None
    assert open_storage(f"journal:{tmp_path / 'a.log'}") is not None


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
