"""The one training loop. It knows nothing of Optuna, MLflow or Click: it reports through
``on_eval``, which returns a reason to stop training (e.g. pruned) or None to go on, and it
returns one record, a TrainResult: the final metrics, why it stopped early if it did, and the
TrainingLog of every step and evaluation.

Divergence: a step whose loss is not finite, or exceeds ``divergence_factor`` times the first
step's loss, stops training with DivergedError naming that step (a loss 100x above where it
started means the run is lost). Losses and gradient norms stay on the device during an epoch
and are read back once at its end (adamtune.readback), so the guard acts there: the error, and
the log cut at the diverging step, are what a per-step check gives, without a host sync a step.

Reproducibility: the seed fixes the initial weights (torch.manual_seed before build_model) and
the batch order (a dedicated generator); the same config and seed give the same metrics on CPU.
"""

# Over 400 lines, train() over 80: the one training loop, kept readable top to bottom (nanoGPT's
# shape) rather than cut into helpers that each need half its locals; the set-up around it
# (device, precision, planned steps) is what makes the rest of the length.

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.phases import apply as apply_phase
from adamtune.config.phases import changes as phase_changes
from adamtune.config.phases import learning_rates as planned_learning_rates
from adamtune.errors import ConfigError, DivergedError, TaskError
from adamtune.tasks.base import Batch, Task, split_size
from adamtune.training.batches import (
    batches,
    concatenated,
    evaluate_split,
    metric_value,
    step_loss,
)
from adamtune.training.builders import build_optimizer
from adamtune.training.precision import Precision, PrecisionUnavailable, as_float
from adamtune.training.readback import read_back

OptimizerFactory = Callable[[list[torch.nn.Parameter], AdamConfig], torch.optim.Optimizer]
OnEval = Callable[["Evaluation"], "str | None"]  # a reason to stop, or None to go on
EVAL_CHUNK = 8192
MAX_TOTAL_STEPS = 10_000_000  # a trial's per-step log (lr, loss) must fit in memory
# torch.manual_seed and the model's initialisation share torch's global generator; threads
# (--n-jobs) building models at the same time would draw from each other's sequence.
_BUILD_LOCK = threading.Lock()


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
    grad_norms: list[float] = field(default_factory=list)  # global gradient norm, before clipping
    evaluations: list[Evaluation] = field(default_factory=list)
    # a user loop's trial.log(step, **metrics) beyond the loss: (step, metrics)
    step_metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    total_steps: int = 0  # steps planned
    epochs_read: bool | None = None  # a user loop: whether it read trial.epochs
    params: dict[str, Any] = field(default_factory=dict)  # a user loop's trial.log_params


@dataclass
class TrainResult:
    """What one training run did: its final metrics and its log, in one record."""

    value: float  # the task's metric on the validation split at the last evaluation
    metrics: dict[str, float]
    log: TrainingLog = field(repr=False)
    stopped: str | None = None  # why on_eval stopped it early; None when it ran every epoch
    seconds: float = 0.0
    failed: str | None = None  # a stacked row whose own loss or metric raised: why
    best: Evaluation | None = None  # with early stopping: the evaluation the value comes from

    @property
    def total_steps(self) -> int:
        return self.log.total_steps

    @property
    def learning_rates(self) -> list[float]:
        return self.log.learning_rates

    @property
    def train_losses(self) -> list[float]:
        return self.log.train_losses

    @property
    def evaluations(self) -> list[Evaluation]:
        return self.log.evaluations


@dataclass
class EarlyStopping:
    """Early stopping's book-keeping for one run: the best evaluation so far, and whether
    ``patience`` evaluations have passed without a better one (strictly better, in the task's
    direction)."""

    metric_name: str
    direction: str
    patience: int
    best: Evaluation | None = None

    def improved(self, evaluation: Evaluation) -> bool:
        """Take ``evaluation`` into account; True when it is the new best."""
        value = evaluation.metrics[self.metric_name]
        if self.best is not None:
            best = self.best.metrics[self.metric_name]
            if not (value > best if self.direction == "maximize" else value < best):
                return False
        self.best = evaluation
        return True

    def exhausted(self, epoch: int) -> bool:
        return self.best is not None and epoch - self.best.epoch >= self.patience


