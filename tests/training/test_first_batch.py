"""The one-batch try before the first trial: a task that cannot work fails at once, in one line
naming the hook and what it found, and a task that can is left exactly as it was."""

import random

import numpy
import pytest
import torch
from torch.nn import functional as F

import adamtune.search.plan
from adamtune.config.settings import SearchSettings
from adamtune.errors import TaskError
from adamtune.search.run import run_search
from adamtune.training.first_batch import check_one_batch
from adamtune.training.precision import Precision
from tests.training.test_datasets import Dicts, WithLoss, dataset_task, hooked_task
from tests.training.test_train import toy_task

CPU = torch.device("cpu")


def check(task):
    check_one_batch(task, CPU, Precision())


def test_a_task_that_works_passes():
    check(toy_task())
    check(dataset_task())
    check(hooked_task())


def test_dict_batches_without_evaluate_fail_before_any_training(storage):
    steps = []

    def compute_loss(model, batch):
        steps.append(1)
        return model(**batch).loss

    task = hooked_task(
        compute_loss=compute_loss,
        evaluate=None,
        loss=F.cross_entropy,
        metric=lambda out, y: 0.0,
        metric_name="val_accuracy",
        direction="maximize",
    )
    with pytest.raises(TaskError, match=r"its batches are dict, not \(inputs, targets\)"):
        run_search(
            SearchSettings(task="x", storage=storage, n_trials=2, space="lr-only", stack=1),
            task=task,
        )
    assert steps == [1, 1]  # one training batch and one validation batch, not an epoch (4)


def test_a_loss_without_a_gradient_is_named():
    task = toy_task()
    detached = task.__class__(
        **{**task.__dict__, "loss": lambda out, y: F.cross_entropy(out, y).detach()}
    )
    with pytest.raises(TaskError, match=r"loss returned a tensor without a gradient"):
        check(detached)


def test_a_loss_that_cannot_take_the_batch_names_the_shapes():
    task = toy_task()
    wrong = task.__class__(
        **{**task.__dict__, "build_model": lambda: torch.nn.Linear(4, 3), "loss": F.mse_loss}
    )
    with pytest.raises(TaskError) as caught:
        check(wrong)
    message = str(caught.value)
    assert "loss on one training batch raised" in message
    assert "model(inputs) gave float32 (16, 3), targets are int64 (16,)" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"build_model": lambda: 5}, r"build_model\(\) must return a torch.nn.Module, got int"),
        ({"build_model": lambda: exit(3)}, r"build_model\(\) raised SystemExit: 3"),
        (
            {"evaluate": lambda model, batches: {"val_loss": 1.0}},
            r"evaluate must return the task's metric 'val_perplexity', got \['val_loss'\]",
        ),
        (
            {"evaluate": lambda model, batches: 1 / 0},
            r"evaluate on the validation split raised ZeroDivisionError",
        ),
        (
            {"compute_loss": lambda model, batch: model(**batch).logits},
            r"compute_loss must return a scalar tensor, got \(16, 2\)",
        ),
    ],
)
def test_each_hook_that_fails_is_named_in_one_line(overrides, expected):
    with pytest.raises(TaskError, match=expected) as caught:
        check(hooked_task(**overrides))
    assert "\n" not in str(caught.value)


def test_a_dataset_that_cannot_be_read_is_named():
    class Broken(Dicts):
        def __getitem__(self, i):
            raise KeyError("image_path")

    tensors = toy_task()
    with pytest.raises(TaskError, match=r"reading one train batch raised KeyError: 'image_path'"):
        check(hooked_task(train=Broken(*tensors.train)))


def test_the_try_leaves_every_random_state_as_it_was():
    torch.manual_seed(11)
    random.seed(11)
    numpy.random.seed(11)
    check(
        dataset_task(build_model=lambda: torch.nn.Sequential(torch.nn.Dropout(0.5), WithLoss().net))
    )
    after = (torch.rand(3).tolist(), random.random(), numpy.random.rand())
    torch.manual_seed(11)
    random.seed(11)
    numpy.random.seed(11)
    assert after == (torch.rand(3).tolist(), random.random(), numpy.random.rand())


def test_the_try_changes_no_trial(storage, monkeypatch, tmp_path):
    """The same search with the try and without it: the same values, trial for trial."""

    def values(study_name):
        study = run_search(
            SearchSettings(
                task="x",
                storage=storage,
                n_trials=3,
                space="lr-only",
                stack=1,
                study_name=study_name,
                baseline=False,
                confirm=0,
            ),
            task=dataset_task(),
        )
        return [t.value for t in study.trials]

    with_try = values("with")
    monkeypatch.setattr(adamtune.search.plan, "check_one_batch", lambda *args: None)
    assert values("without") == with_try


def test_a_training_loop_is_not_tried():
    from adamtune.tasks.base import Task

    def train(trial):
        raise AssertionError("the loop must not run before its trial")

    loop = Task("loop", None, None, None, None, None, "value", "minimize", 1, 1, train_loop=train)
    check(loop)


def test_an_evaluation_that_needs_the_whole_split_is_not_refused_on_a_few_batches():
    """A metric that raises on a part of the split (an AUC with one class in it) is retried on
    the whole split, which it can score."""

    def needs_every_row(model, batches):
        rows = sum(len(batch["labels"]) for batch in batches)
        if rows < 64:
            raise ValueError("Only one class present in y_true")
        return {"val_perplexity": 1.0}

    whole = Dicts(*toy_task().train)  # 64 rows: the try's first 2 batches hold 32 of them
    check(hooked_task(evaluate=needs_every_row, validation=whole))
