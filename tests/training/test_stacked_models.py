"""Stacked trials for the models users bring: BatchNorm, dropout, Datasets, hooks, rich
outputs, the transformer. Every row trains as its trial would, whatever shares its stack."""

import dataclasses
import statistics

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adamtune.config.adam import AdamConfig
from adamtune.tasks import Task, accuracy, resolve_task
from adamtune.training.single import train
from adamtune.training.stacked.loop import train_stack, train_stacked
from adamtune.training.stacked.model import why_not_stackable

A, B, C, D = (
    AdamConfig(lr=3e-3),
    AdamConfig(lr=1e-2, beta1=0.8, weight_decay=0.05),
    AdamConfig(lr=1e-3, beta2=0.99),
    AdamConfig(lr=2e-2, eps=1e-6),
)


def images(n=192, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=generator)
    y = (x[:, 0, 2:6, 2:6].mean((1, 2)) > 0).long() + (x[:, 0, 0].mean(1) > 0).long()
    return x, y


class Block(nn.Module):
    """A small ResNet-style block: conv, BatchNorm, ReLU, a residual, dropout, a head."""

    def __init__(self, dropout=0.25, **norm):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8, **norm)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.norm(self.stem(x)))
        h = h + F.relu(self.conv(h))
        return self.head(self.drop(h.mean((2, 3))))


def cnn_task(dropout=0.25, **norm):
    return Task(
        "cnn",
        lambda: Block(dropout, **norm),
        images(192, 0),
        images(96, 1),
        F.cross_entropy,
        accuracy,
        "val_accuracy",
        "maximize",
        2,
        32,
        test=images(64, 2),
    )


def assert_same_run(row, other, rtol=1e-4):
    """The same steps' losses and the same evaluations (not val_train_gap, a difference of two
    close numbers, nor update_ratio, a ratio of two small ones)."""
    torch.testing.assert_close(row.train_losses, other.train_losses, rtol=rtol, atol=1e-5)
    assert len(row.evaluations) == len(other.evaluations)
    kept = {k: v for k, v in row.metrics.items() if k not in ("val_train_gap", "update_ratio")}
    for name, value in kept.items():  # an accuracy may differ by one near-tie example
        near = 1.01 / 64 if name.endswith("accuracy") else 1e-5
        assert value == pytest.approx(other.metrics[name], rel=10 * rtol, abs=near), name


def test_a_batchnorm_and_dropout_row_does_not_depend_on_its_stack_mates():
    task = cnn_task()
    first = train_stacked(task, [A, B], seed=4)
    second = train_stacked(task, [C, D, A], seed=4)
    third = train_stacked(task, [A], seed=4)
    assert_same_run(first[0], second[2])
    assert_same_run(first[0], third[0])
    assert first[0].train_losses != first[1].train_losses


@pytest.mark.parametrize(
    "norm", [{}, {"momentum": None}, {"track_running_stats": False}, {"affine": False}]
)
def test_batchnorm_rows_train_and_evaluate_as_the_model_alone(norm):
    # no randomness: stacked and alone agree step by step; with early stopping, the test
    # metrics come from each row's best weights and statistics
    task = dataclasses.replace(cnn_task(dropout=0.0, **norm), epochs=3, patience=1)
    stacked = train_stacked(task, [A, B, C], seeds=[1, 2, 3])
    for seed, config, row in zip([1, 2, 3], [A, B, C], stacked, strict=True):
        # the evaluations use each row's own running statistics: they match alone's
        assert_same_run(row, train(task, config, seed=seed), rtol=1e-3)


def test_each_row_keeps_its_own_running_statistics():
    from adamtune.training.stacked.model import StackedModel

    torch.manual_seed(0)
    models = [Block(0.0), Block(0.0)]
    stack = StackedModel(models[0], models)
    x, y = images(32)
    losses = stack.task_losses(
        cnn_task(), (torch.stack([x, -x]), torch.stack([y, y])), torch.tensor([1, 2]), True
    )
    losses.sum().backward()
    for r, inputs in enumerate([x, -x]):
        alone = Block(0.0)
        alone.load_state_dict(models[r].state_dict())
        alone(inputs)
        torch.testing.assert_close(stack.buffers["norm.running_mean"][r], alone.norm.running_mean)
        torch.testing.assert_close(stack.buffers["norm.running_var"][r], alone.norm.running_var)
    assert stack.buffers["norm.num_batches_tracked"].tolist() == [1, 1]


def test_dropout_rows_agree_with_alone_in_distribution():
    """Stacked dropout draws each row's own noise, not torch's global generator's: the same
    trial stacked and alone differ step by step but not on average over seeds."""
    task = dataclasses.replace(cnn_task(dropout=0.5), epochs=3)
    seeds = list(range(8))
    alone = [train(task, A, seed=s).metrics["val_loss"] for s in seeds]
    stacked = [r.metrics["val_loss"] for r in train_stacked(task, [A] * len(seeds), seeds=seeds)]
    assert stacked != pytest.approx(alone, rel=1e-6)  # other masks
    spread = statistics.stdev(alone + stacked) / len(seeds) ** 0.5
    assert abs(statistics.mean(stacked) - statistics.mean(alone)) < 3 * spread
    without = train_stacked(dataclasses.replace(task, build_model=lambda: Block(0.0)), [A], seed=0)
    assert without[0].train_losses != stacked[0]  # the dropout is applied


