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
