"""Stacked trials: many configurations of one task trained as one model, one row each.

The copies of the task's model are stacked parameter by parameter (``torch.func``): every
parameter becomes one tensor with a leading dimension of N (the rows), the forward pass is one
batched call (batched matrix products for plain MLPs, vmap otherwise), and one FusedAdam with
per-row hyperparameters and per-row step counts updates every row exactly as an independent
optimizer would. A row trains as ``train(task, config, seed=seed)`` would alone: the same initial
weights (each copy is built after the same ``torch.manual_seed``), the same batch order (the
epoch orders train() draws from one generator), its own learning rate at every step, its own
divergence guard and evaluations.

``train_stack`` keeps the stack full: a row leaves when it completes, when ``on_epoch`` returns a
reason to stop it (a pruner judges every row once per epoch against one snapshot of the study)
or when its loss diverges, and ``on_result`` receives its result at once; the freed slot takes
the next configuration from ``source`` at the next epoch boundary. Rows therefore sit at
different epochs of their own runs but always at the same position within one, so each step
gathers every row's own batch from its own epoch order. ``train_stacked`` trains a fixed list.

Rows share the optimizer's non-numeric settings: ``decoupled`` and ``amsgrad`` must be equal
across a stack (callers group configurations by them).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adamtune.config import AdamConfig
from adamtune.errors import DivergedError, describe
from adamtune.schedules import learning_rates
from adamtune.tasks.base import Task
from adamtune.train import (
    _BUILD_LOCK,
    EVAL_CHUNK,
    Evaluation,
    TrainingLog,
    TrainResult,
    check_divergence,
    metric_value,
    planned_steps,
)

# Once per epoch, every running configuration's evaluation -> the ones to stop, with why.
OnEpoch = Callable[[dict[int, Evaluation]], dict[int, str]]
# A configuration's row finished (completed, pruned or diverged): its id and its result.
OnResult = Callable[[int, TrainResult], None]
# The next configuration to train, or None when no more should start.
Source = Callable[[], AdamConfig | None]
UNSTACKABLE = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.AlphaDropout)


def why_not_stackable(task: Task) -> str | None:
    """Why ``task``'s model cannot be trained stacked, or None when it can: running statistics
    (BatchNorm), random layers (dropout), a model, loss or backward pass that fails or that
    torch.func cannot batch, or a stacked forward pass that does not give what the model alone
    gives (tried on one real minibatch, with a shared input and with one input per row). User
    code that raises anything here, SystemExit included, makes the task one not to stack: the
    trials then meet the same error one at a time, each failing with its reason."""
    try:
        return _why_not_stackable(task)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: build_model, forward, loss)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"trying a stacked step raised {type(exc).__name__}: {first[:120]}"


def _why_not_stackable(task: Task) -> str | None:
    model = task.build_model()
    if not isinstance(model, nn.Module):
        return f"build_model() returned {type(model).__name__}, not a torch.nn.Module"
    for name, module in model.named_modules():
        if isinstance(module, UNSTACKABLE):
            return f"its model has {type(module).__name__} ({name or 'the model'})"
    x, y = task.train
    x, y = x[: task.batch_size], y[: task.batch_size]
    with torch.no_grad():
        alone = model(x)
    if not isinstance(alone, torch.Tensor):
        return f"its model returns {type(alone).__name__}, not one tensor"
    try:
        stack = _Stack(model, [model, copy.deepcopy(model)])
        losses = _RowLosses(task.loss)
        shared = stack.forward(x)
        losses(shared, y).sum().backward()
        per_row = stack.forward(torch.stack([x, x]), per_row=True)
        losses(per_row, torch.stack([y, y]), per_row=True).sum().backward()
    except Exception as exc:  # torch.func could not batch it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"torch.func cannot stack its model ({type(exc).__name__}: {first[:120]})"
    for outputs in (shared, per_row):
        if outputs.shape[1:] != alone.shape or not torch.allclose(
            outputs.detach(), alone.expand_as(outputs), rtol=1e-4, atol=1e-5
        ):
            return "its stacked forward pass does not give what the model alone gives"
    return None


ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity)


class _Stack:
    """The stacked parameters of N copies of one model, and their forward pass on a shared
    input. A plain MLP (nn.Sequential of Linear layers and elementwise activations, every
    built-in MLP) runs as batched matrix products, about 1.7x faster per row than the general
    path, torch.func's vmap over functional_call, which serves every other model."""

    def __init__(self, template: nn.Module, models: list[nn.Module]) -> None:
        from torch.func import stack_module_state

        params, self.buffers = stack_module_state(models)  # type: ignore[arg-type]
        self.names = list(params)
        self.params = [nn.Parameter(params[name].detach()) for name in self.names]
        self.base = copy.deepcopy(template).to("meta")
        self.layers = _mlp_layers(template)

    def forward(self, x: torch.Tensor, per_row: bool = False) -> torch.Tensor:
        """Every row's outputs, [rows, batch, ...], for the shared input ``x`` ([batch, ...]),
        or with ``per_row`` for each row's own input (``x`` is [rows, batch, ...])."""
        if self.layers is not None and x.dim() == 2 + per_row:
            return self._mlp(x, per_row)
        from torch.func import functional_call, vmap

        def one(
            params: tuple[torch.Tensor, ...], buffers: dict[str, Any], x: torch.Tensor
        ) -> torch.Tensor:
            named = dict(zip(self.names, params, strict=True))
            return functional_call(self.base, (named, buffers), (x,))

        in_x = 0 if per_row else None
        return vmap(one, in_dims=(0, 0, in_x))(tuple(self.params), self.buffers, x)

    def _mlp(self, x: torch.Tensor, per_row: bool) -> torch.Tensor:
        assert self.layers is not None
        rows = self.params[0].shape[0]
        h = x if per_row else x.reshape(1, x.shape[0], -1).expand(rows, -1, -1)
        at = 0
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                weight = self.params[at]
                if layer.bias is not None:
                    h = torch.baddbmm(self.params[at + 1].unsqueeze(1), h, weight.transpose(1, 2))
                    at += 2
                else:
                    h = torch.bmm(h, weight.transpose(1, 2))
                    at += 1
            else:
                h = layer(h)
        return h

    def keep(self, rows: list[int]) -> None:
        """Drop every row not in ``rows`` (positions in the current stack)."""
        index = torch.tensor(rows, device=self.params[0].device)
        self.params = [nn.Parameter(p.detach().index_select(0, index)) for p in self.params]
        self.buffers = {k: b.index_select(0, index) for k, b in self.buffers.items()}

    def append(self, models: list[nn.Module]) -> None:
        """Add one row per model after the current rows."""
        from torch.func import stack_module_state

        params, buffers = stack_module_state(models)  # type: ignore[arg-type]
        self.params = [
            nn.Parameter(torch.cat([old.detach(), params[name].detach()]))
            for old, name in zip(self.params, self.names, strict=True)
        ]
        self.buffers = {k: torch.cat([b, buffers[k]]) for k, b in self.buffers.items()}


