"""How a user's function is read: a plain factory, a factory of the trial, or a training loop,
as its signature is written (issue: a default argument once received adamtune's values)."""

from __future__ import annotations

import pytest

from adamtune.tasks.loader import resolve_task as load_task

FILE = """
from __future__ import annotations

import torch
from torch.nn import functional as F

import adamtune
import optuna
from adamtune import Task, accuracy

SEEN = []


def _task(dropout):
    SEEN.append(dropout)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    model = lambda: torch.nn.Sequential(torch.nn.Dropout(float(dropout)), torch.nn.Linear(4, 2))
    return Task("t", model, (x, y), (x, y), F.cross_entropy, accuracy, "val_accuracy",
                "maximize", epochs=1, batch_size=8)


def with_default(attention_dropout: float = 0.1) -> Task:
    return _task(attention_dropout)


def plain():
    return _task(0.2)


def of_the_trial(trial) -> Task:
    return _task(trial.suggest_float("dropout", 0.0, 0.5))


def typed_trial(trial: optuna.Trial):
    return _task(trial.suggest_float("dropout", 0.0, 0.5))


@adamtune.task_factory
def marked(trial):
    return _task(trial.suggest_float("dropout", 0.0, 0.5))


def loop(trial):
    return 1.0
"""


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "signatures_task.py"
    path.write_text(FILE)
    return path


@pytest.mark.parametrize(
    "name, per_trial, loop",
    [
        ("with_default", False, False),
        ("plain", False, False),
        ("of_the_trial", True, False),
        ("typed_trial", True, False),
        ("marked", True, False),
        ("loop", False, True),
    ],
)
def test_each_signature_is_read_as_written(task_file, name, per_trial, loop):
    task = load_task(f"{task_file}:{name}")
    assert (task.per_trial is not None) == per_trial
    assert (task.train_loop is not None) == loop


def test_a_factory_with_a_default_is_called_with_no_argument(task_file):
    import sys

    load_task(f"{task_file}:with_default")
    module = sys.modules["adamtune_user_task_signatures_task"]
    assert module.SEEN[-1] == 0.1  # its own default, not adamtune's values object


def test_a_signature_two_readings_fit_says_which_was_taken(task_file):
    from adamtune.tasks.loader import reading_note

    load_task(f"{task_file}:with_default")
    note = reading_note(f"{task_file}:with_default")
    assert note is not None and "with_default(attention_dropout=0.1)" in note
    assert "@adamtune.task_factory" in note
    load_task(f"{task_file}:plain")
    assert reading_note(f"{task_file}:plain") is None
