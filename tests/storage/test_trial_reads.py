"""One read of a study's trials per sampling or pruning: fewer storage reads, same samples."""

import threading

import optuna
from sqlalchemy import event

from adamtune.storage.reads import one_read_of_trials


def _study(tmp_path, name="r"):
    sampler = optuna.samplers.TPESampler(seed=3, n_startup_trials=4)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'r.db'}", study_name=name, sampler=sampler
    )
    for x in (0.1, 0.5, 0.9, 0.3, 0.7):
        study.enqueue_trial({"x": x, "y": 1 - x})
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1) + trial.suggest_float("y", 0, 1) ** 2)
    for _ in range(3):  # running trials, which the constant liar reads
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
    return study


def _count_trial_reads(study):
    reads = []

    def on_execute(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT") and "FROM trials" in statement:
            reads.append(statement)

    event.listen(study._storage._backend.engine, "before_cursor_execute", on_execute)
    return reads


def test_inside_the_block_the_trials_are_read_once(tmp_path):
    study = _study(tmp_path)
    reads = _count_trial_reads(study)
    for _ in range(5):
        study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    outside = len(reads)
    reads.clear()
    with one_read_of_trials(study):
        for _ in range(5):
            assert len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,))) == 3
    assert outside >= 5 and 0 < len(reads) <= outside / 5


def test_sampling_in_the_block_draws_what_it_draws_outside(tmp_path):
    drawn = []
    for inside in (False, True):
        folder = tmp_path / str(inside)
        folder.mkdir()
        study = _study(folder)
        trial = study.ask()
        if inside:
            with one_read_of_trials(study):
                drawn.append((trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)))
        else:
            drawn.append((trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)))
    assert drawn[0] == drawn[1]


def test_after_the_block_and_in_other_threads_reads_are_live(tmp_path):
    study = _study(tmp_path)
    seen_by_other_thread = []
    with one_read_of_trials(study):
        assert len(study.get_trials()) == 8
        study.tell(study.ask(), 1.0)
        assert len(study.get_trials()) == 8  # the snapshot
        other = threading.Thread(target=lambda: seen_by_other_thread.append(len(study.trials)))
        other.start()
        other.join()
    assert seen_by_other_thread == [9]
    assert len(study.get_trials()) == 9
