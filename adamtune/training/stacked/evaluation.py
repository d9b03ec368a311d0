"""How a stack evaluates its rows on the validation and test splits."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from adamtune.tasks.base import Task
from adamtune.training.batches import batches, evaluate_batches, metric_value
from adamtune.training.precision import Precision, as_float
from adamtune.training.single import EVAL_CHUNK, evaluate
from adamtune.training.stacked.model import StackedModel


class Splits:
    """The validation and test splits as a stack evaluates them: whole tensors, every row in
    one stacked forward pass; or, for Datasets and hooks, batches loaded once (not once per
    row) and evaluated row by row on the task's own module holding that row's weights, as
    train() evaluates it alone. Models whose outputs are not one tensor go row by row too."""

    def __init__(self, task: Task, device: torch.device, prec: Precision) -> None:
        self.task, self.device, self.prec = task, device, prec
        self.validation = self._load(task.validation)
        self._test: Any = None
        self.rowwise = task.uses_loader

    @property
    def test(self) -> Any:
        if self._test is None:
            self._test = self._load(self.task.test)
        return self._test

    def _load(self, data: Any) -> Any:
        task, device, prec = self.task, self.device, self.prec
        if not task.uses_loader:
            return prec.inputs(data[0].to(device)), data[1].to(device)
        return list(batches(task, data, device, prec))

    def evaluate(self, stack: StackedModel, data: Any) -> list[dict[str, float] | BaseException]:
        """Every row's loss and metric on ``data``; for a row whose loss or metric raised (user
        code, SystemExit included), the exception, so that only that row fails."""
        stack.train(False)
        if not self.rowwise:
            outputs = self._stacked_outputs(stack, data)
            if outputs is not None:
                return [self._guarded(partial(self._metrics, out, data[1])) for out in outputs]
            self.rowwise = True  # outputs that are not one tensor: row by row from now on
        return [self.evaluate_row(stack, data, r) for r in range(stack.rows)]

    def evaluate_row(
        self, stack: StackedModel, data: Any, row: int, state: Any = None
    ) -> dict[str, float] | BaseException:
        """Row ``row``'s metrics (or with ``state``, a saved state's) on the task's module."""
        model = stack.row_module(row, state)
        if isinstance(data, tuple):
            return self._guarded(lambda: evaluate(self.task, model, data, self.prec))
        return self._guarded(
            lambda: evaluate_batches(self.task, model, lambda: iter(data), self.prec)
        )

    @torch.no_grad()
    def _stacked_outputs(self, stack: StackedModel, data: Any) -> torch.Tensor | None:
        x = data[0]
        with self.prec.forward():
            chunks = [stack.forward(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]
        if not all(isinstance(c, torch.Tensor) for c in chunks):
            return None
        return as_float(torch.cat(chunks, dim=1))

    def _metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        task = self.task
        return {
            "val_loss": task.loss_of(out, y).item(),
            task.metric_name: metric_value(task, out, y),
        }

    @staticmethod
    def _guarded(run: Callable[[], dict[str, float]]) -> dict[str, float] | BaseException:
        try:
            return run()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (user code)
            return exc
