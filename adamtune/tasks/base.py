"""The Task protocol: everything a trial needs to train and score one model."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adamtune.errors import TaskError

Batch = tuple[torch.Tensor, torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], float]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# A split: whole tensors (inputs, targets), or a map-style torch.utils.data.Dataset
Split = Any
ComputeLoss = Callable[[nn.Module, Any], torch.Tensor]  # (model, batch) -> scalar loss
Evaluate = Callable[[nn.Module, Iterable[Any]], dict[str, float]]  # (model, batches) -> metrics


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max class equals the target."""
    return (outputs.argmax(dim=1) == targets).float().mean().item()


def _errors(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Prediction minus target per value, in float64 (a (N, 1) output against (N,) targets)."""
    return outputs.reshape(targets.shape).double() - targets.double()


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean squared error, in the target's units squared (minimise)."""
    return torch.mean(_errors(outputs, targets) ** 2).item()


def rmse(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Root mean squared error, in the target's units (minimise)."""
    return math.sqrt(mse(outputs, targets))


def mae(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean absolute error, in the target's units (minimise)."""
    return torch.mean(_errors(outputs, targets).abs()).item()


mean_squared_error = mse  # its name before 0.3


@dataclass(frozen=True)
class Task:
    """A training workload.

    Data: each split is whole tensors ``(inputs, targets)``, which the loop batches itself
    (and stacked trials can share), or a map-style ``torch.utils.data.Dataset``, batched by a
    DataLoader (``collate_fn``, ``num_workers``) whose order comes from the trial's seed.
    Batches may be tensors, tuples, lists or dicts of tensors; they reach the device as they are.

    Hooks: ``compute_loss(model, batch)`` returns the scalar training loss (default:
    ``loss(model(x), y)`` for a batch ``(x, y)``; e.g. ``model(**batch).loss``).
    ``evaluate(model, batches)`` returns a dict of metrics over a whole split (perplexity, F1),
    which must hold ``metric_name``; default: ``val_loss`` (mean of the loss over rows) and
    ``metric`` on the split's outputs. With ``compute_loss`` and ``evaluate`` given, ``loss``
    and ``metric`` may be None.

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
    train: Split
    validation: Split
    loss: Loss | None  # None only with compute_loss and evaluate
    metric: Metric | None  # None only with evaluate
    metric_name: str
    direction: str
    epochs: int
    batch_size: int
    test: Split | None = None
    description: str = ""
    threads: int | None = None
    patience: int | None = None  # early stopping: evaluations without improvement; None: off
    compute_loss: ComputeLoss | None = None
    evaluate: Evaluate | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None  # for Dataset splits
    num_workers: int = 0  # DataLoader processes for Dataset splits
    # Your own training loop, train(trial) (adamtune.loops): then no data, model or loss here
    train_loop: Callable[[Any], Any] | None = None
    # Where a user's task lives, ``FILE_STEM-FUNCTION`` or ``MODULE-FUNCTION`` (set by
    # resolve_task): default study names come from it, since two files' ``name``s can agree.
    origin: str = ""
    # A factory that takes the trial (``def make_task(trial)``): this trial's task, built from
    # its values (adamtune.config.values.Values); the Task holding it was built from the defaults.
    per_trial: Callable[[Any], Task] | None = None

    @property
    def uses_loader(self) -> bool:
        """True when batches come from a DataLoader (a Dataset split, or a hook that takes
        batches), False for the tensor-only fast path."""
        splits = (self.train, self.validation, self.test)
        return any(s is not None and not is_tensor_pair(s) for s in splits) or bool(
            self.compute_loss or self.evaluate
        )

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
        if (
            isinstance(self.num_workers, bool)
            or not isinstance(self.num_workers, int)
            or (self.num_workers < 0)
        ):
            raise TaskError(
                f"{where}: num_workers must be an integer >= 0, got {self.num_workers!r}"
            )
        if self.train_loop is not None:
            if not callable(self.train_loop):
                raise TaskError(f"{where}: train_loop must be callable, got {self.train_loop!r}")
            return  # the loop brings its own data, model and loss
        for split in ("train", "validation", "test"):
            data = getattr(self, split)
            if data is None and split == "test":
                continue
            _check_split(where, split, data)
        needed = {
            "build_model": True,
            "loss": self.compute_loss is None or self.evaluate is None,
            "metric": self.evaluate is None,
            "compute_loss": self.compute_loss is not None,
            "evaluate": self.evaluate is not None,
            "collate_fn": self.collate_fn is not None,
        }
        for name, required in needed.items():
            if required and not callable(getattr(self, name)):
                raise TaskError(f"{where}: {name} must be callable, got {getattr(self, name)!r}")

    def loss_of(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``loss(outputs, targets)``; a task without one says what to give it."""
        if self.loss is None:
            raise TaskError(
                f"task {self.name!r}: has no loss(outputs, targets); give it one, or give it "
                "compute_loss and evaluate"
            )
        return self.loss(outputs, targets)

    def metric_of(self, outputs: torch.Tensor, targets: torch.Tensor) -> Any:
        if self.metric is None:
            raise TaskError(
                f"task {self.name!r}: has no metric(outputs, targets); give it one, or evaluate"
            )
        return self.metric(outputs, targets)

    def steps_per_epoch(self) -> int:
        if self.train_loop is not None:
            return 1  # unknown until it runs: one "step" per report for the planning checks
        return -(-split_size(self.train) // self.batch_size)


def is_tensor_pair(data: Any) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def split_size(data: Split) -> int:
    """Rows in a split: a tensor pair's length, or a Dataset's."""
    return len(data[0]) if is_tensor_pair(data) else len(data)


def _check_split(where: str, split: str, data: Split) -> None:
    if is_tensor_pair(data):
        if len(data[0]) != len(data[1]) or len(data[0]) == 0:
            raise TaskError(
                f"{where}: {split} inputs and targets must have the same "
                f"non-zero length, got {len(data[0])} and {len(data[1])}"
            )
        return
    if isinstance(data, (tuple, list)) or not (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")
    ):
        raise TaskError(
            f"{where}: {split} must be a tuple (inputs, targets) of tensors or a map-style "
            f"torch.utils.data.Dataset, got {type(data).__name__}"
        )
    try:
        size = len(data)
    except Exception as exc:  # noqa: BLE001  (user code)
        raise TaskError(f"{where}: {split}: len() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(size, int) or size == 0:
        raise TaskError(f"{where}: {split} is empty (a Dataset of length {size!r})")


def fingerprint(task: Task) -> str:
    """What makes a study's trials comparable, as 16 hex digits: the metric and a loop's
    source, or the metric and the model's parameter names and shapes. "" where it cannot be
    told (a model that fails to build is the trials' failure to report, not this one's)."""
    import hashlib
    import inspect

    try:
        if task.train_loop is not None:
            try:
                text = inspect.getsource(task.train_loop)
            except (OSError, TypeError):
                text = getattr(task.train_loop, "__qualname__", repr(task.train_loop))
        else:
            model = task.build_model()
            text = repr([(name, tuple(p.shape)) for name, p in model.named_parameters()])
    except Exception:  # noqa: BLE001  (user code)
        return ""
    return hashlib.sha256(f"{task.metric_name}|{text}".encode()).hexdigest()[:16]