def _mlp_layers(model: nn.Module) -> list[nn.Module] | None:
    """The layers of a plain MLP (inputs flattened to [batch, features]), or None."""
    if type(model) is not nn.Sequential or len(list(model.buffers())):
        return None
    layers = list(model)
    if not layers or not isinstance(layers[0], nn.Linear):
        return None
    if not all(type(layer) in (nn.Linear, *ELEMENTWISE) for layer in layers):
        return None
    return layers


def train_stacked(
    task: Task,
    configs: list[AdamConfig],
    *,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    on_epoch: OnEpoch | None = None,
    on_result: OnResult | None = None,
    divergence_factor: float = 100.0,
) -> list[TrainResult]:
    """Train ``task`` once per configuration, all in one stack from the start; one TrainResult
    per configuration, in order. A row that diverges or that ``on_epoch`` stops has ``stopped``
    set (``diverged: ...`` or the returned reason). ``on_result`` sees each result as it comes."""
    _check_uniform(configs)
    results: dict[int, TrainResult] = {}

    def collect(i: int, result: TrainResult) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    queue = iter(configs)
    train_stack(
        task,
        lambda: next(queue, None),
        rows=max(1, len(configs)),
        seed=seed,
        epochs=epochs,
        device=device,
        on_epoch=on_epoch,
        on_result=collect,
        divergence_factor=divergence_factor,
    )
    return [results[i] for i in range(len(configs))]


