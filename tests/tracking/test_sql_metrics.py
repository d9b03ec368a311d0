"""The bulk metric insert stores what MLflow's log_batch stores, and falls back to it."""

import math

import pytest

from adamtune.tracking import sql_metrics

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402


def metrics(n=1300):
    out = [Metric("lr", 1e-3 * (1 + i % 7), 1000, i) for i in range(n)]
    out += [Metric("train_loss", 1.0 / (i + 1), 1000 + i, i) for i in range(n)]
    out += [Metric("val_loss", v, 5000, s) for s, v in ((10, 0.5), (20, math.nan), (30, math.inf))]
    out.append(Metric("val_loss", 0.5, 5000, 10))  # an exact duplicate: stored once
    return out


def stored(client, run_id):
    history = {
        key: [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]
        for key in ("lr", "train_loss", "val_loss")
    }
    return history, client.get_run(run_id).data.metrics


@pytest.fixture
def client(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("x")
    return client


def test_bulk_insert_stores_what_log_batch_stores(client):
    experiment = client.get_experiment_by_name("x").experiment_id
    fast, slow = (client.create_run(experiment).info.run_id for _ in range(2))
    assert sql_metrics.sql_store(client) is not None  # the SQL path is the one taken
    sql_metrics.log_metrics(client, fast, metrics())
    for i in range(0, len(metrics()), 1000):
        client.log_batch(slow, metrics=metrics()[i : i + 1000])
    ours, theirs = stored(client, fast), stored(client, slow)
    assert len(ours[0]["lr"]) == 1300 and len(ours[0]["val_loss"]) == 3
    assert str(ours) == str(theirs)  # str: NaN == NaN
    assert ours[1]["train_loss"] == 1.0 / 1300  # latest: the highest step


def test_a_failing_bulk_insert_falls_back_to_log_batch_and_loses_nothing(client, monkeypatch):
    def broken(*args):
        raise AttributeError("store moved")

    monkeypatch.setattr(sql_metrics, "_bulk_insert", broken)
    run_id = client.create_run(client.get_experiment_by_name("x").experiment_id).info.run_id
    sql_metrics.log_metrics(client, run_id, metrics())
    history, latest = stored(client, run_id)
    assert len(history["lr"]) == 1300 and len(history["train_loss"]) == 1300
    assert latest["lr"] == pytest.approx(1e-3 * (1 + 1299 % 7))


def test_a_deleted_run_refuses_metrics_as_mlflow_does(client):
    run_id = client.create_run(client.get_experiment_by_name("x").experiment_id).info.run_id
    client.delete_run(run_id)
    with pytest.raises(mlflow.exceptions.MlflowException, match="must be in the 'active' state"):
        sql_metrics.log_metrics(client, run_id, metrics(3))
