"""docs/stacked-trials.md's "What stacks" table agrees with the code's own refusals: each row of
the table is built here as a small model or task and put to the check `--stack` makes."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adamtune.tasks import Task, accuracy
from adamtune.training.stacked.model import why_not_stackable

PAGE = Path(__file__).resolve().parents[2] / "docs" / "stacked-trials.md"
G = torch.Generator().manual_seed(0)
X = torch.randn(32, 8, generator=G)
Y = (X[:, 0] > 0).long()
TOKENS = torch.randint(0, 20, (32, 6), generator=G)


def table() -> dict[str, str]:
    section = PAGE.read_text().split("## What stacks", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (yes|no: .+?) \|$", section, flags=re.M)
    return dict(rows)


def task(build, x=X, y=Y, **changes) -> Task:
    base = Task(
        "k", build, (x, y), (x, y), F.cross_entropy, accuracy, "val_accuracy", "maximize", 1, 8
    )
    return replace(base, **changes)


class Pool(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, tokens):
        return self.inner(tokens).mean(1)


class Attention(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.attention = nn.MultiheadAttention(8, 2, dropout=dropout, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, tokens):
        h = self.embed(tokens)
        return self.out(self.attention(h, h, h, need_weights=False)[0].mean(1))


class FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 2)

    def forward(self, x):
        return self.layer(F.dropout(x, 0.1, self.training))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.out = nn.Linear(8, 20)
        self.out.weight = self.embed.weight

    def forward(self, tokens):
        return self.out(self.embed(tokens).mean(1))[:, :2]


class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        return {"x": X[i], "y": Y[i]}


def images():
    return torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _hf_style(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["y"])


KINDS = {
    "an MLP on tensors": lambda: task(
        lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    ),
    "BatchNorm, LayerNorm, `nn.Dropout` modules": lambda: task(
        lambda: nn.Sequential(
            nn.Linear(8, 16),
            nn.BatchNorm1d(16),
            nn.LayerNorm(16),
            nn.Dropout(0.1),
            nn.Linear(16, 2),
        )
    ),
    "a convnet (Conv2d, BatchNorm2d, pooling)": lambda: task(
        lambda: nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 2),
        ),
        x=images(),
    ),
    "embeddings and `nn.MultiheadAttention` without dropout": lambda: task(Attention, x=TOKENS),
    "a task whose splits are Datasets (a DataLoader, `collate_fn`)": lambda: replace(
        task(lambda: nn.Linear(8, 2)),
        train=Rows(),
        validation=Rows(),
        compute_loss=_hf_style,
        loss=None,
        metric=None,
        evaluate=lambda model, batches: {"val_accuracy": 0.5},
    ),
    "`compute_loss` / `evaluate` hooks, dict batches, output objects with `.loss`": lambda: replace(
        task(lambda: nn.Linear(8, 2)),
        train=Rows(),
        validation=Rows(),
        compute_loss=_hf_style,
        loss=None,
        metric=None,
        evaluate=lambda model, batches: {"val_accuracy": 0.5},
    ),
    "functional dropout (`F.dropout` in `forward`, `nn.TransformerEncoderLayer(dropout=0.1)`)": lambda: (
        task(FunctionalDropout)
    ),
    "tied weights (an embedding tied to the output layer)": lambda: task(Tied, x=TOKENS),
    "SyncBatchNorm": lambda: task(
        lambda: nn.Sequential(nn.Linear(8, 4), nn.SyncBatchNorm(4), nn.Linear(4, 2))
    ),
    "AlphaDropout": lambda: task(lambda: nn.Sequential(nn.AlphaDropout(0.1), nn.Linear(8, 2))),
    "a lazy module (`nn.LazyLinear`)": lambda: task(lambda: nn.Sequential(nn.LazyLinear(2))),
    "your own training loop, `train(trial)`": lambda: task(
        lambda: nn.Linear(8, 2), train_loop=lambda trial: 1.0
    ),
    "a factory that takes the trial": lambda: task(
        lambda: nn.Linear(8, 2), per_trial=lambda values: None
    ),
}


def test_the_table_names_every_kind_built_here():
    assert set(table()) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_stacks_or_is_refused_as_the_table_says(kind):
    said = table()[kind]
    reason = why_not_stackable(KINDS[kind]())
    if said == "yes":
        assert reason is None, reason
    else:
        assert reason is not None and said.removeprefix("no: ") in reason, reason


def test_a_refusal_is_one_whole_line_that_says_what_the_model_does():
    from adamtune.training.stacked.model import _first_line

    vmap = RuntimeError(
        "vmap: called random operation while in randomness error mode. Please either use the "
        "'same' or 'different' randomness flags on vmap or perform the randomness operation "
        "out of vmap"
    )
    said = _first_line(vmap)
    assert "draws random numbers outside an nn.Dropout module" in said and "\n" not in said
    long = ValueError("word " * 100)
    cut = _first_line(long)
    assert cut.endswith(" …") and cut.removesuffix(" …").endswith("word")  # never mid-word


def test_a_transformer_layer_with_dropout_is_refused_for_what_it_does():
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
            self.out = nn.Linear(8, 2)

        def forward(self, tokens):
            return self.out(self.layer(self.embed(tokens)).mean(1))

    reason = why_not_stackable(task(Encoder, x=TOKENS))
    assert reason is not None and "nn.TransformerEncoderLayer" in reason
