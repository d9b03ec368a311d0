"""Every use of MLflow's private names, in one place (``tests/tracking/test_mlflow_private.py``
fails loudly when a release moves one). Written against MLflow 3.x (``WRITTEN_AGAINST``).

adamtune.tracking.sql_metrics writes a trial's metrics with one bulk insert into a SQL
store's ``metrics`` table; for that it needs the client's store, the run row and the store's
latest-metrics update, none of which MLflow's public client offers.
"""

from __future__ import annotations

from typing import Any

WRITTEN_AGAINST = "3"


def sql_store(client: Any) -> Any:
    """The MlflowClient's SqlAlchemyStore, or None (a file store, a server, another layout)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except Exception:  # noqa: BLE001  (no SQL store support, or another client layout)
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


def metric_model() -> Any:
    """MLflow's ORM model of one metric row (its ``__table__`` takes the bulk insert)."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    return SqlMetric


def check_run_active(store: Any, run_id: str, session: Any) -> None:
    """Raise as log_batch would for a run that is missing or not active."""
    store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))


def update_latest_metrics(store: Any, metrics: list[Any], session: Any) -> None:
    store._update_latest_metrics_if_necessary(metrics, session)