class Words(torch.utils.data.Dataset):
    """Variable-length token sequences with a label: what a padding collate_fn is for."""

    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(2, 9, (1,), generator=generator))
            tokens = torch.randint(1, 20, (length,), generator=generator)
            self.items.append((tokens, int(tokens[0] > 10)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def pad(items):
    """Pads to the longest sequence in the batch: batches differ in shape."""
    longest = max(len(tokens) for tokens, _ in items)
    ids = torch.zeros(len(items), longest, dtype=torch.long)
    for i, (tokens, _) in enumerate(items):
        ids[i, : len(tokens)] = tokens
    return {"input_ids": ids, "labels": torch.tensor([label for _, label in items])}


@dataclasses.dataclass
class Output:  # an output object, as Hugging Face models return
    loss: torch.Tensor
    logits: torch.Tensor


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.norm = nn.LayerNorm(16)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(16, 2)

    def forward(self, input_ids, labels=None):
        mask = (input_ids > 0).float().unsqueeze(-1)
        h = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        logits = self.head(self.drop(self.norm(h)))
        return Output(F.cross_entropy(logits, labels), logits)


def compute_loss(model, batch):
    return model(**batch).loss


def evaluate(model, batches):
    right = total = 0
    for batch in batches:  # a Python loop with .item(): evaluation goes row by row
        right += (model(**batch).logits.argmax(1) == batch["labels"]).sum().item()
        total += len(batch["labels"])
    return {"val_accuracy": right / total}


def hooks_task(dropout=True):
    return Task(
        "words",
        Classifier if dropout else lambda: _without_dropout(Classifier()),
        Words(64, 0),
        Words(32, 1),
        None,
        None,
        "val_accuracy",
        "maximize",
        3,
        16,
        compute_loss=compute_loss,
        evaluate=evaluate,
        collate_fn=pad,
    )


def _without_dropout(model):
    model.drop.p = 0.0
    return model


def test_a_hooks_task_with_output_objects_and_padded_dict_batches_stacks():
    task = hooks_task(dropout=False)
    assert why_not_stackable(task) is None
    stacked = train_stacked(task, [A, B], seed=3)
    for config, row in zip([A, B], stacked, strict=True):
        assert_same_run(row, train(task, config, seed=3))


def test_rows_at_other_epochs_read_their_own_batches_even_when_shapes_differ():
    """A row refilled while the others are at epoch 2 reads its own epoch-1 stream; padded
    batches differ in shape between the streams, so that step runs group by group."""
    task = hooks_task(dropout=True)
    queue = iter([A, B, C])
    results = {}

    def on_epoch(evaluations):
        return {0: "pruned"} if 0 in evaluations else {}

    train_stack(
        task,
        lambda: next(queue, None),
        rows=2,
        seed=5,
        on_epoch=on_epoch,
        on_result=lambda i, result: results.setdefault(i, result),
    )
    assert results[0].stopped == "pruned"
    alone = train_stacked(task, [C], seed=5)[0]  # C alone in its stack
    assert_same_run(results[2], alone)
    assert_same_run(results[1], train_stacked(task, [B], seed=5)[0])


def test_the_transformer_stacks_and_its_rows_train_as_alone():
    task = resolve_task("charlm-transformer")
    small = dataclasses.replace(
        task,
        train=torch.utils.data.Subset(task.train, range(256)),
        validation=torch.utils.data.Subset(task.validation, range(64)),
        test=None,
        epochs=1,
    )
    assert why_not_stackable(task) is None
    stacked = train_stacked(small, [A, B], seed=0)
    for config, row in zip([A, B], stacked, strict=True):
        assert_same_run(row, train(small, config, seed=0), rtol=1e-3)


@pytest.mark.parametrize(
    "measured, rows, line",
    [
        (
            {1: 100.0, 4: 150.0, 8: 190.0},
            8,
            "--stack auto: 8 rows (1.9x the steps per second of one at a time)",
        ),
        (
            {1: 100.0, 4: 90.0, 8: 102.0},
            1,
            "--stack auto: one at a time (a stack of 8 measured 1.02x the steps per second of one "
            "at a time)",
        ),
    ],
)
def test_auto_takes_the_faster_of_a_stack_and_one_at_a_time(monkeypatch, measured, rows, line):
    from adamtune.config.settings import SearchSettings
    from adamtune.training.stacked import measure, sizing

    asked = []

    def fake(task, device, precision, widths):
        asked.append(widths)
        return measured

    monkeypatch.setattr(measure, "measure", fake)
    said = []
    settings = SearchSettings(stack="auto", n_trials=8)
    assert sizing.stack_rows(settings, cnn_task(), torch.device("cpu"), said.append) == rows
    assert asked == [[4, 8]] and said == [line]


def test_auto_stacks_a_plain_mlp_without_timing_it(monkeypatch):
    from adamtune.config.settings import SearchSettings
    from adamtune.training.stacked import measure, sizing

    monkeypatch.setattr(measure, "measure", lambda *args: pytest.fail("timed a plain MLP"))
    task = resolve_task("digits-mlp")
    rows = sizing.stack_rows(SearchSettings(stack="auto"), task, torch.device("cpu"), print)
    assert rows == sizing.AUTO_ROWS["cpu"]


def test_measuring_times_real_steps_and_leaves_the_random_state_alone():
    from adamtune.training.stacked.measure import measure

    before = torch.random.get_rng_state()
    measured = measure(hooks_task(), torch.device("cpu"), "fp32", [2])
    assert sorted(measured) == [1, 2] and all(rate > 0 for rate in measured.values())
    assert torch.equal(torch.random.get_rng_state(), before)