@dataclass
class _Row:
    """One configuration's place in the stack; ``id`` counts configurations in arrival order."""

    id: int
    config: AdamConfig
    lrs: list[float]
    log: TrainingLog
    started: float
    epoch: int = 0  # epochs completed
    step: int = 0  # steps taken


def train_stack(
    task: Task,
    source: Source,
    *,
    rows: int,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    on_epoch: OnEpoch | None = None,
    on_result: OnResult | None = None,
    divergence_factor: float = 100.0,
) -> None:
    """Train configurations from ``source`` up to ``rows`` at a time in one stack, until
    ``source()`` returns None and every row has finished. A slot freed by a finished, pruned or
    diverged row takes the next configuration at the stack's next epoch boundary, so a row
    always starts its first epoch when the others start one of theirs: every row reads the
    batch at the same position of its own epoch's order (gathered per row while rows are at
    different epochs) and trains exactly as it would alone. ``on_result(id, result)`` receives
    each row's result the moment it finishes, ids numbering configurations in arrival order."""
    device = torch.device(device) if isinstance(device, str) else device
    epochs = epochs or task.epochs
    total_steps = planned_steps(task, epochs)
    x_train, y_train = (t.to(device) for t in task.train)
    validation = (task.validation[0].to(device), task.validation[1].to(device))
    size, batch_size = len(x_train), task.batch_size
    order = torch.Generator().manual_seed(seed)  # the orders train() draws, one per epoch
    orders = torch.stack([torch.randperm(size, generator=order) for _ in range(epochs)])
    orders = orders.to(device)
    row_losses = _RowLosses(task.loss)
    live: list[_Row] = []
    stack: _Stack | None = None
    optimizer: torch.optim.Optimizer | None = None
    arrived = 0
    exhausted = False

    def finish(
        row: _Row,
        reason: str | None,
        test: dict[str, float] | None = None,
        failed: str | None = None,
    ) -> None:
        if on_result is not None:
            result = _result(task, row.log, reason, test or {}, row.started)
            result.failed = failed
            on_result(row.id, result)

    while True:
        joining: list[_Row] = []
        while not exhausted and len(live) + len(joining) < rows:
            config = source()
            if config is None:
                exhausted = True
                break
            if live or joining:
                _check_uniform([(live or joining)[0].config, config])
            log = TrainingLog(total_steps=total_steps)
            lrs = learning_rates(config.lr, config.schedule, total_steps)
            joining.append(_Row(arrived, config, lrs, log, time.perf_counter()))
            arrived += 1
        if joining:
            stack, optimizer = _join(task, seed, device, stack, optimizer, live, joining)
            live = live + joining
        if not live:
            return
        assert stack is not None and optimizer is not None
        shared = len({row.epoch for row in live}) == 1
        for start in range(0, size, batch_size):
            if shared:
                index = orders[live[0].epoch, start : start + batch_size]
            else:
                epoch_of = torch.tensor([row.epoch for row in live], device=device)
                index = orders[epoch_of, start : start + batch_size]  # [rows, batch]
            step_lrs = [row.lrs[row.step] for row in live]  # one contiguous row per step
            optimizer.param_groups[0]["lr"] = torch.tensor(step_lrs, dtype=torch.float64)
            optimizer.zero_grad(set_to_none=True)
            outputs = stack.forward(x_train[index], per_row=not shared)
            losses = row_losses(outputs, y_train[index], per_row=not shared)
            diverged = []
            for r, (row, value) in enumerate(zip(live, losses.tolist(), strict=True)):
                seen, lr = row.log.train_losses, step_lrs[r]
                try:
                    check_divergence(
                        row.step, value, seen[0] if seen else value, divergence_factor, lr
                    )
                except DivergedError as exc:
                    diverged.append(r)
                    finish(row, f"diverged: {exc}")
                    continue
                seen.append(value)
                row.log.learning_rates.append(lr)
            losses.sum().backward()
            optimizer.step()
            for row in live:
                row.step += 1
            if diverged:
                live, optimizer = _leave(stack, optimizer, live, diverged)
                if not live:
                    break
        if not live:
            stack = optimizer = None
            continue
        for row in live:
            row.epoch += 1
        live, optimizer = _end_epoch(
            task, epochs, stack, optimizer, live, validation, on_epoch, finish
        )
        if not live:  # every row left: the next configurations start a new stack
            stack = optimizer = None


