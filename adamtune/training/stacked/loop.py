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

# Over 400 lines, train_stack over 80: the stacked loop reads top to bottom as train() does,
# and its parts share the loop's state (rows joining at epoch boundaries, per-row batches and
# schedules). Issue 26 (BatchNorm, Datasets, hooks in the stack) rewrites this loop; it is
# split there, on the shape that work gives it.

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.schedules import learning_rates
from adamtune.errors import DivergedError, describe
from adamtune.tasks.base import Task
from adamtune.training.batches import metric_value
from adamtune.training.precision import Precision, as_float
from adamtune.training.readback import read_back
from adamtune.training.single import (
    _BUILD_LOCK,
    EVAL_CHUNK,
    EarlyStopping,
    Evaluation,
    TrainingLog,
    TrainResult,
    check_divergence,
    planned_steps,
    run_precision,
)
from adamtune.training.stacked.model import RowLosses, StackedModel, why_not_stackable

# Once per epoch, every running configuration's evaluation -> the ones to stop, with why.
OnEpoch = Callable[[dict[int, Evaluation]], dict[int, str]]
# A configuration's row finished (completed, pruned or diverged): its id and its result.
OnResult = Callable[[int, TrainResult], None]
# The next configuration to train (with its own seed, or the stack's), or None when no more
# should start.
Source = Callable[[], AdamConfig | tuple[AdamConfig, int] | None]


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
    patience: int | None = None,
    seeds: list[int] | None = None,
    precision: str = "fp32",
) -> list[TrainResult]:
    """Train ``task`` once per configuration, all in one stack from the start; one TrainResult
    per configuration, in order. A row that diverges or that ``on_epoch`` stops has ``stopped``
    set (``diverged: ...`` or the returned reason). ``on_result`` sees each result as it comes.
    ``seeds``, when given, is each configuration's own seed (its initial weights and batch
    order, as ``train(task, config, seed=seeds[i])``); else every row has ``seed``."""
    _check_uniform(configs)
    if seeds is not None and len(seeds) != len(configs):
        raise ValueError(f"seeds: one per configuration, got {len(seeds)} for {len(configs)}")
    results: dict[int, TrainResult] = {}

    def collect(i: int, result: TrainResult) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    queue = iter(zip(configs, seeds or [seed] * len(configs), strict=True))
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
        patience=patience,
        precision=precision,
    )
    return [results[i] for i in range(len(configs))]


