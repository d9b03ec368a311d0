"""``charlm-transformer``: a small causal transformer language model over characters.

The corpus is generated, not downloaded or read from a package: a seeded grammar writes English-
like sentences (who does what to what, when, with counts, and with agreement between subject
and verb), so the text is identical on every machine and every Python version. A fixed sample
(``random.Random`` with a fixed seed, whose sequence Python guarantees across versions) is cut
into training, validation and test text. A model can learn the spelling, the word order and
the agreement. Examples are windows of ``CONTEXT + 1`` characters from a Dataset; the model
computes its loss from a dict batch (``compute_loss``), and ``evaluate`` reports validation
loss and perplexity over the whole split. This is the dataset-and-hooks path end to end.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from adamtune.tasks.base import Task

CONTEXT = 32
SEED = 1234
SUBJECTS = {
    "the cat": "s",
    "a dog": "s",
    "my sister": "s",
    "the old man": "s",
    "the children": "p",
    "two birds": "p",
    "we": "p",
    "they": "p",
}
VERBS = {"see": "sees", "chase": "chases", "find": "finds", "carry": "carries", "like": "likes"}
OBJECTS = ["the ball", "a red box", "the river", "some bread", "three stones", "the garden"]
TIMES = ["today", "at night", "every morning", "after lunch", "in winter"]
NUMBERS = ["one", "two", "three", "four", "five", "six"]


def sentence(rng: random.Random) -> str:
    subject = rng.choice(list(SUBJECTS))
    verb = rng.choice(list(VERBS))
    verb = VERBS[verb] if SUBJECTS[subject] == "s" else verb
    words = [subject, verb, rng.choice(OBJECTS)]
    if rng.random() < 0.5:
        words.append(rng.choice(TIMES))
    if rng.random() < 0.3:
        words += ["and", rng.choice(NUMBERS), "more"]
    return " ".join(words) + "."


def corpus(characters: int, seed: int = SEED) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < characters:
        parts.append(sentence(rng))
        size += len(parts[-1]) + 1
    return " ".join(parts)[:characters]


class Windows(torch.utils.data.Dataset):
    """Non-overlapping windows of CONTEXT + 1 tokens: inputs and their next tokens."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens
        self.count = (len(tokens) - 1) // CONTEXT

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.tokens[i * CONTEXT : i * CONTEXT + CONTEXT + 1]
        return {"input_ids": window[:-1], "labels": window[1:]}


class CharTransformer(nn.Module):
    """A pre-norm causal transformer: embeddings, ``layers`` blocks, a tied output head."""

    def __init__(self, vocab: int, width: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(CONTEXT, width))
        block = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        length = input_ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=input_ids.device)
        h = self.embed(input_ids) + self.position[:length]
        h = self.norm(self.blocks(h, mask=mask, is_causal=True))
        logits = h @ self.embed.weight.T
        if labels is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch)


def evaluate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    total, count = 0.0, 0
    for batch in batches:
        n = batch["labels"].numel()
        total += float(model(**batch)) * n
        count += n
    loss = total / count
    return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0))}


def charlm_transformer() -> Task:
    text = corpus(48_000)
    alphabet = sorted(set(text))
    index = {c: i for i, c in enumerate(alphabet)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.long)
    train, validation, test = tokens[:38_000], tokens[38_000:43_000], tokens[43_000:]
    return Task(
        name="charlm-transformer",
        build_model=lambda: CharTransformer(len(alphabet)),
        train=Windows(train),
        validation=Windows(validation),
        test=Windows(test),
        loss=None,
        metric=None,
        compute_loss=compute_loss,
        evaluate=evaluate,
        metric_name="val_loss",
        direction="minimize",
        epochs=8,
        batch_size=32,
        description="characters of a generated corpus, 2-layer causal transformer",
    )
