"""adamtune.tracking.mlflow_private is the one module that touches MLflow's private names: each
is still there in the installed MLflow, and no other module uses one."""

import ast
from pathlib import Path

import mlflow
import pytest

from adamtune.tracking import mlflow_private

PACKAGE = Path(__file__).resolve().parents[2] / "adamtune"
PRIVATE = {
    "_tracking_client", "_get_run", "_check_run_is_active", "_update_latest_metrics_if_necessary",
}  # fmt: skip


def test_it_names_the_mlflow_it_was_written_against():
    assert mlflow.__version__.split(".")[0] == mlflow_private.WRITTEN_AGAINST, (
        f"mlflow_private was written against MLflow {mlflow_private.WRITTEN_AGAINST}.x; "
        f"MLflow {mlflow.__version__} is installed: check every name in it"
    )


@pytest.mark.parametrize(
    "name", ["_get_run", "_check_run_is_active", "_update_latest_metrics_if_necessary"]
)
def test_every_private_store_method_is_still_in_mlflow(name):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    assert hasattr(SqlAlchemyStore, name), f"MLflow {mlflow.__version__} has no {name}"


def test_the_client_still_reaches_its_sql_store(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert hasattr(client, "_tracking_client")
    assert mlflow_private.sql_store(client) is not None
    assert mlflow_private.metric_model().__tablename__ == "metrics"


def test_a_client_of_another_kind_is_not_a_sql_store():
    assert mlflow_private.sql_store(object()) is None  # sql_metrics then uses log_batch


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "self"  # our own attribute


def private_uses(path: Path) -> set[str]:
    return {
        node.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE and not _on_self(node)
    }


def test_no_other_module_uses_a_private_mlflow_name():
    quarantine = PACKAGE / "tracking" / "mlflow_private.py"
    assert private_uses(quarantine) == PRIVATE
    users = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p != quarantine and private_uses(p)
    ]
    assert users == []