@dataclass
class _Row:
    """One configuration's place in the stack; ``id`` counts configurations in arrival order."""

    id: int
    config: AdamConfig
    seed: int  # its initial weights and its batch orders
    lrs: list[float]
    log: TrainingLog
    started: float
    early: EarlyStopping | None = None
    epoch: int = 0  # epochs completed
    step: int = 0  # steps taken
    best_params: list[torch.Tensor] | None = None  # its weights at its best evaluation (test)
    update_ratio: float = math.nan  # its epoch's last update norm over its weight norm


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
    patience: int | None = None,
    precision: str = "fp32",
) -> None:
    """Train configurations from ``source`` up to ``rows`` at a time in one stack, until
    ``source()`` returns None and every row has finished. A slot freed by a finished, pruned or
    diverged row takes the next configuration at the stack's next epoch boundary, so a row
    always starts its first epoch when the others start one of theirs: every row reads the
    batch at the same position of its own epoch's order (gathered per row while rows are at
    different epochs) and trains exactly as it would alone. ``on_result(id, result)`` receives
    each row's result the moment it finishes, ids numbering configurations in arrival order.
    ``patience`` (default: the task's) is early stopping, row by row, as train() does it.
    ``source`` may give a configuration with a seed of its own (``(config, seed)``); rows of
    other seeds then gather their batches from their own orders, as rows at other epochs do.
    ``precision``: bf16 autocasts as train() does; bf16-pure rounds stochastically with bits
    drawn for the stack (seeded by ``seed``), not the ones a row would draw alone; fp16's loss
    scaler is one model's and cannot be shared by rows (stack_rows trains fp16 one at a time)."""
    device = torch.device(device) if isinstance(device, str) else device
    prec = run_precision(precision, device)
    reason = why_not_stackable(task) if task.uses_loader else None
    if reason:
        raise ValueError(f"task {task.name!r} cannot be stacked: {reason}")
    if prec.scaler is not None:
        raise ValueError("fp16 trials cannot be stacked: their loss scaler is one model's")
    epochs = epochs or task.epochs
    total_steps = planned_steps(task, epochs)
    x_train, y_train = prec.inputs(task.train[0].to(device)), task.train[1].to(device)
    validation = (prec.inputs(task.validation[0].to(device)), task.validation[1].to(device))
    size, batch_size = len(x_train), task.batch_size
    orders: dict[int, _EpochOrders] = {}  # by seed
    row_losses = RowLosses(task.loss_of)
    patience = patience if patience is not None else task.patience
    live: list[_Row] = []
    stack: StackedModel | None = None
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
            best = row.early.best if row.early is not None and reason is None else None
            result = _result(task, row.log, reason, test or {}, row.started, failed, best)
            on_result(row.id, result)

    while True:
        joining: list[_Row] = []
        while not exhausted and len(live) + len(joining) < rows:
            item = source()
            if item is None:
                exhausted = True
                break
            config, row_seed = item if isinstance(item, tuple) else (item, seed)
            if row_seed not in orders:
                orders[row_seed] = _EpochOrders(size, row_seed, device)
            if live or joining:
                _check_uniform([(live or joining)[0].config, config])
            log = TrainingLog(total_steps=total_steps)
            lrs = learning_rates(config.lr, config.schedule, total_steps)
            early = EarlyStopping(task.metric_name, task.direction, patience) if patience else None
            joining.append(_Row(arrived, config, row_seed, lrs, log, time.perf_counter(), early))
            arrived += 1
        if joining:
            stack, optimizer = _join(task, prec, seed, stack, optimizer, live, joining)
            live = live + joining
        if not live:
            return
        assert stack is not None and optimizer is not None
        for row_seed in [k for k in orders if all(row.seed != k for row in live)]:
            del orders[row_seed]  # no row trains with that seed any more
        for row_seed, order in orders.items():
            order.keep({row.epoch for row in live if row.seed == row_seed})
        shared = len({(row.seed, row.epoch) for row in live}) == 1
        pending: list[torch.Tensor] = []  # each step's [rows] losses and norms, on the device
        limits = _clip_limits(live, x_train.device)
        for start in range(0, size, batch_size):
            if shared:
                index = orders[live[0].seed].get(live[0].epoch)[start : start + batch_size]
            else:  # [rows, batch]: each row's batch from its own seed's and epoch's order
                index = torch.stack(
                    [orders[row.seed].get(row.epoch)[start : start + batch_size] for row in live]
                )
            step_lrs = [row.lrs[row.step] for row in live]  # one contiguous row per step
            optimizer.param_groups[0]["lr"] = torch.tensor(step_lrs, dtype=torch.float64)
            optimizer.zero_grad(set_to_none=True)
            with prec.forward():
                outputs = as_float(stack.forward(x_train[index], per_row=not shared))
                losses = row_losses(outputs, y_train[index], per_row=not shared)
            for row, lr in zip(live, step_lrs, strict=True):
                row.log.learning_rates.append(lr)
            losses.sum().backward()
            norms = _row_norms([p.grad for p in stack.params if p.grad is not None])
            pending.append(torch.stack([losses.detach().float(), norms.float()]))
            _clip_rows(stack, limits, norms)
            last = start + batch_size >= size
            before = [p.detach().clone() for p in stack.params] if last else None
            optimizer.step()
            if before is not None:
                _update_ratios(stack, before, live)
            for row in live:
                row.step += 1
        # A diverged row trained on to the epoch's end on its own weights (rows share no
        # parameter): it leaves now, its log cut at the step that diverged.
        diverged = _settle(live, pending, divergence_factor, finish)
        if diverged:
            live, optimizer = _leave(stack, optimizer, live, diverged, prec, seed)
        if not live:
            stack = optimizer = None
            continue
        for row in live:
            row.epoch += 1
        live, optimizer = _end_epoch(
            task, epochs, stack, optimizer, live, validation, on_epoch, finish, prec, seed
        )
        if not live:  # every row left: the next configurations start a new stack
            stack = optimizer = None