def _end_epoch(
    task: Task,
    epochs: int,
    stack: _Stack,
    optimizer: torch.optim.Optimizer,
    live: list[_Row],
    validation: tuple[torch.Tensor, torch.Tensor],
    on_epoch: OnEpoch | None,
    finish: Callable[..., None],
) -> tuple[list[_Row], torch.optim.Optimizer]:
    """Evaluate every row, ask ``on_epoch`` which to stop, finish the stopped, diverged and
    completed rows and take them out of the stack."""
    per_epoch = task.steps_per_epoch()
    leaving: dict[int, str | None] = {}  # position in the stack -> why (None: completed)
    failed: dict[int, str] = {}  # position -> why its own evaluation raised
    judged: dict[int, Evaluation] = {}
    for r, (row, metrics) in enumerate(zip(live, _evaluate(task, stack, validation), strict=True)):
        if isinstance(metrics, BaseException):  # this row's loss or metric raised: only it fails
            leaving[r] = failed[r] = describe(metrics)
            continue
        epoch_losses = row.log.train_losses[-per_epoch:]
        metrics.setdefault("train_loss", sum(epoch_losses) / len(epoch_losses))
        evaluation = Evaluation(row.epoch, row.step, metrics)
        row.log.evaluations.append(evaluation)
        if not math.isfinite(metrics["val_loss"]):
            lr = row.log.learning_rates[-1]
            leaving[r] = f"diverged: {DivergedError(row.step - 1, metrics['val_loss'], lr)}"
        else:
            judged[row.id] = evaluation
    reasons = on_epoch(judged) if on_epoch is not None and judged else {}
    for r, row in enumerate(live):
        if r in leaving:
            continue
        if reasons.get(row.id):
            leaving[r] = reasons[row.id]
        elif row.epoch >= epochs:
            leaving[r] = None
    completed = [r for r, why in leaving.items() if why is None]
    tests: dict[int, dict[str, float]] = {}
    if completed and task.test is not None:
        device = stack.params[0].device
        test = (task.test[0].to(device), task.test[1].to(device))
        every = _evaluate(task, stack, test)
        for r in completed:
            metrics = every[r]
            if isinstance(metrics, BaseException):
                failed[r] = describe(metrics)
                continue
            tests[r] = {f"test_{k.removeprefix('val_')}": v for k, v in metrics.items()}
    for r in sorted(leaving):
        finish(live[r], leaving[r], tests.get(r), failed.get(r))
    if not leaving:
        return live, optimizer
    return _leave(stack, optimizer, live, sorted(leaving))


class _RowLosses:
    """Every row's loss in one vmapped call of the task's loss when that gives what calling it
    row by row gives (checked on the first batch), else row by row."""

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.loss = loss
        self.vmapped: bool | None = None

    def __call__(
        self, outputs: torch.Tensor, targets: torch.Tensor, per_row: bool = False
    ) -> torch.Tensor:
        """Each row's loss; ``targets`` shared ([batch, ...]) or, with ``per_row``, each row's
        own ([rows, batch, ...])."""
        if self.vmapped is None:
            one_by_one = self._loop(outputs, targets, per_row)
            try:
                together = self._vmap(outputs, targets, per_row)
                self.vmapped = together.shape == one_by_one.shape and torch.allclose(
                    together, one_by_one, rtol=1e-6, atol=0
                )
            except Exception:  # a loss torch.func cannot batch
                self.vmapped = False
            return one_by_one
        if self.vmapped:
            return self._vmap(outputs, targets, per_row)
        return self._loop(outputs, targets, per_row)

    def _loop(self, outputs: torch.Tensor, targets: torch.Tensor, per_row: bool) -> torch.Tensor:
        if per_row:
            return torch.stack([self.loss(o, t) for o, t in zip(outputs, targets, strict=True)])
        return torch.stack([self.loss(row, targets) for row in outputs])

    def _vmap(self, outputs: torch.Tensor, targets: torch.Tensor, per_row: bool) -> torch.Tensor:
        from torch.func import vmap

        return vmap(self.loss, in_dims=(0, 0 if per_row else None))(outputs, targets)


