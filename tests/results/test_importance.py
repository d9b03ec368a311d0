"""`adamtune show` says which parameters mattered: Optuna's own PED-ANOVA, on the same study."""

import optuna
import pytest
from click.testing import CliRunner
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

from adamtune.cli.app import cli
from adamtune.config.adam import AdamConfig
from adamtune.results.importance import MIN_TRIALS_FOR_IMPORTANCES, importance_report, importances


def study(storage, n):
    made = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    made.set_user_attr("metric", "val_accuracy")

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("beta1", 0.8, 0.99)
        trial.set_user_attr("config", AdamConfig(lr=lr).to_dict())
        return -abs(lr - 0.01)  # only lr matters

    made.optimize(objective, n_trials=n)
    return made


def test_the_importances_are_optunas_ped_anova(tmp_path):
    made = study(f"sqlite:///{tmp_path / 's.db'}", 30)
    found, done = importances(made)
    assert done == 30
    assert found == pytest.approx(
        dict(get_param_importances(made, evaluator=PedAnovaImportanceEvaluator()))
    )
    assert next(iter(found)) == "lr"


def test_show_prints_the_table_and_what_it_rests_on(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study(storage, 30)
    result = CliRunner().invoke(cli, ["show", "s", "--storage", storage])
    assert result.exit_code == 0, result.output
    assert "Parameter importance (PED-ANOVA over 30 completed trials" in result.output
    table = result.output.split("Parameter importance", 1)[1]
    assert table.index("lr") < table.index("beta1")


def test_too_few_trials_are_said_not_ranked(tmp_path):
    made = study(f"sqlite:///{tmp_path / 's.db'}", MIN_TRIALS_FOR_IMPORTANCES - 1)
    assert "too few to tell" in importance_report(made)
