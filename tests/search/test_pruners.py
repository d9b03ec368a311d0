import math
import random

import optuna
import pytest
from optuna.trial import TrialState

from adamtune.search.pruners import PeerMedianPruner


def _study(direction: str = "maximize") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction=direction)


def _reported(study: optuna.Study, values: list[float]) -> optuna.Trial:
    trial = study.ask()
    for step, value in enumerate(values):
        trial.report(value, step)
    return trial


def _judged(study: optuna.Study, trial: optuna.Trial, pruner) -> bool:
    return pruner.prune(study, study._storage.get_trial(trial._trial_id))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_one_at_a_time_it_decides_as_optunas_median_pruner(direction):
    rng = random.Random(0)
    ours, optunas = PeerMedianPruner(3, 2), optuna.pruners.MedianPruner(3, 2)
    decisions = []
    for case in range(60):
        study = _study(direction)
        for _ in range(rng.randrange(0, 10)):  # finished trials, some of them pruned earlier
            values = [rng.random() for _ in range(rng.randrange(2, 6))]
            trial = _reported(study, values)
            if rng.random() < 0.2:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, values[-1])
        low = 0.0 if direction == "maximize" else 0.2  # the trial judged leans worse
        values = [low + 0.8 * rng.random() for _ in range(rng.randrange(1, 6))]
        if case % 10 == 0:
            values[-1] = math.nan
        trial = _reported(study, values)
        decision = _judged(study, trial, ours)
        assert decision == _judged(study, trial, optunas), (case, values)
        decisions.append(decision)
    assert 5 < sum(decisions) < 55  # both answers occur, so the agreement means something


def test_rows_of_one_stack_are_judged_against_the_rows_started_before_them():
    study = _study()
    rows = [_reported(study, [value]) for value in (0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.95)]
    pruner = PeerMedianPruner(n_startup_trials=5, n_warmup_steps=0)
    judged = [_judged(study, row, pruner) for row in rows]
    # Rows 0-4 have fewer than 5 rows before them; row 5 (0.1) is under their median (0.7),
    # row 6 (0.95) over the median of rows 0-5. Optuna's own sees no COMPLETE trial at all.
    assert judged == [False, False, False, False, False, True, False]
    assert not any(_judged(study, row, optuna.pruners.MedianPruner(5, 0)) for row in rows)


def test_later_trials_running_do_not_count_and_finished_ones_do():
    study = _study()
    first = _reported(study, [0.1])
    later = [_reported(study, [0.9]) for _ in range(5)]
    pruner = PeerMedianPruner(n_startup_trials=1, n_warmup_steps=0)
    assert not _judged(study, first, pruner)  # no trial before it, none finished
    for trial in later[:3]:
        study.tell(trial, 0.9)
    assert _judged(study, first, pruner)  # three finished, all better


def test_the_warm_up_and_a_diverged_row():
    study = _study()
    for _ in range(5):
        study.tell(_reported(study, [0.9, 0.9, 0.9]), 0.9)
    pruner = PeerMedianPruner(n_startup_trials=5, n_warmup_steps=2)
    assert not _judged(study, _reported(study, [0.1, 0.1]), pruner)  # epoch 1 < warm-up
    assert _judged(study, _reported(study, [0.1, 0.1, 0.1]), pruner)
    assert _judged(study, _reported(study, [0.95, 0.95, math.nan]), PeerMedianPruner(5, 0)) is False
    assert _judged(study, _reported(study, [math.nan]), PeerMedianPruner(5, 0))


def test_bad_settings_say_which():
    with pytest.raises(ValueError, match="n_startup_trials and n_warmup_steps must be >= 0"):
        PeerMedianPruner(-1, 0)


def test_a_stacked_default_search_prunes_within_its_first_stack(storage):
    from adamtune.config.settings import SearchSettings
    from adamtune.search.run import run_search

    settings = SearchSettings(
        task="digits-mlp", storage=storage, study_name="s", n_trials=12, stack=12, epochs=4,
        space="default",
    )  # fmt: skip
    study = run_search(settings)
    states = [t.state for t in study.trials]
    assert len(states) == 12 and TrialState.RUNNING not in states
    # All 12 train side by side: without the rows before them no trial here would be pruned.
    assert states.count(TrialState.PRUNED) >= 2, states
