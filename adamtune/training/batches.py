"""Batches of a task's splits, the loss of one, and the metrics of a whole split.

Tensor splits ``(inputs, targets)`` are sliced by a permutation drawn from the run's order
generator (train.py's fast path does the same without this module). Dataset splits go through
a ``torch.utils.data.DataLoader`` whose shuffling draws from that generator too: the same
seed gives the same batches. A batch is a tensor, or a tuple, list or dict of them, moved to
the device as it is; anything else is the task's error, in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from adamtune.errors import TaskError, shown
from adamtune.tasks.base import Split, Task, is_tensor_pair
from adamtune.training.precision import Precision, as_float


def batches(
    task: Task,
    data: Split,
    device: torch.device,
    prec: Precision,
    generator: torch.Generator | None = None,
) -> Iterator[Any]:
    """One pass over ``data`` in batches of ``task.batch_size``, on ``device``; shuffled with
    ``generator`` when one is given, else in order."""
    if is_tensor_pair(data):
        x, y = data
        n = len(x)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, task.batch_size):
            index = (
                order[start : start + task.batch_size]
                if order is not None
                else slice(start, start + task.batch_size)
            )
            yield to_device((x[index], y[index]), device, prec)
        return
    sampler = _Permutation(len(data), generator) if generator is not None else None
    yield from loaded(
        task, data, sampler, generator.initial_seed() if generator else 0, device, prec
    )


def loaded(
    task: Task,
    data: Any,
    sampler: Any,
    seed: int,
    device: torch.device,
    prec: Precision,
) -> Iterator[Any]:
    """One pass of a DataLoader over the Dataset ``data`` in ``sampler``'s order (None: in
    order), its batches on ``device``; ``seed`` is the loader's workers' base seed."""
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=task.batch_size,
        sampler=sampler,
        # the loader draws its workers' base seed from this one, never from the order's
        generator=torch.Generator().manual_seed(seed),
        collate_fn=task.collate_fn,
        num_workers=task.num_workers,
    )
    where = f"task {task.name!r}"
    try:
        for batch in loader:
            yield to_device(batch, device, prec, where)
    except TypeError as exc:  # default_collate met an item it cannot batch
        if "collate" not in str(exc):
            raise
        raise TaskError(f"{where}: batching its Dataset failed: {_first(exc)}") from None


class _Permutation(torch.utils.data.Sampler[int]):
    """Each pass, one ``randperm`` from the run's order generator: the order train()'s
    tensor path draws, so a Dataset of the same rows gives the same batches."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def to_device(batch: Any, device: torch.device, prec: Precision, where: str = "task") -> Any:
    """``batch`` with every tensor on ``device`` (floating inputs in the precision's dtype)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)) and batch:
        moved = [to_device(item, device, prec, where) for item in batch]
        if len(moved) == 2 and all(isinstance(t, torch.Tensor) for t in moved):
            moved[0] = prec.inputs(moved[0])
        return type(batch)(moved) if isinstance(batch, tuple) else moved
    if isinstance(batch, dict) and batch:
        return {key: to_device(value, device, prec, where) for key, value in batch.items()}
    raise TaskError(
        f"{where}: a batch must be a tensor, or a tuple, list or dict of tensors, "
        f"got {type(batch).__name__} {shown(batch)}"
    )


def rows(batch: Any) -> int:
    """How many examples a batch holds: the length of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else 1
    items = batch.values() if isinstance(batch, dict) else batch
    return rows(next(iter(items)))