def _end_epoch(
    task: Task,
    epochs: int,
    stack: StackedModel,
    optimizer: torch.optim.Optimizer,
    live: list[_Row],
    validation: tuple[torch.Tensor, torch.Tensor],
    on_epoch: OnEpoch | None,
    finish: Callable[..., None],
    prec: Precision,
    seed: int,
) -> tuple[list[_Row], torch.optim.Optimizer]:
    """Evaluate every row, ask ``on_epoch`` which to stop, finish the stopped, diverged and
    completed rows and take them out of the stack."""
    per_epoch = task.steps_per_epoch()
    leaving: dict[int, str | None] = {}  # position in the stack -> why (None: completed)
    failed: dict[int, str] = {}  # position -> why its own evaluation raised
    judged: dict[int, Evaluation] = {}
    weights = _row_norms(stack.params).tolist()  # every row's weight norm (param_norm)
    rows_metrics = _evaluate(task, stack, validation, prec)
    for r, (row, metrics) in enumerate(zip(live, rows_metrics, strict=True)):
        if isinstance(metrics, BaseException):  # this row's loss or metric raised: only it fails
            leaving[r] = failed[r] = describe(metrics)
            continue
        epoch_losses = row.log.train_losses[-per_epoch:]
        metrics.setdefault("train_loss", sum(epoch_losses) / len(epoch_losses))
        metrics.setdefault("param_norm", weights[r])
        metrics.setdefault("update_ratio", row.update_ratio)
        metrics.setdefault("val_train_gap", metrics["val_loss"] - metrics["train_loss"])
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
            continue
        improved = row.early is not None and row.early.improved(row.log.evaluations[-1])
        if improved and task.test is not None:  # the weights its test metrics will come from
            row.best_params = [p[r].detach().clone() for p in stack.params]
        if row.epoch >= epochs or (row.early is not None and row.early.exhausted(row.epoch)):
            leaving[r] = None
    completed = [r for r, why in leaving.items() if why is None]
    tests: dict[int, dict[str, float]] = {}
    if completed and task.test is not None:
        device = stack.params[0].device
        test = (prec.inputs(task.test[0].to(device)), task.test[1].to(device))
        every = _evaluate(task, stack, test, prec)
        for r in completed:  # rows with early stopping: their best weights, not their last
            best_params = live[r].best_params
            if best_params is not None:
                with stack.holding(r, best_params):
                    every[r] = _evaluate(task, stack, test, prec)[r]
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
    return _leave(stack, optimizer, live, sorted(leaving), prec, seed)


def _check_uniform(configs: list[AdamConfig]) -> None:
    kinds = {(c.decoupled, c.amsgrad) for c in configs}
    if len(kinds) > 1:
        raise ValueError(
            "a stack needs one decoupled and one amsgrad setting; group the configurations by "
            f"them first, got {sorted(kinds)}"
        )


def _settle(
    live: list[_Row],
    pending: list[torch.Tensor],
    divergence_factor: float,
    finish: Callable[[_Row, str], None],
) -> list[int]:
    """An epoch's [step][loss, norm][row] values, read back once, into each row's log, every
    loss checked as at its step; the rows that diverged are finished with the step that did,
    their logs cut there. Returns their positions."""
    steps = read_back(pending)
    pending.clear()
    diverged = []
    for r, row in enumerate(live):
        seen, start = row.log.train_losses, row.step - len(steps)
        for i, (losses, norms) in enumerate(steps):
            step = start + i
            try:
                check_divergence(
                    step,
                    losses[r],
                    seen[0] if seen else losses[r],
                    divergence_factor,
                    row.lrs[step],
                )
            except DivergedError as exc:
                del row.log.learning_rates[step:]
                diverged.append(r)
                finish(row, f"diverged: {exc}")
                break
            seen.append(losses[r])
            row.log.grad_norms.append(norms[r])
    return diverged


def _row_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """[rows]: each row's global L2 norm over ``tensors`` (stacked, row first)."""
    if not tensors:
        return torch.zeros(0)
    return torch.stack([t.detach().float().pow(2).flatten(1).sum(1) for t in tensors]).sum(0).sqrt()


def _update_ratios(stack: StackedModel, before: list[torch.Tensor], live: list[_Row]) -> None:
    """Each row's last update norm over its weight norm before it (train.weight_diagnostics)."""
    with torch.no_grad():
        update = _row_norms([p - b for p, b in zip(stack.params, before, strict=True)])
        ratios = (update / _row_norms(before).clamp_min(1e-30)).tolist()
    for row, ratio in zip(live, ratios, strict=True):
        row.update_ratio = ratio


def _clip_limits(live: list[_Row], device: torch.device) -> torch.Tensor | None:
    """[rows]: each row's max_grad_norm (inf: no clipping), on the device once an epoch (the
    rows change only between epochs); None when no row clips."""
    limits = [row.config.max_grad_norm for row in live]
    if all(limit is None for limit in limits):
        return None
    values = [math.inf if value is None else value for value in limits]
    return torch.tensor(values, dtype=torch.float32).to(device)


def _clip_rows(stack: StackedModel, limit: torch.Tensor | None, norms: torch.Tensor) -> None:
    """Each row's gradients clipped by the row's own global norm (``norms``, [rows]), as
    torch.nn.utils.clip_grad_norm_ clips one model's (the same coefficient and epsilon)."""
    if limit is None:
        return
    grads = [p.grad for p in stack.params if p.grad is not None]
    if not grads:
        return
    limit = limit.to(norms.dtype)
    coefficient = (limit / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coefficient.view(-1, *([1] * (g.dim() - 1))))


