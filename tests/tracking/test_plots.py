"""The study summary figures, drawn from an Optuna study alone."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.tracking.plots import MIN_TRIALS_FOR_IMPORTANCES, study_figures

CONFIG = AdamConfig(schedule=ScheduleConfig(kind="cosine", warmup_fraction=0.1)).to_dict()


def make_study(n_trials: int) -> optuna.Study:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        beta2 = trial.suggest_float("beta2", 0.9, 0.999)
        trial.set_user_attr("config", {**CONFIG, "lr": lr, "beta2": beta2})
        trial.set_user_attr("total_steps", 50)
        for epoch in range(3):
            trial.report(lr * (epoch + 1), epoch)
        return -abs(lr - 0.01) + 0.001 * beta2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=n_trials)
    return study


def test_every_figure_is_drawn_for_a_study_with_enough_trials():
    figures = study_figures(make_study(MIN_TRIALS_FOR_IMPORTANCES), "val_accuracy")
    assert set(figures) == {
        "plots/optimization_history.png",
        "plots/lr_schedules_top.png",
        "plots/validation_curves_top.png",
        "plots/param_importances.png",
    }
    bars = figures["plots/param_importances.png"].axes[0].get_yticklabels()
    assert {label.get_text() for label in bars} == {"lr", "beta2"}
    schedules = figures["plots/lr_schedules_top.png"].axes[0]
    assert len(schedules.get_lines()) == 5
    assert all(len(line.get_xdata()) == 50 for line in schedules.get_lines())


def test_the_exported_trial_is_marked_on_the_lr_plot_even_outside_the_top():
    study = make_study(12)
    worst = min(study.trials, key=lambda t: t.value)
    figures = study_figures(study, "val_accuracy", exported=worst.number)
    lines = figures["plots/lr_schedules_top.png"].axes[0].get_lines()
    marked = [line for line in lines if line.get_label().endswith(", exported")]
    assert len(lines) == 6 and len(marked) == 1
    assert marked[0].get_label().startswith(f"trial {worst.number} ")


def test_too_few_trials_draw_no_importances():
    figures = study_figures(make_study(MIN_TRIALS_FOR_IMPORTANCES - 1), "val_accuracy")
    assert "plots/param_importances.png" not in figures
    assert "plots/optimization_history.png" in figures


@pytest.mark.parametrize("states", [(), ("FAIL",)])
def test_a_study_without_completed_trials_draws_nothing(states):
    study = optuna.create_study()
    for state in states:
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState[state]))
    assert study_figures(study, "val_loss") == {}


def test_importances_need_no_scikit_learn_forests():
    """The tracking worker blocks sklearn.ensemble (a 1.6 s import); the summary must not miss
    it."""
    code = (
        "import sys; sys.modules['sklearn.ensemble'] = None\n"
        "from tests.tracking.test_plots import make_study\n"
        "from adamtune.tracking.plots import study_figures\n"
        "figures = study_figures(make_study(8), 'val_accuracy')\n"
        "assert 'plots/param_importances.png' in figures, sorted(figures)\n"
        "assert 'sklearn.ensemble' not in [m for m, v in sys.modules.items() if v]\n"
    )
    root = Path(__file__).parents[2]  # where `tests` imports from
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr


def test_a_population_gets_its_members_learning_rates_coloured_by_their_metric():
    from adamtune.tracking.plots import population_lrs

    late = {**CONFIG, "lr": 0.5}
    trajectory = [{"step": 0, "config": CONFIG}, {"step": 20, "config": late}]

    def member(trial: optuna.Trial) -> float:
        trial.set_user_attr("config", CONFIG)
        trial.set_user_attr("total_steps", 50)
        trial.set_user_attr("trajectory", trajectory)
        return float(trial.number)

    study = optuna.create_study(direction="maximize")
    study.optimize(member, n_trials=3)
    figures = study_figures(study, "val_accuracy")
    lines = figures["plots/population_lr.png"].axes[0].get_lines()
    assert len(lines) == 3 and len({line.get_color() for line in lines}) == 3
    rates = population_lrs(trajectory, 50)
    assert rates[19] < 0.01 < rates[20]  # the member's own switch at step 20
