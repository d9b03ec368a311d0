import os

import pytest
import torch

from tests.servers import MLFLOW, MLFLOW_SERVER_WORKERS, free_port, serve  # noqa: F401

# The Triton kernel's logic is tested on CPU through Triton's interpreter; it must be switched
# on before triton is first imported (adamtune imports it lazily, so here is early enough).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _no_confirmation_unless_asked(monkeypatch):
    """`adamtune search` confirms its top trials by default (--confirm 3), which would retrain
    18 runs after every search a test makes, subprocesses included; the tests of confirmation
    pass --confirm themselves."""
    monkeypatch.setenv("ADAMTUNE_CONFIRM", "0")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory, so sqlite:///adamtune.db and friends land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped afterwards. Skipped, with the reason,
    where no server answers on 127.0.0.1:5432 (CI and this project's machines have one)."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        connection = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 unreachable: {str(exc).splitlines()[0]}")
    name = f"adamtune_test_{uuid.uuid4().hex[:12]}"
    connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


@pytest.fixture
def mlflow_server(tmp_path, serve):  # noqa: F811  (the serve fixture)
    """A real `mlflow server` on a free loopback port, stopped after the test."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve(
        [
            *MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *MLFLOW_SERVER_WORKERS,
        ],
        f"{url}/health",
        tmp_path,
    )
    return url
