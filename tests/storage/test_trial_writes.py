"""Batched trial writes: the same stored values as Optuna's own calls, one commit for many
writes on a database, and the plain calls wherever batching is not available."""

import optuna
import pytest
from sqlalchemy import event

from adamtune.storage import writes as trial_writes
from adamtune.storage.writes import report_all, set_user_attrs


def _study(url):
    if url == "memory":
        return optuna.create_study()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return optuna.create_study(
            storage=JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        )
    return optuna.create_study(storage=url)


@pytest.fixture(params=["sqlite", "journal", "memory"])
def study(request, tmp_path):
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'w.db'}",
        "journal": f"journal:{tmp_path / 'w.log'}",
        "memory": "memory",
    }[request.param]
    return _study(url)


def test_reports_and_attributes_are_stored_as_optunas_own_calls_store_them(study):
    trials = [study.ask() for _ in range(3)]
    report_all([(t, 0.1 * t.number, 0) for t in trials])
    report_all([(t, 0.5 + t.number, 1) for t in trials])
    set_user_attrs(trials[1], {"config": {"lr": 0.001}, "seed": 3})
    for trial in trials:
        assert trial.should_prune() is False  # the trial's own cache serves the pruner
        study.tell(trial, 1.0)
    stored = study.get_trials()
    assert [t.intermediate_values for t in stored] == [
        {0: 0.0, 1: 0.5},
        {0: 0.1, 1: 1.5},
        {0: 0.2, 1: 2.5},
    ]
    assert stored[1].user_attrs == {"config": {"lr": 0.001}, "seed": 3}


def test_a_step_already_reported_is_kept_not_overwritten(study):
    trial = study.ask()
    report_all([(trial, 0.25, 0)])
    report_all([(trial, 0.75, 0)])
    assert study.get_trials()[0].intermediate_values == {0: 0.25}


def test_a_negative_step_is_refused(study):
    with pytest.raises(ValueError, match="report step must be >= 0, got -1"):
        report_all([(study.ask(), 0.5, -1)])


def _count_commits(study):
    engine = study._storage._backend.engine
    commits = []
    event.listen(engine, "commit", lambda connection: commits.append(1))
    return commits


def test_on_a_database_many_writes_are_one_commit(tmp_path):
    study = _study(f"sqlite:///{tmp_path / 'w.db'}")
    trials = [study.ask() for _ in range(16)]
    commits = _count_commits(study)
    report_all([(t, 0.5, 0) for t in trials])
    assert len(commits) == 1
    set_user_attrs(trials[0], {"a": 1, "b": 2, "c": 3})
    assert len(commits) == 2


def test_without_optunas_helpers_each_write_is_its_own_call(tmp_path, monkeypatch):
    study = _study(f"sqlite:///{tmp_path / 'w.db'}")
    trials = [study.ask() for _ in range(4)]
    monkeypatch.setattr(trial_writes, "rdb_backend", lambda trial, helper: None)
    commits = _count_commits(study)
    report_all([(t, 0.5, 0) for t in trials])
    set_user_attrs(trials[0], {"a": 1, "b": 2})
    assert len(commits) == 6
    assert [t.intermediate_values for t in study.get_trials()] == [{0: 0.5}] * 4


def test_a_key_conflict_in_the_batch_falls_back_to_one_write_at_a_time(tmp_path, monkeypatch):
    study = _study(f"sqlite:///{tmp_path / 'w.db'}")
    trials = [study.ask() for _ in range(2)]
    monkeypatch.setattr(trial_writes, "_in_one_transaction", lambda rdb, writes: False)
    report_all([(t, 0.5, 0) for t in trials])
    assert [t.intermediate_values for t in study.get_trials()] == [{0: 0.5}] * 2


def test_a_finished_trial_is_refused_as_optuna_refuses_it(tmp_path):
    study = _study(f"sqlite:///{tmp_path / 'w.db'}")
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        report_all([(trial, 0.5, 3)])
