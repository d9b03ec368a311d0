"""Tune small, train big: a winner rescaled for a longer (or shorter) run or another batch size.

The rules, each stated where it changes a value:

- **The AdamW timescale** tau = 1 / (lr * weight_decay), in optimizer steps, is kept the same
  fraction of the run's steps (Wang & Aitchison, ICML 2025): a run k times as many steps long
  divides the decay's lr * weight_decay by k.
- **Batch size**, k times larger: lr times sqrt(k), the square-root rule for Adam (Malladi et al.,
  NeurIPS 2022); beta2's half-life kept the same in samples, so beta2 becomes beta2 ** k (Marek
  et al., NeurIPS 2025). The timescale rule then sets weight decay for the new step count.

The schedule is written in fractions of training, so it stretches with the run as it is. Width
transfer needs a model written in muP and is not done here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from adamtune.config.adam import AdamConfig
from adamtune.errors import ExportError, shown
from adamtune.results.export import ExportedTrial


@dataclass(frozen=True)
class Transfer:
    """A configuration moved from (epochs, batch size) to (epochs, batch size)."""

    config: AdamConfig
    total_steps: int
    notes: tuple[str, ...]  # one per changed value: what it was, what it is, by which rule


def transfer(
    config: AdamConfig,
    *,
    epochs: tuple[int, int],
    batch_size: tuple[int, int],
    rows: int,
) -> Transfer:
    """``config``, tuned for ``epochs[0]`` epochs at ``batch_size[0]`` on ``rows`` training rows,
    rescaled for ``epochs[1]`` at ``batch_size[1]``."""
    (e0, e1), (b0, b1) = epochs, batch_size
    for flag, value in (("--epochs", e1), ("--batch-size", b1)):
        if value < 1:
            raise ExportError(f"{flag}: must be >= 1, got {value}")
    if config.phases:
        raise ExportError(
            "--epochs/--batch-size: a population's schedule of phases is not rescaled; export it "
            "as it trained"
        )
    steps0 = e0 * math.ceil(rows / b0)
    steps1 = e1 * math.ceil(rows / b1)
    k = b1 / b0
    notes: list[str] = []
    lr = config.lr * math.sqrt(k) if k != 1 else config.lr
    if lr != config.lr:
        notes.append(
            f"lr {config.lr:.4g} -> {lr:.4g}: the square-root rule for Adam, batch "
            f"{b0} -> {b1} (Malladi et al. 2022)"
        )
    beta2 = config.beta2**k if k != 1 else config.beta2
    if beta2 != config.beta2:
        notes.append(
            f"beta2 {config.beta2:.6g} -> {beta2:.6g}: its half-life kept in samples, batch "
            f"{b0} -> {b1} (Marek et al. 2025)"
        )
    weight_decay = config.weight_decay
    if config.decoupled and weight_decay:
        # tau = 1 / (lr * wd) in steps, the same fraction of the run: lr * wd scales by steps0/steps1
        weight_decay = config.weight_decay * (config.lr / lr) * (steps0 / steps1)
    if weight_decay != config.weight_decay:
        notes.append(
            f"weight_decay {config.weight_decay:.4g} -> {weight_decay:.4g}: the AdamW timescale "
            f"1/(lr*wd) kept the same share of the run, {steps0} -> {steps1} steps "
            "(Wang & Aitchison 2025)"
        )
    moved = replace(config, lr=lr, beta2=beta2, weight_decay=weight_decay)
    return Transfer(moved, steps1, tuple(notes))


def transferred(trial: ExportedTrial, epochs: int | None, batch_size: int | None) -> ExportedTrial:
    """``trial`` rescaled for ``epochs`` epochs at ``batch_size`` (adamtune.results.transfer),
    from what its study recorded; unchanged where neither is given."""
    if epochs is None and batch_size is None:
        return trial
    record = trial.record
    if not all(isinstance(record.get(k), int) for k in ("epochs", "batch_size", "train_rows")):
        raise ExportError(
            f"--epochs/--batch-size: study {shown(trial.study_name)} does not record its epochs, "
            "batch size and training rows (a training loop's, or made before adamtune 0.3); "
            "rescale by hand with adamtune.results.transfer"
        )
    moved = transfer(
        trial.config,
        epochs=(record["epochs"], epochs or record["epochs"]),
        batch_size=(record["batch_size"], batch_size or record["batch_size"]),
        rows=record["train_rows"],
    )
    notes = moved.notes or (
        "no value changes: lr and beta2 follow the batch size (the same), and the timescale "
        "rule rescales decoupled weight decay only (this trial's is "
        f"{trial.config.weight_decay:g}{'' if trial.config.decoupled else ', L2'})",
    )
    return replace(
        trial, config=moved.config, transfer_steps=moved.total_steps, transfer_notes=notes
    )
