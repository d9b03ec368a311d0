"""adamtune.storage.optuna_private is the one module that touches Optuna's private names: each
is still there in the installed Optuna, and no other module uses one."""

import ast
import importlib
from pathlib import Path

import optuna
import pytest

from adamtune.storage import optuna_private
from adamtune.storage.journal import open_journal
from adamtune.storage.writes import report_all, set_user_attrs

PACKAGE = Path(__file__).resolve().parents[2] / "adamtune"

# What optuna_private reaches for, as "module:attribute" (a class attribute: "module:Class.name")
MODULE_NAMES = [
    "optuna.storages._heartbeat:BaseHeartbeat",
    "optuna.storages._heartbeat:is_heartbeat_enabled",
    "optuna.storages._heartbeat:get_heartbeat_thread",
    "optuna.storages._rdb.storage:_create_scoped_session",
    "optuna.storages._rdb.models:TrialUserAttributeModel",
    "optuna.storages:RDBStorage._set_trial_intermediate_value_without_commit",
    "optuna.storages:RDBStorage._set_trial_attr_without_commit",
    "optuna.storages:JournalStorage.set_trial_system_attr",
]
INSTANCE_NAMES = ["_storage", "_stop_flag", "_thread_local", "_trial_id", "_cached_frozen_trial"]
PRIVATE = {
    "_storage", "_stop_flag", "_thread_local", "_trial_id", "_cached_frozen_trial", "_backend",
    "_heartbeat", "_rdb", "_get_stale_trial_ids", "_create_scoped_session",
    "_set_trial_intermediate_value_without_commit", "_set_trial_attr_without_commit",
}  # fmt: skip


def test_it_names_the_optuna_it_was_written_against():
    assert optuna_private.WRITTEN_AGAINST == "5.0"
    major = int(optuna.__version__.split(".")[0])
    assert major == 5, (
        f"optuna_private was written against Optuna {optuna_private.WRITTEN_AGAINST}; "
        f"Optuna {optuna.__version__} is installed: check every name in it"
    )


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_every_private_name_it_uses_is_still_in_optuna(name):
    module, _, attrs = name.partition(":")
    value = importlib.import_module(module)
    for attr in attrs.split("."):
        assert hasattr(value, attr), (
            f"Optuna {optuna.__version__} has no {name}: see optuna_private"
        )
        value = getattr(value, attr)


def test_a_study_and_a_trial_still_carry_the_private_attributes(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    for owner, attr in [(study, "_storage"), (study, "_stop_flag"), (study, "_thread_local")]:
        assert hasattr(owner, attr), attr
    assert optuna_private.trial_id(trial) == trial._trial_id
    assert optuna_private.cached_trial(trial).number == trial.number
    assert set(INSTANCE_NAMES) <= PRIVATE


def test_the_rdb_path_is_taken_and_writes_in_one_transaction(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    assert optuna_private.rdb_backend(trial, "_set_trial_attr_without_commit") is not None
    report_all([(trial, 0.5, 1)])
    set_user_attrs(trial, {"a": 1})
    frozen = study.get_trials()[0]
    assert frozen.intermediate_values == {1: 0.5} and frozen.user_attrs == {"a": 1}


def test_optimize_loop_lets_study_stop_end_the_loop():
    study = optuna.create_study()
    with optuna_private.optimize_loop(study):
        assert not optuna_private.stop_requested(study)
        study.stop()  # raises outside an optimize loop
        assert optuna_private.stop_requested(study)


def test_the_journal_heartbeat_storage_is_what_optuna_calls(tmp_path):
    storage = open_journal(str(tmp_path / "j.log"), heartbeat=1, on_stale=None)
    study = optuna.create_study(storage=storage)
    study.ask()
    assert optuna_private.heartbeat_enabled(study)


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "self"  # our own attribute


def private_uses(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE and not _on_self(node):
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optuna"):
            found |= {part for part in node.module.split(".") if part in PRIVATE}
            found |= {alias.name for alias in node.names if alias.name in PRIVATE}
    return found


def test_no_other_module_uses_a_private_optuna_name():
    quarantine = PACKAGE / "storage" / "optuna_private.py"
    assert private_uses(quarantine)  # the scan sees them where they are
    users = {
        str(path.relative_to(PACKAGE)): sorted(private_uses(path))
        for path in PACKAGE.rglob("*.py")
        if path != quarantine and private_uses(path)
    }
    assert users == {}
