"""A stacked search on a GPU asks the trials its freed rows will take while the epoch trains
(forced on here, on the CPU)."""

import optuna
import pytest
from optuna.trial import TrialState

from adamtune.search.objective import Objective
from adamtune.search.pruners import PeerMedianPruner
from adamtune.search.samplers import SeededByFirstTrial
from adamtune.search.stacked import _Search, run_stacked
from adamtune.space.search_space import load_space
from adamtune.tasks import resolve_task


def _study(storage: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage, direction="maximize", pruner=optuna.pruners.NopPruner()
    )


def test_the_next_trials_are_asked_while_the_last_epoch_trains(storage):
    study = _study(storage)
    objective = Objective(resolve_task("digits-mlp"), load_space("lr-only"), epochs=2)
    run_stacked(study, objective, rows=4, n_trials=8, timeout=None, ask_ahead=True)
    first, second = study.trials[:4], study.trials[4:]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # Asked on the thread during the first rows' second (last) epoch, before any was told.
    assert max(t.datetime_start for t in second) < min(t.datetime_complete for t in first)


def test_asking_ahead_never_asks_past_n_trials(storage):
    study = _study(storage)
    objective = Objective(resolve_task("digits-mlp"), load_space("lr-only"), epochs=3)
    run_stacked(study, objective, rows=4, n_trials=6, timeout=None, ask_ahead=True)
    assert len(study.trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_on_the_cpu_by_default_the_next_trials_are_asked_at_the_epochs_end(storage):
    study = _study(storage)
    objective = Objective(resolve_task("digits-mlp"), load_space("lr-only"), epochs=2)
    run_stacked(study, objective, rows=4, n_trials=8, timeout=None)
    first, second = study.trials[:4], study.trials[4:]
    assert min(t.datetime_start for t in second) >= max(t.datetime_complete for t in first)


def test_the_same_seed_gives_the_same_pruned_search_asked_ahead(tmp_path):
    def search(name: str) -> list:
        study = optuna.create_study(
            storage=f"sqlite:///{tmp_path / name}",
            direction="maximize",
            sampler=SeededByFirstTrial("tpe", 0),
            pruner=PeerMedianPruner(n_startup_trials=3, n_warmup_steps=1),
        )
        objective = Objective(resolve_task("digits-mlp"), load_space("default"), epochs=4)
        run_stacked(study, objective, rows=4, n_trials=14, timeout=None, ask_ahead=True)
        return study.trials

    a, b = search("a.db"), search("b.db")
    assert [t.params for t in a] == [t.params for t in b]
    assert [(t.state, t.value) for t in a] == [(t.state, t.value) for t in b]
    assert len(a) == 14 and TrialState.RUNNING not in {t.state for t in a}
    assert TrialState.PRUNED in {t.state for t in a}  # rows left early, so forecasts varied


def test_a_storage_failure_on_the_thread_fails_every_running_trial(storage, monkeypatch):
    study = _study(storage)
    objective = Objective(resolve_task("digits-mlp"), load_space("lr-only"), epochs=2)
    real, calls = _Search.start_trial, []

    def failing(self):
        calls.append(1)
        if len(calls) == 6:  # the second asked ahead, on the thread
            raise RuntimeError("database is locked")
        return real(self)

    monkeypatch.setattr(_Search, "start_trial", failing)
    with pytest.raises(RuntimeError, match="database is locked"):
        run_stacked(study, objective, rows=4, n_trials=8, timeout=None, ask_ahead=True)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states, states
    assert states.count(TrialState.FAIL) >= 4  # the first rows and the one asked ahead
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert all("database is locked" in t.user_attrs["fail_reason"] for t in failed)


@pytest.mark.parametrize("ask_ahead", [False, True])
def test_an_ask_the_storage_refuses_stops_the_search_and_is_not_blamed_on_the_task(
    storage, monkeypatch, ask_ahead
):
    study = _study(storage)
    objective = Objective(resolve_task("digits-mlp"), load_space("lr-only"), epochs=2)
    real, calls = optuna.Study.ask, []

    def refusing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("database is locked")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", refusing)
    with pytest.raises(RuntimeError, match="database is locked"):
        run_stacked(study, objective, rows=4, n_trials=8, timeout=None, ask_ahead=ask_ahead)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states, states
    assert len(states) < 8  # the search stopped there, it did not ask on
