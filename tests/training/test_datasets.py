"""Tasks whose splits are Datasets, and the compute_loss / evaluate hooks."""

import math

import pytest
import torch
from torch.nn import functional as F

from adamtune.config.adam import AdamConfig
from adamtune.config.settings import SearchSettings
from adamtune.errors import TaskError
from adamtune.search.run import run_search
from adamtune.tasks import Task, accuracy
from adamtune.training.single import train
from adamtune.training.stacked.loop import train_stacked
from tests.training.test_train import toy_task

CONFIG = AdamConfig(lr=1e-2, decoupled=True, weight_decay=0.01)


class Pairs(torch.utils.data.Dataset):
    """A map-style Dataset over (input, target) tensors, one row at a time."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Dicts(Pairs):
    def __getitem__(self, i):
        return {"inputs": self.x[i], "labels": self.y[i]}


class WithLoss(torch.nn.Module):
    """A Hugging Face-style model: called with the batch's fields, returns its own loss."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
        )

    def forward(self, inputs, labels):
        logits = self.net(inputs)
        return type("Output", (), {"loss": F.cross_entropy(logits, labels), "logits": logits})


def dataset_task(**overrides):
    tensors = toy_task()
    fields = dict(
        name="toy-dataset",
        build_model=tensors.build_model,
        train=Pairs(*tensors.train),
        validation=Pairs(*tensors.validation),
        loss=F.cross_entropy,
        metric=accuracy,
        metric_name="val_accuracy",
        direction="maximize",
        epochs=3,
        batch_size=16,
    )
    return Task(**{**fields, **overrides})


def perplexity(model, batches):
    total, count = 0.0, 0
    for batch in batches:
        total += model(**batch).loss.item() * len(batch["labels"])
        count += len(batch["labels"])
    return {"val_loss": total / count, "val_perplexity": math.exp(total / count)}


def hooked_task(**overrides):
    tensors = toy_task()
    fields = dict(
        name="toy-hooks",
        build_model=WithLoss,
        train=Dicts(*tensors.train),
        validation=Dicts(*tensors.validation),
        loss=None,
        metric=None,
        metric_name="val_perplexity",
        direction="minimize",
        epochs=3,
        batch_size=16,
        compute_loss=lambda model, batch: model(**batch).loss,
        evaluate=perplexity,
    )
    return Task(**{**fields, **overrides})


def test_a_dataset_of_the_tensors_trains_exactly_as_the_tensors_do():
    """The DataLoader shuffles with the run's generator: the same batches, the same run."""
    alone = train(toy_task(), CONFIG, seed=3)
    loaded = train(dataset_task(), CONFIG, seed=3)
    assert loaded.train_losses == alone.train_losses
    assert loaded.metrics == alone.metrics
    assert loaded.learning_rates == alone.learning_rates  # every step's LR, logged as before


def test_dataloader_workers_give_the_same_batches():
    plain = train(dataset_task(), CONFIG, seed=1)
    workers = train(dataset_task(num_workers=2), CONFIG, seed=1)
    assert workers.train_losses == plain.train_losses


def test_dict_batches_and_hooks_train_a_model_that_computes_its_own_loss():
    first = train(hooked_task(), CONFIG, seed=0)
    again = train(hooked_task(), CONFIG, seed=0)
    assert first.metrics == again.metrics  # reproducible from the seed
    assert first.value == first.metrics["val_perplexity"]
    assert first.value < math.exp(first.log.train_losses[0])  # it learned
    assert first.value == pytest.approx(math.exp(first.metrics["val_loss"]))
    assert len(first.learning_rates) == first.total_steps == 3 * 4


def test_a_task_with_a_test_dataset_reports_test_metrics():
    tensors = toy_task()
    result = train(dataset_task(test=Pairs(*tensors.validation)), CONFIG)
    assert result.metrics["test_accuracy"] == result.metrics["val_accuracy"]


def test_a_dataset_task_stacks_each_row_as_it_trains_alone(storage, tmp_path):
    configs = [CONFIG, AdamConfig(lr=3e-3), AdamConfig(lr=3e-2, beta1=0.8)]
    stacked = train_stacked(dataset_task(), configs, seed=2)
    for config, row in zip(configs, stacked, strict=True):
        alone = train(dataset_task(), config, seed=2)
        torch.testing.assert_close(row.train_losses, alone.train_losses, rtol=1e-5, atol=1e-6)
        assert row.metrics == pytest.approx(alone.metrics, rel=1e-4, abs=1e-6)
    path = tmp_path / "dataset_task.py"
    path.write_text(
        "from tests.training.test_datasets import dataset_task\n\ndef task():\n    return dataset_task()\n"
    )
    said = []
    settings = SearchSettings(
        task=f"{path}:task", storage=storage, n_trials=3, space="lr-only", baseline=False, stack=3
    )
    study = run_search(settings, warn=said.append)
    assert not any("cannot be stacked" in line for line in said)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert [t.user_attrs["total_steps"] for t in study.trials] == [12] * 3
    from adamtune.search.plan import prepare

    assert prepare(settings).rows == 3  # the search trained them as one stack


class Strings(Pairs):
    def __getitem__(self, i):
        return f"row {i}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(train=Strings(torch.zeros(4), torch.zeros(4))),
            "task 'toy-dataset': a batch must be a tensor, or a tuple, list or dict of "
            "tensors, got str 'row 0'",
        ),
        (
            dict(compute_loss=lambda model, batch: torch.ones(3, requires_grad=True)),
            "task 'toy-dataset': compute_loss must return a scalar tensor, got (3,)",
        ),
        (
            dict(compute_loss=lambda model, batch: 0.5),
            "task 'toy-dataset': compute_loss must return a scalar tensor, got float",
        ),
        (
            dict(evaluate=lambda model, batches: {"val_loss": 1.0}),
            "task 'toy-dataset': evaluate must return the task's metric 'val_accuracy', "
            "got ['val_loss']",
        ),
        (
            dict(evaluate=lambda model, batches: [0.5]),
            "task 'toy-dataset': evaluate must return a dict of metrics, got list",
        ),
        (
            dict(evaluate=lambda model, batches: {"val_accuracy": "high"}),
            "task 'toy-dataset': evaluate: 'val_accuracy' must be a number, got 'high'",
        ),
    ],
)
def test_bad_batches_and_hooks_are_one_line(overrides, message):
    with pytest.raises(TaskError) as caught:
        train(dataset_task(**overrides), CONFIG)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_dict_batches_without_hooks_say_what_to_add():
    with pytest.raises(TaskError, match="its batches are dict, not \\(inputs, targets\\); give"):
        train(hooked_task(compute_loss=None, loss=F.cross_entropy), CONFIG)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(train=Pairs(torch.zeros(0, 4), torch.zeros(0))), "train is empty"),
        (dict(validation=[1, 2, 3]), "validation must be a tuple (inputs, targets) of tensors"),
        (dict(num_workers=-1), "num_workers must be an integer >= 0, got -1"),
        (dict(loss=None), "loss must be callable, got None"),
        (dict(metric=None), "metric must be callable, got None"),
        (dict(collate_fn="stack"), "collate_fn must be callable, got 'stack'"),
    ],
)
def test_bad_dataset_tasks_are_refused_on_construction(overrides, message):
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dataset_task(**overrides)
