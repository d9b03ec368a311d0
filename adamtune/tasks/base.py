"""The Task protocol: everything a trial needs to train and score one model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from adamtune.errors import TaskError

Batch = tuple[torch.Tensor, torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], float]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max class equals the target."""
    return (outputs.argmax(dim=1) == targets).float().mean().item()


def mean_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return torch.mean((outputs.reshape(targets.shape) - targets) ** 2).item()


@dataclass(frozen=True)
class Task:
    """A training workload. Data are whole tensors: the training loop batches them itself.

    ``build_model`` is called after the trial's seed is set, so initial weights are
    reproducible. ``metric(outputs, targets)`` scores validation outputs; ``direction`` says
    whether the study maximises or minimises it. ``test`` (optional) is kept for final reports
    and never used for tuning. ``threads`` is how many intra-op threads a trial should use:
    small models train faster on one (thread start-up costs more than the work it splits);
    None leaves torch's default. ``patience`` turns early stopping on by default for this task
    (``--patience`` overrides it).
    """

    name: str
    build_model: Callable[[], nn.Module]
    train: Batch
    validation: Batch
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Metric
    metric_name: str
    direction: str
    epochs: int
    batch_size: int
    test: Batch | None = None
    description: str = ""
    threads: int | None = None
    patience: int | None = None  # early stopping: evaluations without improvement; None: off

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if self.patience is not None and (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 1
        ):
            raise TaskError(
                f"{where}: patience must be an integer >= 1 or None, got {self.patience!r}"
            )
        if self.direction not in ("maximize", "minimize"):
            raise TaskError(
                f"{where}: direction must be 'maximize' or 'minimize', got {self.direction!r}"
            )
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise TaskError(
                f"{where}: threads must be an integer >= 1 or None, got {self.threads!r}"
            )
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TaskError(f"{where}: {name} must be an integer >= 1, got {value!r}")
        for split in ("train", "validation", "test"):
            data = getattr(self, split)
            if data is None and split == "test":
                continue
            if (
                not isinstance(data, tuple)
                or len(data) != 2
                or not all(isinstance(t, torch.Tensor) for t in data)
            ):
                raise TaskError(f"{where}: {split} must be a tuple (inputs, targets) of tensors")
            if len(data[0]) != len(data[1]) or len(data[0]) == 0:
                raise TaskError(
                    f"{where}: {split} inputs and targets must have the same "
                    f"non-zero length, got {len(data[0])} and {len(data[1])}"
                )
        for name in ("build_model", "loss", "metric"):
            if not callable(getattr(self, name)):
                raise TaskError(f"{where}: {name} must be callable, got {getattr(self, name)!r}")

    def steps_per_epoch(self) -> int:
        return -(-len(self.train[0]) // self.batch_size)
