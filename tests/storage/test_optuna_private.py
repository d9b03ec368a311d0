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
    "optuna.search_space.group_decomposed:_GroupDecomposedSearchSpace.calculate",
    "optuna.search_space.group_decomposed:_SearchSpaceGroup.add_distributions",
]
INSTANCE_NAMES = ["_storage", "_stop_flag", "_thread_local", "_trial_id", "_cached_frozen_trial"]
PRIVATE = {
    "_storage", "_stop_flag", "_thread_local", "_trial_id", "_cached_frozen_trial", "_backend",
    "_heartbeat", "_rdb", "_get_stale_trial_ids", "_create_scoped_session",
    "_set_trial_intermediate_value_without_commit", "_set_trial_attr_without_commit",
    "_group_decomposed_search_space", "_include_pruned", "_search_space", "_study_id",
    "_get_trials", "group_decomposed",
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


def test_tpe_still_keeps_its_group_decomposition_where_incremental_groups_replaces_it():
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True)
    optuna_private.incremental_groups(sampler)
    assert isinstance(sampler._group_decomposed_search_space, optuna_private._IncrementalGroups)
    plain = optuna.samplers.TPESampler()  # no groups: left alone
    optuna_private.incremental_groups(plain)
    assert plain._group_decomposed_search_space is None


def test_incremental_groups_are_optunas_groups_after_every_trial():
    from optuna.distributions import FloatDistribution
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace
    from optuna.trial import create_trial

    study = optuna.create_study()
    ours = optuna_private._IncrementalGroups(include_pruned=True)
    names = ["a", "b", "c", "d", "e"]
    for i in range(40):  # the parameter sets change late: groups split at 20 and 30
        keys = names if i < 20 else names[:3] if i < 30 else ["a", "d"]
        distributions = {k: FloatDistribution(0, 1) for k in keys}
        state = optuna.trial.TrialState.PRUNED if i % 4 == 1 else optuna.trial.TrialState.COMPLETE
        study.add_trial(
            create_trial(
                params={k: 0.5 for k in keys}, distributions=distributions, state=state,
                value=None if state == optuna.trial.TrialState.PRUNED else float(i),
            )
        )  # fmt: skip
        theirs = _GroupDecomposedSearchSpace(include_pruned=True).calculate(study)
        mine = ours.calculate(study)
        assert [sorted(g) for g in mine.search_spaces] == [sorted(g) for g in theirs.search_spaces]


def test_incremental_groups_sample_what_optunas_own_decomposition_samples():
    """The default space has conditional parameters (a switched-off weight decay has no value),
    so the groups split as trials arrive; both samplers must draw the same points throughout."""
    from adamtune.space.search_space import load_space

    space = load_space("default")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def drawn(incremental: bool) -> list[dict]:
        sampler = optuna.samplers.TPESampler(
            seed=3, multivariate=True, group=True, constant_liar=True, n_startup_trials=4
        )
        if incremental:
            optuna_private.incremental_groups(sampler)
        study = optuna.create_study(sampler=sampler)
        for i in range(30):
            trial = study.ask()
            config = space.sample(trial)
            if i % 7 == 3:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, -abs(config.lr - 3e-3) - config.weight_decay)
        return [t.params for t in study.trials]

    ours, optunas = drawn(True), drawn(False)
    assert ours == optunas
    assert len({len(p) for p in ours}) > 1  # conditional parameters did come and go


def test_optimize_loop_lets_study_stop_end_the_loop():
    study = optuna.create_study()
    with optuna_private.optimize_loop(study):
        assert not optuna_private.stop_requested(study)
        study.stop()  # raises outside an optimize loop
        assert optuna_private.stop_requested(study)


def test_a_thread_joining_the_loop_keeps_a_stop_already_requested():
    import threading

    study = optuna.create_study()
    with optuna_private.optimize_loop(study):
        study.stop()
        seen = []

        def joined() -> None:
            with optuna_private.optimize_loop(study, fresh=False):
                seen.append(optuna_private.stop_requested(study))

        thread = threading.Thread(target=joined)
        thread.start()
        thread.join()
        assert seen == [True] and optuna_private.stop_requested(study)


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
