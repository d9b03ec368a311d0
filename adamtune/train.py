"""The one training loop. It knows nothing of Optuna, MLflow or Click: it reports through
``on_eval`` (which may raise to stop training, e.g. to prune) and returns everything it
measured in a TrainResult.

Divergence: a step whose loss is not finite, or exceeds ``divergence_factor`` times the first
step's loss, stops training at once with DivergedError (a loss 100x above where it started
means the run is lost; continuing would only burn the trial's budget).

Reproducibility: the seed fixes the initial weights (torch.manual_seed before build_model) and
the batch order (a dedicated generator); the same config and seed give the same metrics on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from adamtune.config import AdamConfig
from adamtune.errors import DivergedError
from adamtune.optimizers import build_optimizer
from adamtune.tasks.base import Batch, Task

OptimizerFactory = Callable[[list[torch.nn.Parameter], AdamConfig], torch.optim.Optimizer]
OnEval = Callable[["Evaluation"], None]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]
EVAL_CHUNK = 8192


@dataclass(frozen=True)
class Evaluation:
    epoch: int  # 1-based: evaluation after this many epochs
    step: int  # optimizer steps taken so far
    metrics: dict[str, float]


@dataclass
class TrainingLog:
    """What training has done so far, step by step. Pass one to train() to keep the history of a
    run that is stopped early (pruned, diverged, interrupted)."""

    learning_rates: list[float] = field(default_factory=list)  # the LR each step used
    train_losses: list[float] = field(default_factory=list)  # the loss each step saw
    evaluations: list[Evaluation] = field(default_factory=list)
    total_steps: int = 0  # steps planned


@dataclass
class TrainResult:
    value: float  # the task's metric on the validation split after the last epoch
    metrics: dict[str, float]
    total_steps: int
    learning_rates: list[float] = field(repr=False)  # the LR each step used
    train_losses: list[float] = field(repr=False)  # the loss each step saw
    evaluations: list[Evaluation] = field(repr=False)
    seconds: float = 0.0


def resolve_device(device: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; "cuda" without a GPU is an error."""
    from adamtune.errors import ConfigError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device: {device!r} asked for, but torch sees no CUDA device")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device: must be auto, cpu or cuda, got {device!r}") from exc


def train(
    task: Task,
    config: AdamConfig,
    *,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    optimizer_factory: OptimizerFactory = build_optimizer,
    on_eval: OnEval | None = None,
    divergence_factor: float = 100.0,
    log: TrainingLog | None = None,
    scheduler_factory: SchedulerFactory | None = None,
) -> TrainResult:
    """Train ``task``'s model with ``config`` and return the final validation metrics.

    Raises DivergedError at the first step that diverges; exceptions raised by ``on_eval``
    propagate unchanged. ``log``, when given, holds every step and evaluation done, also when
    training stops early. ``scheduler_factory(optimizer, total_steps)``, when given, replaces
    adamtune's own per-step LR setting with a torch LR scheduler stepped after every optimizer
    step (how an exported configuration is checked against the trial it came from).
    """
    started = time.perf_counter()
    device = torch.device(device) if isinstance(device, str) else device
    epochs = epochs or task.epochs
    torch.manual_seed(seed)
    model = task.build_model().to(device)
    optimizer = optimizer_factory(list(model.parameters()), config)
    x_train, y_train = (t.to(device) for t in task.train)
    validation = tuple(t.to(device) for t in task.validation)
    n, batch_size = len(x_train), task.batch_size
    total_steps = epochs * task.steps_per_epoch()
    learning_rates = config.learning_rates(total_steps)
    scheduler = scheduler_factory(optimizer, total_steps) if scheduler_factory else None
    order = torch.Generator().manual_seed(seed)
    log = log if log is not None else TrainingLog()
    log.total_steps = total_steps
    losses, evaluations = log.train_losses, log.evaluations

    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        permutation = torch.randperm(n, generator=order).to(device)
        for start in range(0, n, batch_size):
            index = permutation[start : start + batch_size]
            if scheduler is None:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rates[step]
            else:
                learning_rates[step] = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(model(x_train[index]), y_train[index])
            loss_value = loss.item()
            _check_divergence(
                step,
                loss_value,
                losses[0] if losses else loss_value,
                divergence_factor,
                learning_rates[step],
            )
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss_value)
            log.learning_rates.append(learning_rates[step])
            step += 1
        metrics = evaluate(task, model, validation)
        epoch_losses = losses[-task.steps_per_epoch() :]
        metrics["train_loss"] = sum(epoch_losses) / len(epoch_losses)
        evaluation = Evaluation(epoch, step, metrics)
        evaluations.append(evaluation)
        if not math.isfinite(metrics["val_loss"]):
            raise DivergedError(step - 1, metrics["val_loss"], learning_rates[step - 1])
        if on_eval is not None:
            on_eval(evaluation)

    final = dict(evaluations[-1].metrics)
    if task.test is not None:
        test = evaluate(task, model, tuple(t.to(device) for t in task.test))
        final.update({f"test_{k.removeprefix('val_')}": v for k, v in test.items()})
    return TrainResult(
        value=final[task.metric_name],
        metrics=final,
        total_steps=total_steps,
        learning_rates=learning_rates,
        train_losses=losses,
        evaluations=evaluations,
        seconds=time.perf_counter() - started,
    )


def _check_divergence(step: int, loss: float, first: float, factor: float, lr: float) -> None:
    if not math.isfinite(loss):
        raise DivergedError(step, loss, lr)
    if factor and step > 0 and loss > factor * max(first, 1e-3):
        raise DivergedError(step, loss, lr, f"over {factor:g}x the first step's {first:.4g}")


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module, data: Batch) -> dict[str, float]:
    """The task's loss and metric on ``data``, computed in chunks, model left in eval mode."""
    model.eval()
    x, y = data
    outputs = torch.cat([model(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])
    return {"val_loss": task.loss(outputs, y).item(), task.metric_name: task.metric(outputs, y)}