def resolve_device(device: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; a device torch cannot use is an error."""
    from adamtune.config.settings import check_device

    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"--device: {device!r} asked for, but torch sees no CUDA device")
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(
                f"--device: {device!r} asked for, but torch sees {count} CUDA device(s)"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device: 'mps' asked for, but torch sees no MPS device")
    return torch.device(device)


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
    patience: int | None = None,
    precision: str = "fp32",
    values: Any = None,
) -> TrainResult:
    """Train ``task``'s model with ``config`` and return the final validation metrics.

    ``on_eval`` sees every evaluation and may return a reason to stop (the result then carries
    it in ``stopped``); exceptions it raises propagate unchanged. Raises DivergedError at the
    first step that diverges. ``log``, when given, holds every step and evaluation done, also
    when training ends in an exception. ``patience`` (default: the task's) stops training after
    that many evaluations without a better metric; the result is then the best evaluation's,
    its ``best`` says which, and test metrics come from that evaluation's weights.
    ``precision`` is one of adamtune.training.precision.PRECISIONS (weights, autocast, loss scaling).
    ``values`` (adamtune.config.values.Values) answers a loop's ``trial.suggest_*``; a task built by a
    factory that takes the trial was built from them already.
    """
    started = time.perf_counter()
    device = torch.device(device) if isinstance(device, str) else device
    prec = run_precision(precision, device)
    if task.train_loop is not None:
        if config.phases:
            raise ConfigError(
                f"config: phases: a schedule of phases replays in adamtune's own loop, and task "
                f"{task.name!r} is a training loop of its own; use the exported build_scheduler"
            )
        return _train_loop(
            task,
            config,
            seed,
            device,
            optimizer_factory,
            on_eval,
            log,
            prec,
            divergence_factor,
            epochs or task.epochs,
            values,
        )
    epochs = epochs or task.epochs
    total_steps = planned_steps(task, epochs)
    with _BUILD_LOCK:
        torch.manual_seed(seed)
        model = task.build_model()
    if not isinstance(model, torch.nn.Module):
        raise TaskError(
            f"task {task.name!r}: build_model() must return a torch.nn.Module, "
            f"got {type(model).__name__}"
        )
    model = prec.model(model)
    optimizer = prec.optimizer(optimizer_factory(list(model.parameters()), config), seed)
    loader = task.uses_loader  # else the fast path: whole tensors on the device, sliced
    if not loader:
        x_train, y_train = prec.inputs(task.train[0].to(device)), task.train[1].to(device)
        validation = (prec.inputs(task.validation[0].to(device)), task.validation[1].to(device))
    n, batch_size, per_epoch = split_size(task.train), task.batch_size, task.steps_per_epoch()
    learning_rates = planned_learning_rates(config, total_steps)
    switches = phase_changes(config, total_steps)  # a schedule of phases: step -> values
    clip = config.max_grad_norm
    order = torch.Generator().manual_seed(seed)
    log = log if log is not None else TrainingLog()
    log.total_steps = total_steps
    losses, evaluations = log.train_losses, log.evaluations

    patience = patience if patience is not None else task.patience
    early = EarlyStopping(task.metric_name, task.direction, patience) if patience else None
    best_weights: dict[str, torch.Tensor] | None = None
    step, stopped = 0, None
    norms: list[torch.Tensor] = []  # this epoch's gradient norms, kept on the device
    pending: list[torch.Tensor] = []  # this epoch's losses, kept on the device
    before: list[torch.Tensor] | None = None  # the weights before an epoch's last step
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            if loader:
                epoch_batches: Iterator[Any] = batches(task, task.train, device, prec, order)
            else:
                permutation = torch.randperm(n, generator=order).to(device)
                epoch_batches = (
                    (x_train[index], y_train[index]) for index in permutation.split(batch_size)
                )
            for position, batch in enumerate(epoch_batches):
                values = switches.get(step)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rates[step]
                    if values is not None:
                        apply_phase(group, values)
                if values is not None:
                    clip = values.max_grad_norm
                optimizer.zero_grad(set_to_none=True)
                with prec.forward():
                    loss = step_loss(task, model, batch)
                pending.append(loss.detach().reshape(()))
                prec.backward(loss)
                prec.unscale(optimizer)
                norms.append(_grad_norm(model, clip))
                last = position == per_epoch - 1
                before = [p.detach().clone() for p in model.parameters()] if last else None
                prec.step(optimizer)
                log.learning_rates.append(learning_rates[step])
                step += 1
            settle(log, pending, norms, learning_rates, divergence_factor)
            metrics = (
                evaluate_split(task, model, task.validation, device, prec)
                if loader
                else evaluate(task, model, validation, prec)
            )
            epoch_losses = losses[-per_epoch:]
            # A task may name its own metric train_loss; the task's metric wins.
            metrics.setdefault("train_loss", sum(epoch_losses) / len(epoch_losses))
            assert before is not None
            for name, value in weight_diagnostics(
                list(model.parameters()), before, metrics
            ).items():
                metrics.setdefault(name, value)
            evaluation = Evaluation(epoch, step, metrics)
            evaluations.append(evaluation)
            watched = metrics.get("val_loss", metrics[task.metric_name])
            if not math.isfinite(watched):
                raise DivergedError(step - 1, watched, learning_rates[step - 1])
            stopped = on_eval(evaluation) if on_eval is not None else None
            if stopped:
                break
            if early is not None:
                if early.improved(evaluation) and task.test is not None:
                    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if early.exhausted(epoch):
                    break
    finally:  # a run that fails mid-epoch keeps the steps it took
        keep(log, pending, norms)

    best = early.best if early is not None and not stopped else None
    final = dict((best or evaluations[-1]).metrics)
    if task.test is not None:
        if best is not None and best_weights is not None:
            model.load_state_dict(best_weights)
        if loader:
            test = evaluate_split(task, model, task.test, device, prec)
        else:
            test_inputs = prec.inputs(task.test[0].to(device))
            test = evaluate(task, model, (test_inputs, task.test[1].to(device)), prec)
        final.update({f"test_{k.removeprefix('val_')}": v for k, v in test.items()})
    return TrainResult(
        value=final[task.metric_name],
        metrics=final,
        log=log,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        best=best,
    )


def _train_loop(
    task: Task,
    config: AdamConfig,
    seed: int,
    device: torch.device,
    optimizer_factory: OptimizerFactory,
    on_eval: OnEval | None,
    log: TrainingLog | None,
    prec: Precision,
    divergence_factor: float,
    epochs: int,
    values: Any = None,
) -> TrainResult:
    """The user's own training function as one run (adamtune.loops)."""
    from adamtune.training.user_loop import run_loop

    def make(params: list[torch.nn.Parameter], implementation: str) -> torch.optim.Optimizer:
        if implementation == "torch":  # the user asked for torch's Adam/AdamW in their code
            optimizer = build_optimizer(params, config, optimizer="torch")
        else:  # the study's --optimizer (fused by default)
            optimizer = optimizer_factory(params, config)
        return prec.optimizer(optimizer, seed)

    log = log if log is not None else TrainingLog()
    value, metrics, stopped, step_metrics, seconds = run_loop(
        task,
        config,
        seed=seed,
        device=device,
        make_optimizer=make,
        on_eval=on_eval,
        log=log,
        divergence_factor=divergence_factor,
        evaluation=Evaluation,
        check_divergence=check_divergence,
        epochs=epochs,
        values=values,
    )
    log.step_metrics = step_metrics
    return TrainResult(value=value, metrics=metrics, log=log, stopped=stopped, seconds=seconds)


def run_precision(name: str, device: torch.device) -> Precision:
    """The run's Precision; a precision the device cannot run is the user's ConfigError."""
    try:
        return Precision.for_run(name, device)
    except PrecisionUnavailable as exc:
        raise ConfigError(str(exc)) from None


def settle(
    log: TrainingLog,
    losses: list[torch.Tensor],
    norms: list[torch.Tensor],
    learning_rates: list[float],
    divergence_factor: float,
) -> None:
    """An epoch's losses and gradient norms (on the device) into the log, in one read back,
    each loss checked as it would be at its step; at the first that diverges the log is cut
    there (its loss, norm and lr not kept) and DivergedError names it."""
    if not losses:
        return
    start = len(log.train_losses)
    values, grads = read_back([torch.stack(losses).float(), torch.stack(norms).float()])
    losses.clear()
    norms.clear()
    seen = log.train_losses
    for i, value in enumerate(values):
        step = start + i
        try:
            check_divergence(
                step, value, seen[0] if seen else value, divergence_factor, learning_rates[step]
            )
        except DivergedError:
            log.grad_norms += grads[:i]
            del log.learning_rates[step:]
            raise
        seen.append(value)
    log.grad_norms += grads


def keep(log: TrainingLog, losses: list[torch.Tensor], norms: list[torch.Tensor]) -> None:
    """What an epoch stopped by an error (the user's code, Ctrl-C) did, into the log unchecked."""
    if losses:
        log.train_losses += [float(v) for v in read_back(losses)]
        log.grad_norms += [float(v) for v in read_back(norms[: len(losses)])]
        losses.clear()
        norms.clear()


def _grad_norm(model: torch.nn.Module, max_grad_norm: float | None) -> torch.Tensor:
    """The global gradient norm before clipping, and the gradients clipped to
    ``max_grad_norm`` (torch.nn.utils.clip_grad_norm_, which computes that norm anyway)."""
    if max_grad_norm is not None:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).detach()
    grads = [p.grad.detach().float() for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def weight_diagnostics(
    params: list[torch.Tensor], before: list[torch.Tensor], metrics: dict[str, float]
) -> dict[str, float]:
    """What an evaluation adds for monitoring: ``param_norm`` (global L2 norm of the weights),
    ``update_ratio`` (the epoch's last optimizer step's update norm over the weight norm
    before it; ~1e-3 is the classic healthy scale) and ``val_train_gap`` (validation loss minus
    the epoch's mean training loss: growing, it is overfitting)."""
    with torch.no_grad():
        params, before = [p.float() for p in params], [b.float() for b in before]
        weight = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p) for p in params])
        )
        old = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b) for b in before]))
        update = torch.linalg.vector_norm(
            torch.stack(
                [torch.linalg.vector_norm(p - b) for p, b in zip(params, before, strict=True)]
            )
        )
    out = {"param_norm": weight.item(), "update_ratio": (update / old.clamp_min(1e-30)).item()}
    if "val_loss" in metrics and "train_loss" in metrics:
        out["val_train_gap"] = metrics["val_loss"] - metrics["train_loss"]
    return out