def step_loss(task: Task, model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """The training loss of one batch: ``compute_loss`` or ``loss(model(x), y)``, checked to be
    one finite-or-not number with a gradient."""
    if task.compute_loss is not None:
        loss = task.compute_loss(model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise TaskError(
                f"task {task.name!r}: compute_loss must return a scalar tensor, got {shape}"
            )
        return loss.reshape(())
    x, y = pair(task, batch)
    return task.loss_of(as_float(model(x)), y)


def pair(task: Task, batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TaskError(
        f"task {task.name!r}: its batches are {type(batch).__name__}, not (inputs, targets); "
        "give the task compute_loss(model, batch) and evaluate(model, batches)"
    )


@torch.no_grad()
def evaluate_split(
    task: Task, model: torch.nn.Module, data: Split, device: torch.device, prec: Precision
) -> dict[str, float]:
    """The metrics of ``model`` on a whole split, model left in eval mode: the task's
    ``evaluate`` hook, else ``val_loss`` (the loss averaged over rows) and the metric on the
    split's outputs."""
    return evaluate_batches(task, model, lambda: batches(task, data, device, prec), prec)


@torch.no_grad()
def evaluate_batches(
    task: Task, model: torch.nn.Module, split: Callable[[], Iterable[Any]], prec: Precision
) -> dict[str, float]:
    """``evaluate_split`` over the batches ``split()`` gives (on the device already)."""
    model.eval()
    if task.evaluate is not None:
        with prec.forward():
            metrics = task.evaluate(model, split())
        return _checked(task, metrics)
    total, count = 0.0, 0
    outputs, targets = [], []
    with prec.forward():
        for batch in split():
            n = rows(batch)
            if task.compute_loss is not None:
                total += float(step_loss(task, model, batch)) * n
            x, y = pair(task, batch)
            outputs.append(as_float(model(x)))
            targets.append(y)
            count += n
    out, y = concatenated(outputs, f"task {task.name!r}"), torch.cat(targets)
    # without compute_loss, the loss of the whole split at once, as the tensor path takes it
    val_loss = total / count if task.compute_loss is not None else task.loss_of(out, y).item()
    return {"val_loss": val_loss, task.metric_name: metric_value(task, out, y)}


def concatenated(chunks: list[Any], where: str = "task") -> Any:
    """Outputs of a split's chunks as one: tensors, or tuples, lists and dicts of them, joined
    along the first dimension; one chunk as it is (an output object of any kind)."""
    if len(chunks) == 1:
        return chunks[0]
    if all(isinstance(c, torch.Tensor) for c in chunks):
        return torch.cat(chunks)
    from torch.utils._pytree import tree_flatten, tree_unflatten

    flat = [tree_flatten(c) for c in chunks]
    if any(spec != flat[0][1] for _, spec in flat) or not all(
        isinstance(leaf, torch.Tensor) for leaves, _ in flat for leaf in leaves
    ):
        raise TaskError(
            f"{where}: its model's outputs are {type(chunks[0]).__name__}, "
            "which cannot be joined across batches; return a tensor, tuple, list or dict of "
            "tensors, or give the task evaluate(model, batches)"
        )
    joined = [torch.cat(parts) for parts in zip(*(leaves for leaves, _ in flat), strict=True)]
    return tree_unflatten(joined, flat[0][1])


def _checked(task: Task, metrics: Any) -> dict[str, float]:
    where = f"task {task.name!r}: evaluate"
    if not isinstance(metrics, dict):
        raise TaskError(f"{where} must return a dict of metrics, got {type(metrics).__name__}")
    out = {str(key): number(f"{where}: {key!r}", value) for key, value in metrics.items()}
    if task.metric_name not in out:
        raise TaskError(
            f"{where} must return the task's metric {task.metric_name!r}, got {sorted(out)}"
        )
    return out


def number(what: str, value: Any) -> float:
    """``value`` (a number, or a one-element tensor) as a float; else ``what`` is refused."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskError(f"{what} must be a number, got {shown(value)}")
    return float(value)


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def metric_value(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The task's metric as a float; anything else is the task's error, said in one line."""
    value = task.metric_of(outputs, targets)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskError(
            f"task {task.name!r}: metric must return a number, got {shown(value)} "
            f"({type(value).__name__})"
        )
    return float(value)