def _join(
    task: Task,
    prec: Precision,
    seed: int,
    stack: StackedModel | None,
    optimizer: torch.optim.Optimizer | None,
    live: list[_Row],
    joining: list[_Row],
) -> tuple[StackedModel, torch.optim.Optimizer]:
    """Add ``joining``'s rows, each built from its seed as train() builds its model, with fresh
    optimizer state (per-row step counts at 0)."""
    models = []
    with _BUILD_LOCK:
        for row in joining:  # each copy starts from its row's seed: the weights it gets alone
            torch.manual_seed(row.seed)
            models.append(prec.model(task.build_model()))
    old_state: list[dict[str, torch.Tensor]] = []
    if stack is None:
        stack = StackedModel(models[0], models)
    else:
        assert optimizer is not None
        old_state = [optimizer.state[p] for p in stack.params]
        stack.append(models)
    fresh = _optimizer(stack, [row.config for row in live + joining], prec, seed)
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
    stack: StackedModel,
    optimizer: torch.optim.Optimizer,
    live: list[_Row],
    rows: list[int],
    prec: Precision,
    seed: int,
) -> tuple[list[_Row], torch.optim.Optimizer]:
    """Take stack positions ``rows`` out: parameters, optimizer state and hyperparameters."""
    keep = [r for r in range(len(live)) if r not in rows]
    live = [live[r] for r in keep]
    if not live:
        return live, optimizer
    old_state = [optimizer.state[p] for p in stack.params]
    stack.keep(keep)
    fresh = _optimizer(stack, [row.config for row in live], prec, seed)
    for k, p in enumerate(stack.params):
        index = torch.tensor(keep, device=p.device)
        fresh.state[p] = {
            key: value.index_select(0, index.to(value.device))
            for key, value in old_state[k].items()
        }
    return live, fresh


def _optimizer(
    stack: StackedModel, configs: list[AdamConfig], prec: Precision, seed: int
) -> torch.optim.Optimizer:
    """One FusedAdam over the stack, one row of hyperparameters per configuration, and state
    with a step count per row (rows join at different times); float32 moments for bf16-pure."""
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
    prec.optimizer(optimizer, seed)
    moments = torch.float32 if prec.name == "bf16-pure" else None
    for p in stack.params:
        keys = (
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            if first.amsgrad
            else ("exp_avg", "exp_avg_sq")
        )
        optimizer.state[p] = {
            "step": torch.zeros(len(configs), dtype=torch.float32),
            **{key: torch.zeros_like(p, dtype=moments) for key in keys},
        }
    return optimizer


@torch.no_grad()
def _evaluate(
    task: Task,
    stack: StackedModel,
    data: tuple[torch.Tensor, torch.Tensor],
    prec: Precision,
) -> list[dict[str, float] | BaseException]:
    """Every row's loss and metric on ``data``; for a row whose loss or metric raised (user
    code, SystemExit included), the exception, so that only that row fails."""
    x, y = data
    with prec.forward():
        chunks = [stack.forward(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]
    outputs = as_float(torch.cat(chunks, dim=1))
    rows: list[dict[str, float] | BaseException] = []
    for out in outputs:
        try:
            rows.append(
                {
                    "val_loss": task.loss_of(out, y).item(),
                    task.metric_name: metric_value(task, out, y),
                }
            )
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (user code)
            rows.append(exc)
    return rows


def _result(
    task: Task,
    log: TrainingLog,
    reason: str | None,
    test: dict[str, float],
    started: float,
    failed: str | None = None,
    best: Evaluation | None = None,
) -> TrainResult:
    last = best or (log.evaluations[-1] if log.evaluations else None)
    final = dict(last.metrics) if last is not None else {}
    final.update(test)
    value = final.get(task.metric_name, math.nan)
    seconds = time.perf_counter() - started
    return TrainResult(value, final, log, reason, seconds, failed, best)


class _EpochOrders:
    """The batch order train() uses in each epoch (one randperm per epoch from one generator
    seeded with ``seed``), regenerated from the generator's saved state for any epoch a row is
    in, and kept only while some row is in it: rows at many epochs, never every epoch's order
    of a large data set at once."""

    def __init__(self, size: int, seed: int, device: torch.device) -> None:
        self.size, self.device = size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.states: list[torch.Tensor] = []  # the generator's state as epoch e starts
        self.cached: dict[int, torch.Tensor] = {}

    def get(self, epoch: int) -> torch.Tensor:
        if epoch not in self.cached:
            while len(self.states) <= epoch:
                self.states.append(self.generator.get_state())
                torch.randperm(self.size, generator=self.generator)
            replay = torch.Generator()
            replay.set_state(self.states[epoch])
            self.cached[epoch] = torch.randperm(self.size, generator=replay).to(self.device)
        return self.cached[epoch]

    def keep(self, epochs: set[int]) -> set[int]:
        """Forget the orders of epochs no row is in; return ``epochs``."""
        for epoch in [e for e in self.cached if e not in epochs]:
            del self.cached[epoch]
        return epochs