def planned_steps(task: Task, epochs: int) -> int:
    """Optimizer steps of a run of ``epochs`` epochs; refuses a run too long to log."""
    total = epochs * task.steps_per_epoch()
    if total > MAX_TOTAL_STEPS:
        raise ConfigError(
            f"--epochs: {epochs} epochs of {task.steps_per_epoch()} steps is {total} steps, "
            f"more than the {MAX_TOTAL_STEPS} one trial can log"
        )
    return total


def check_divergence(step: int, loss: float, first: float, factor: float, lr: float) -> None:
    if not math.isfinite(loss):
        raise DivergedError(step, loss, lr)
    if factor and step > 0 and loss > factor * max(first, 1e-3):
        raise DivergedError(step, loss, lr, f"over {factor:g}x the first step's {first:.4g}")


@torch.no_grad()
def evaluate(
    task: Task, model: torch.nn.Module, data: Batch, precision: Precision | None = None
) -> dict[str, float]:
    """The task's loss and metric on ``data``, computed in chunks, model left in eval mode;
    the forward pass in ``precision`` (default fp32), the loss and metric on float32 outputs."""
    model.eval()
    x, y = data
    prec = precision or Precision()
    with prec.forward():
        chunks = [model(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]
    outputs = as_float(concatenated(chunks, f"task {task.name!r}"))
    return {
        "val_loss": task.loss_of(outputs, y).item(),
        task.metric_name: metric_value(task, outputs, y),
    }
