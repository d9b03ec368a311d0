"""A study belongs to one task: default names come from where a user's task lives, and a
study resumed with another model or loop is refused, whatever the tasks' names."""

import optuna
from click.testing import CliRunner

from adamtune.cli.app import cli

QUICK = ["--n-trials", "1", "--no-tracking", "--confirm", "0", "--epochs", "1"]
LOOP = "def train(trial):\n    return {{'value': {value}}}\n"
FACTORY = """
import torch
import adamtune
from adamtune.tasks.builtin import BUILTIN


def make_task():
    base = BUILTIN["wine-mlp"]()
    width = {width}
    return adamtune.Task(
        name="mine", build_model=lambda: torch.nn.Sequential(torch.nn.Linear(13, width),
        torch.nn.ReLU(), torch.nn.Linear(width, 3)), train=base.train,
        validation=base.validation, loss=base.loss, metric=base.metric,
        metric_name=base.metric_name, direction=base.direction, epochs=1, batch_size=32)
"""


def search(*args):
    return CliRunner().invoke(cli, ["search", *args, *QUICK])


def names(storage="sqlite:///adamtune.db"):
    return sorted(optuna.get_all_study_names(storage))


def test_two_loops_called_train_get_studies_of_their_own(in_tmp):
    (in_tmp / "mine.py").write_text(LOOP.format(value=0.1))
    (in_tmp / "theirs.py").write_text(LOOP.format(value=0.9))
    assert search("--task", "mine.py:train").exit_code == 0
    assert search("--task", "theirs.py:train").exit_code == 0
    assert names() == ["mine-train-default", "theirs-train-default"]


def test_a_study_resumed_with_another_loop_is_refused_naming_both(in_tmp):
    (in_tmp / "mine.py").write_text(LOOP.format(value=0.1))
    (in_tmp / "theirs.py").write_text(LOOP.format(value=0.9))
    assert search("--task", "mine.py:train", "--study-name", "s").exit_code == 0
    result = search("--task", "theirs.py:train", "--study-name", "s")
    assert result.exit_code != 0
    assert result.stderr.startswith(
        "Error: study 's' was made by task 'mine.py:train', which trains another model or "
        "loop than 'theirs.py:train'"
    )
    assert len(optuna.load_study(study_name="s", storage="sqlite:///adamtune.db").trials) == 1


def test_factories_returning_one_name_with_other_models_do_not_share(in_tmp):
    (in_tmp / "narrow.py").write_text(FACTORY.format(width=8))
    (in_tmp / "wide.py").write_text(FACTORY.format(width=64))
    assert search("--task", "narrow.py:make_task").exit_code == 0
    assert search("--task", "wide.py:make_task").exit_code == 0
    assert names() == ["narrow-make_task-default", "wide-make_task-default"]
    refused = search("--task", "wide.py:make_task", "--study-name", "narrow-make_task-default")
    assert refused.exit_code != 0 and "trains another model or loop" in refused.stderr
    same = search("--task", "narrow.py:make_task", "--study-name", "narrow-make_task-default")
    assert same.exit_code == 0, same.output  # the same task resumes


def test_a_study_under_the_old_default_name_is_still_resumed(in_tmp):
    (in_tmp / "mine.py").write_text(LOOP.format(value=0.1))
    old = optuna.create_study(storage="sqlite:///adamtune.db", study_name="train-default")
    old.set_user_attr("task", "train")  # as the old default made it: no task identity
    result = search("--task", "mine.py:train")
    assert result.exit_code == 0, result.output
    assert names() == ["train-default"]
    study = optuna.load_study(study_name="train-default", storage="sqlite:///adamtune.db")
    assert len(study.trials) == 1 and study.user_attrs["task_spec"] == "mine.py:train"


def test_built_in_tasks_keep_their_names(in_tmp):
    assert search("--task", "wine-mlp").exit_code == 0
    assert search("--task", "wine-mlp").exit_code == 0  # and resume
    assert names() == ["wine-mlp-default"]
