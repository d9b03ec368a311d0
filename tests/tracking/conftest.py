import pytest


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path, monkeypatch):
    """Run every tracking test in its tmp_path: a local MLflow store keeps its artifacts under
    ./mlruns of the process that logs them, which would otherwise be the repository's root."""
    monkeypatch.chdir(tmp_path)
