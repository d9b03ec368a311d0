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

# train_stack over 80 lines: it reads top to bottom as train() does (rows join, an epoch
# trains, rows leave); its parts live in feed.py (batches), rows.py (joining, leaving, the
# optimizer, per-row norms) and evaluation.py.

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.phases import changes as phase_changes
from adamtune.config.phases import learning_rates
from adamtune.errors import DivergedError, describe
from adamtune.tasks.base import Task
from adamtune.training.precision import Precision
from adamtune.training.readback import read_back
from adamtune.training.single import (
    EarlyStopping,
    Evaluation,
    TrainingLog,
    TrainResult,
    check_divergence,
    planned_steps,
    run_precision,
)
from adamtune.training.stacked.evaluation import Splits
from adamtune.training.stacked.feed import Feed
from adamtune.training.stacked.layers import row_keys
from adamtune.training.stacked.model import StackedModel, refuse_unstackable
from adamtune.training.stacked.rows import (
    Row,
    check_uniform,
    clip_limits,
    clip_rows,
    join_rows,
    leave_rows,
    row_norms,
    switch_phases,
    update_ratios,
)

# Once per epoch, every running configuration's evaluation -> the ones to stop, with why.
OnEpoch = Callable[[dict[int, Evaluation]], dict[int, str]]
# A configuration's row finished (completed, pruned or diverged): its id and its result.
OnResult = Callable[[int, TrainResult], None]
# The next configuration to train (with its own seed, or the stack's), or None when no more
# should start.
Source = Callable[[], AdamConfig | tuple[AdamConfig, int] | None]
# Work beside an epoch's training (the search asks its next trials): called as the epoch starts
# with how many rows end their last epoch in it; what it returns is called once it has trained.
Overlap = Callable[[int], Callable[[], None]]


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
    check_uniform(configs)
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
    checked: bool = False,
    overlap: Overlap | None = None,
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
    scaler is one model's and cannot be shared by rows (stack_rows trains fp16 one at a time).
    ``checked``: the caller has found the task stackable (why_not_stackable) already.
    ``overlap``: work run beside each epoch's training (see Overlap)."""
    device = torch.device(device) if isinstance(device, str) else device
    prec = run_precision(precision, device)
    refuse_unstackable(task, prec, checked, "trials")
    epochs = epochs or task.epochs
    total_steps = planned_steps(task, epochs)
    feed = Feed(task, device, prec)
    splits = Splits(task, device, prec)
    patience = patience if patience is not None else task.patience
    live: list[Row] = []
    stack: StackedModel | None = None
    optimizer: torch.optim.Optimizer | None = None
    arrived = 0
    exhausted = False

    def finish(
        row: Row,
        reason: str | None,
        test: dict[str, float] | None = None,
        failed: str | None = None,
    ) -> None:
        if on_result is not None:
            best = row.early.best if row.early is not None and reason is None else None
            result = _result(task, row.log, reason, test or {}, row.started, failed, best)
            on_result(row.id, result)

    while True:
        joining: list[Row] = []
        while not exhausted and len(live) + len(joining) < rows:
            item = source()
            if item is None:
                exhausted = True
                break
            config, row_seed = item if isinstance(item, tuple) else (item, seed)
            if live or joining:
                check_uniform([(live or joining)[0].config, config])
            log = TrainingLog(total_steps=total_steps)
            lrs = learning_rates(config, total_steps)
            early = EarlyStopping(task.metric_name, task.direction, patience) if patience else None
            row = Row(arrived, config.fixed, row_seed, lrs, log, time.perf_counter(), early)
            row.switches = phase_changes(config, total_steps)
            joining.append(row)
            arrived += 1
        if joining:
            stack, optimizer = join_rows(task, prec, seed, stack, optimizer, live, joining)
            live = live + joining
        if not live:
            return
        assert stack is not None and optimizer is not None
        ending = sum(row.epoch + 1 >= epochs for row in live)  # rows in their last epoch
        trained = overlap(ending) if overlap is not None else None  # before any result is out
        try:
            pending = train_epoch(task, stack, optimizer, live, feed, prec)
        finally:
            if trained is not None:
                trained()
        # A diverged row trained on to the epoch's end on its own weights (rows share no
        # parameter): it leaves now, its log cut at the step that diverged.
        diverged = _settle(live, pending, divergence_factor, finish)
        if diverged:
            live, optimizer = leave_rows(stack, optimizer, live, diverged, prec, seed)
        if not live:
            stack = optimizer = None
            continue
        for row in live:
            row.epoch += 1
        live, optimizer = _end_epoch(
            task, epochs, stack, optimizer, live, splits, on_epoch, finish, prec, seed
        )
        if not live:  # every row left: the next configurations start a new stack
            stack = optimizer = None


