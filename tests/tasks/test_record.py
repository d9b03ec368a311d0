"""A study knows its data: resuming after the data, the split sizes, the epochs or the batch
size changed is refused in one line naming the change; the same data resumes as before."""

import optuna
import pytest
from click.testing import CliRunner

from adamtune.cli.app import cli
from adamtune.tasks import resolve_task
from adamtune.tasks.record import changes, task_record

TASK = """
import os
import torch
from torch.nn import functional as F
from adamtune import Task, accuracy


class Rows(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):  # an augmentation: noise drawn at every read
        return self.x[i] + 0.01 * torch.randn(self.x.shape[1]), self.y[i]


def make_task():
    rows = int(os.environ.get("ROWS", "120"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    if os.environ.get("EDIT_ROW"):
        x[5, 0] += 1.0  # one row of the data changed
    y = (x[:, 0] > 0).long()
    train, validation = (x[:rows], y[:rows]), (x[150:], y[150:])
    if os.environ.get("DATASET"):
        train, validation = Rows(*train), Rows(*validation)
    return Task("rows", lambda: torch.nn.Linear(4, 2), train, validation, F.cross_entropy,
                accuracy, "val_accuracy", "maximize", epochs=2,
                batch_size=int(os.environ.get("BATCH", "16")))
"""


@pytest.fixture
def task_file(in_tmp):
    (in_tmp / "rows_task.py").write_text(TASK)
    return "rows_task.py:make_task"


def search(task_file, monkeypatch, *args, **env):
    for name in ("ROWS", "EDIT_ROW", "BATCH", "DATASET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    resolve_task.cache_clear()  # a process resolves a task once: this one runs several commands
    return CliRunner().invoke(
        cli,
        ["search", "--task", task_file, "--n-trials", "1", "--no-tracking", "--space", "lr-only"]
        + ["--stack", "1", *args],
    )


@pytest.mark.parametrize(
    "env, args, said",
    [
        ({"EDIT_ROW": "1"}, [], "data digest"),
        ({"ROWS": "100"}, [], "training rows 120 -> 100"),
        ({"BATCH": "32"}, [], "batch size 16 -> 32"),
        ({}, ["--epochs", "3"], "epochs 2 -> 3"),
    ],
)
def test_a_study_resumed_on_changed_data_or_recipe_is_refused(
    task_file, monkeypatch, env, args, said
):
    first = search(task_file, monkeypatch)
    assert first.exit_code == 0, first.output
    again = search(task_file, monkeypatch, *args, **env)
    assert again.exit_code == 1, again.output
    errors = [line for line in again.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and said in errors[0] and "--resume-changed" in errors[0], errors
    on_purpose = search(task_file, monkeypatch, "--resume-changed", *args, **env)
    assert on_purpose.exit_code == 0, on_purpose.output
    assert "on purpose although" in on_purpose.output
    study = optuna.load_study(
        study_name="rows_task-make_task-lr-only", storage="sqlite:///adamtune.db"
    )
    assert said.split(" ")[0] in " ".join(study.user_attrs["resumed_changed"][0]["changes"])


def test_the_same_data_resumes_also_an_augmenting_dataset(task_file, monkeypatch):
    for _ in range(2):
        result = search(task_file, monkeypatch, DATASET="1")
        assert result.exit_code == 0, result.output
    study = optuna.load_study(
        study_name="rows_task-make_task-lr-only", storage="sqlite:///adamtune.db"
    )
    assert len(study.trials) == 2


def test_a_study_from_before_the_record_resumes_with_a_note(task_file, monkeypatch):
    assert search(task_file, monkeypatch).exit_code == 0
    study = optuna.load_study(
        study_name="rows_task-make_task-lr-only", storage="sqlite:///adamtune.db"
    )
    study._storage.set_study_user_attr(study._study_id, "task_record", None)  # as 0.2 left it
    again = search(task_file, monkeypatch, "--epochs", "3")
    assert again.exit_code == 0, again.output
    assert "could not be checked" in again.output


def test_records_compare_field_by_field():
    task = resolve_task("digits-mlp")
    record = task_record(task, 20)
    assert record == task_record(resolve_task("digits-mlp"), 20)  # built twice: the same
    assert changes(record, {**record, "epochs": 30}) == ["epochs 20 -> 30"]
    assert changes({"epochs": 20}, record) == []  # a field one record lacks is not compared
    other = (task.train[0].clone(), task.train[1])
    other[0][3, 3] += 1
    from dataclasses import replace

    assert changes(record, task_record(replace(task, train=other), 20)) == [
        f"data digest {record['data']!r} -> {task_record(replace(task, train=other), 20)['data']!r}"
    ]
