"""A task tried on one batch before the first trial: build the model, one forward pass and loss
on a training batch, one evaluation on a few validation batches.

A task that cannot work (a batch the loss cannot take, an ``evaluate`` hook that is missing or
returns the wrong thing, a loss with no gradient) then fails in one line naming the hook and
the shape or type it found, in seconds, not after a whole epoch of the first trial. An
evaluation that raises on the few batches is tried once more on the whole validation split
(a metric such as an AUC may need every class), and only that refuses the task. The try
runs under a forked random state (torch's, Python's and NumPy's), so no trial's seed, weights
or batches change because it ran. A training loop of the user's own, train(trial), is not tried:
its model and data live inside it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch

from adamtune.errors import TaskError, describe
from adamtune.tasks.base import Task, is_tensor_pair
from adamtune.training.batches import batches, evaluate_split, pair, step_loss
from adamtune.training.precision import Precision, as_float

EVAL_BATCHES = 2  # validation batches the try evaluates


def check_one_batch(task: Task, device: torch.device, prec: Precision) -> None:
    """Raise one TaskError line when ``task`` cannot train and evaluate one batch."""
    if task.train_loop is not None:
        return
    quick = replace(task, num_workers=0)  # one batch is not worth starting loader processes
    with forked_random():
        model = _build(quick, device, prec)
        model.train()
        batch = _first(quick, quick.train, device, prec, "train")
        with prec.forward():
            loss = _hook(quick, "compute_loss" if quick.compute_loss else "loss", batch, model)
        if not loss.requires_grad:
            hook = "compute_loss" if quick.compute_loss else "loss"
            raise TaskError(
                f"task {task.name!r}: {hook} returned a tensor without a gradient "
                "(requires_grad is False); return the loss tensor itself, not .item() or "
                ".detach() of it"
            )
        if loss.numel() == 1 and not torch.isfinite(loss.detach()).all():
            hook = "compute_loss" if quick.compute_loss else "loss"
            raise TaskError(
                f"task {task.name!r}: {hook} on one training batch is {loss.item()} at the "
                "initial weights, before any step (not a finite number): no learning rate can "
                "train it; check the loss, the model's initialisation and the data"
            )
        model.zero_grad(set_to_none=True)
        validation = head_of(quick, quick.validation, EVAL_BATCHES * quick.batch_size)
        where = "evaluate" if quick.evaluate is not None else "the default evaluation"
        try:
            evaluate_split(quick, model, validation, device, prec)
        except (TaskError, KeyboardInterrupt):
            raise
        except BaseException:  # noqa: BLE001  (user code; a metric may need the whole split)
            try:  # e.g. an AUC needs both classes: only the whole split can refuse the task
                evaluate_split(quick, model, quick.validation, device, prec)
            except (TaskError, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001  (user code: SystemExit included)
                raise TaskError(
                    f"task {task.name!r}: {where} on the validation split raised {describe(exc)}"
                ) from None


def _build(task: Task, device: torch.device, prec: Precision) -> torch.nn.Module:
    try:
        model = task.build_model()
    except (TaskError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: SystemExit included)
        raise TaskError(f"task {task.name!r}: build_model() raised {describe(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise TaskError(
            f"task {task.name!r}: build_model() must return a torch.nn.Module, "
            f"got {type(model).__name__}"
        )
    meta = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_meta
    ]
    if meta:
        raise TaskError(
            f"task {task.name!r}: build_model() returned a model whose {meta[0]!r} is on the "
            "meta device (no data to train); build it on a real device, or materialise it "
            "in build_model (model.to_empty(device='cpu'), then initialise its weights)"
        )
    return prec.model(model)


def _first(task: Task, data: Any, device: torch.device, prec: Precision, split: str) -> Any:
    try:
        return next(iter(batches(task, head_of(task, data, task.batch_size), device, prec)))
    except StopIteration:
        raise TaskError(f"task {task.name!r}: its {split} split holds no rows") from None
    except (TaskError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: the Dataset, collate_fn)
        raise TaskError(
            f"task {task.name!r}: reading one {split} batch raised {describe(exc)}"
        ) from None


def head_of(task: Task, data: Any, n: int) -> Any:
    """The first ``n`` rows of a split, as the split's own kind (tensors or a Dataset)."""
    if is_tensor_pair(data):
        return data[0][:n], data[1][:n]
    return torch.utils.data.Subset(data, range(min(n, len(data))))


def _hook(task: Task, hook: str, batch: Any, model: torch.nn.Module) -> torch.Tensor:
    """The loss of ``batch`` through ``hook``; an error says what went in and what came out."""
    try:
        return step_loss(task, model, batch)
    except (TaskError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: model, loss; SystemExit included)
        raise TaskError(
            f"task {task.name!r}: {hook} on one training batch raised {describe(exc)}"
            f"{_shapes(task, model, batch)}"
        ) from None


def _shapes(task: Task, model: torch.nn.Module, batch: Any) -> str:
    """`` (batch: ..., model output: ...)`` where they can be told, for the error line."""
    shown = f"; batch {_kind(batch)}"
    if task.compute_loss is not None:
        return shown
    with contextlib.suppress(Exception):
        x, y = pair(task, batch)
        with torch.no_grad():
            out = as_float(model(x))
        shown = f"; model(inputs) gave {_kind(out)}, targets are {_kind(y)}"
    return shown


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_kind(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of [" + ", ".join(_kind(v) for v in value) + "]"
    return type(value).__name__


@contextlib.contextmanager
def forked_random() -> Iterator[None]:
    """Every random state the try may draw from, restored after it."""
    python = random.getstate()
    numpy_state = None
    with contextlib.suppress(ImportError):
        import numpy

        numpy_state = numpy.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python)
        if numpy_state is not None:
            import numpy

            numpy.random.set_state(numpy_state)