def train_epoch(
    task: Task,
    stack: StackedModel,
    optimizer: torch.optim.Optimizer,
    live: list[Row],
    feed: Feed,
    prec: Precision,
    go_on: Callable[[int], bool] | None = None,
) -> list[torch.Tensor]:
    """One epoch of every row, each on its own batches; each step's [rows] losses and
    gradient norms, kept on the device until the epoch's end, are returned. ``go_on(steps)``,
    asked after every step, may end the epoch early (measure.py times steps with it)."""
    pending: list[torch.Tensor] = []
    device = stack.params[0].device
    limits = clip_limits(live, device)
    seeds = torch.tensor([row.seed for row in live], dtype=torch.int64)
    first_keys = row_keys(seeds, torch.tensor([row.step for row in live])).to(device)
    steps = feed.epoch([(row.seed, row.epoch) for row in live])
    per_epoch = task.steps_per_epoch()
    phased = any(row.switches for row in live)  # schedules of phases switch values mid-run
    stack.train(True)
    for i, step in enumerate(steps):
        if phased and switch_phases(optimizer, live):
            limits = clip_limits(live, device)
        step_lrs = [row.lrs[row.step] for row in live]  # one contiguous row per step
        optimizer.param_groups[0]["lr"] = torch.tensor(step_lrs, dtype=torch.float64)
        optimizer.zero_grad(set_to_none=True)
        keys = first_keys + i
        with prec.forward():
            if step.groups is not None:
                losses = stack.group_losses(task, step.groups, keys)
            else:
                losses = stack.task_losses(task, step.batch, keys, step.per_row)
        for row, lr in zip(live, step_lrs, strict=True):
            row.log.learning_rates.append(lr)
        losses.sum().backward()
        norms = row_norms([p.grad for p in stack.params if p.grad is not None])
        pending.append(torch.stack([losses.detach().float(), norms.float()]))
        clip_rows(stack, limits, norms)
        last = i == per_epoch - 1
        before = [p.detach().clone() for p in stack.params] if last else None
        optimizer.step()
        if before is not None:
            update_ratios(stack, before, live)
        for row in live:
            row.step += 1
        if go_on is not None and not go_on(i + 1):
            break
    return pending


def _end_epoch(
    task: Task,
    epochs: int,
    stack: StackedModel,
    optimizer: torch.optim.Optimizer,
    live: list[Row],
    splits: Splits,
    on_epoch: OnEpoch | None,
    finish: Callable[..., None],
    prec: Precision,
    seed: int,
) -> tuple[list[Row], torch.optim.Optimizer]:
    """Evaluate every row, ask ``on_epoch`` which to stop, finish the stopped, diverged and
    completed rows and take them out of the stack."""
    per_epoch = task.steps_per_epoch()
    leaving: dict[int, str | None] = {}  # position in the stack -> why (None: completed)
    failed: dict[int, str] = {}  # position -> why its own evaluation raised
    judged: dict[int, Evaluation] = {}
    weights = row_norms(stack.params).tolist()  # every row's weight norm (param_norm)
    rows_metrics = splits.evaluate(stack, splits.validation)
    for r, (row, metrics) in enumerate(zip(live, rows_metrics, strict=True)):
        if isinstance(metrics, BaseException):  # this row's loss or metric raised: only it fails
            leaving[r] = failed[r] = describe(metrics)
            continue
        epoch_losses = row.log.train_losses[-per_epoch:]
        metrics.setdefault("train_loss", sum(epoch_losses) / len(epoch_losses))
        metrics.setdefault("param_norm", weights[r])
        metrics.setdefault("update_ratio", row.update_ratio)
        if "val_loss" in metrics:
            metrics.setdefault("val_train_gap", metrics["val_loss"] - metrics["train_loss"])
        evaluation = Evaluation(row.epoch, row.step, metrics)
        row.log.evaluations.append(evaluation)
        watched = metrics.get("val_loss", metrics[task.metric_name])
        if not math.isfinite(watched):
            lr = row.log.learning_rates[-1]
            leaving[r] = f"diverged: {DivergedError(row.step - 1, watched, lr)}"
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
            row.best_state = stack.row_state(r)
        if row.epoch >= epochs or (row.early is not None and row.early.exhausted(row.epoch)):
            leaving[r] = None
    completed = [r for r, why in leaving.items() if why is None]
    tests: dict[int, dict[str, float]] = {}
    if completed and task.test is not None:
        every = splits.evaluate(stack, splits.test)
        for r in completed:  # rows with early stopping: their best weights, not their last
            if live[r].best_state is not None:
                every[r] = splits.evaluate_row(stack, splits.test, r, live[r].best_state)
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
    return leave_rows(stack, optimizer, live, sorted(leaving), prec, seed)


def _settle(
    live: list[Row],
    pending: list[torch.Tensor],
    divergence_factor: float,
    finish: Callable[[Row, str], None],
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