def _check_uniform(configs: list[AdamConfig]) -> None:
    kinds = {(c.decoupled, c.amsgrad) for c in configs}
    if len(kinds) > 1:
        raise ValueError(
            "a stack needs one decoupled and one amsgrad setting; group the configurations by "
            f"them first, got {sorted(kinds)}"
        )


def _join(
    task: Task,
    seed: int,
    device: torch.device,
    stack: _Stack | None,
    optimizer: torch.optim.Optimizer | None,
    live: list[_Row],
    joining: list[_Row],
) -> tuple[_Stack, torch.optim.Optimizer]:
    """Add ``joining``'s rows, each built from ``seed`` as train() builds its model, with fresh
    optimizer state (per-row step counts at 0)."""
    models = []
    with _BUILD_LOCK:
        for _ in joining:  # each copy starts from the same seed: the weights a trial gets alone
            torch.manual_seed(seed)
            models.append(task.build_model().to(device))
    old_state: list[dict[str, torch.Tensor]] = []
    if stack is None:
        stack = _Stack(models[0], models)
    else:
        assert optimizer is not None
        old_state = [optimizer.state[p] for p in stack.params]
        stack.append(models)
    fresh = _optimizer(stack, [row.config for row in live + joining])
    added = len(joining)
    for k, p in enumerate(stack.params):
        state = fresh.state[p]
        if old_state:
            for key, value in old_state[k].items():
                zeros = torch.zeros(
                    (added, *value.shape[1:]), dtype=value.dtype, device=value.device
                )
                state[key] = torch.cat([value, zeros])
    return stack, fresh


def _leave(
    stack: _Stack, optimizer: torch.optim.Optimizer, live: list[_Row], rows: list[int]
) -> tuple[list[_Row], torch.optim.Optimizer]:
    """Take stack positions ``rows`` out: parameters, optimizer state and hyperparameters."""
    keep = [r for r in range(len(live)) if r not in rows]
    live = [live[r] for r in keep]
    if not live:
        return live, optimizer
    old_state = [optimizer.state[p] for p in stack.params]
    stack.keep(keep)
    fresh = _optimizer(stack, [row.config for row in live])
    for k, p in enumerate(stack.params):
        index = torch.tensor(keep, device=p.device)
        fresh.state[p] = {
            key: value.index_select(0, index.to(value.device))
            for key, value in old_state[k].items()
        }
    return live, fresh


def _optimizer(stack: _Stack, configs: list[AdamConfig]) -> torch.optim.Optimizer:
    """One FusedAdam over the stack, one row of hyperparameters per configuration, and state
    with a step count per row (rows join at different times)."""
    from adamtune.optim import FusedAdam

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64)

    first = configs[0]
    optimizer = FusedAdam(
        stack.params,
        lr=column([c.lr for c in configs]),
        betas=(column([c.beta1 for c in configs]), column([c.beta2 for c in configs])),
        eps=column([c.eps for c in configs]),
        weight_decay=column([c.weight_decay for c in configs]),
        decoupled_weight_decay=first.decoupled,
        amsgrad=first.amsgrad,
    )
    for p in stack.params:
        optimizer.state[p] = {
            "step": torch.zeros(len(configs), dtype=torch.float32),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
            **({"max_exp_avg_sq": torch.zeros_like(p)} if first.amsgrad else {}),
        }
    return optimizer


@torch.no_grad()
def _evaluate(
    task: Task, stack: _Stack, data: tuple[torch.Tensor, torch.Tensor]
) -> list[dict[str, float] | BaseException]:
    """Every row's loss and metric on ``data``; for a row whose loss or metric raised (user
    code, SystemExit included), the exception, so that only that row fails."""
    x, y = data
    outputs = torch.cat(
        [stack.forward(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)], dim=1
    )
    rows: list[dict[str, float] | BaseException] = []
    for out in outputs:
        try:
            rows.append(
                {"val_loss": task.loss(out, y).item(), task.metric_name: metric_value(task, out, y)}
            )
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (user code)
            rows.append(exc)
    return rows


def _result(
    task: Task, log: TrainingLog, reason: str | None, test: dict[str, float], started: float
) -> TrainResult:
    final = dict(log.evaluations[-1].metrics) if log.evaluations else {}
    final.update(test)
    value = final.get(task.metric_name, math.nan)
    return TrainResult(value, final, log, reason, time.perf_counter() - started)
