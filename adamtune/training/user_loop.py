"""Your own training loop as a trial: ``--task my_train.py:train`` where ``train(trial)`` trains.

``trial`` is a LoopTrial: the trial's resolved ``config``, ``device`` and ``seed``,
``trial.epochs`` (``--epochs``, else the loop's own ``@training_loop(epochs=...)``, else 1: a loop
that reads it lets the flag set its length), and
- ``trial.optimizer(params, implementation="fused")``: FusedAdam (or torch's Adam/AdamW with
  ``"torch"``) with the trial's values; every step's learning rate is recorded by an optimizer
  step hook, so MLflow shows the schedule as for built-in tasks;
- ``trial.scheduler(optimizer, total_steps)``: the trial's schedule as a torch LR scheduler;
- ``trial.report(value, step)``: the validation metric, to the pruner; a pruned trial stops
  here (an exception adamtune catches; let it through);
- ``trial.log(step, loss=..., **metrics)``: per-step metrics to MLflow; a non-finite or
  exploding ``loss`` stops the trial as diverged;
- ``trial.suggest_float/suggest_int/suggest_categorical``: values of the loop's own (dropout,
  width, accumulation steps), searched beside Adam's, with Optuna's names and arguments
  (adamtune.values);
- ``trial.log_params(**params)``: facts of the user's own (batch size, accumulation steps) as
  the run's MLflow params.
Monitoring comes from the first optimizer ``trial.optimizer`` made: the gradient norm of every
step (after any clipping of the loop's own; kept on the device until a report), and at every
report ``param_norm``, ``update_ratio`` (of the first step since the last report), the mean
``train_loss`` logged since then and, for a ``val_loss`` metric, ``val_train_gap``.
The function returns the final metric, or a dict holding it.

A function with one parameter is a training loop; one with none is a task factory (it returns
an adamtune.Task). ``@adamtune.training_loop(metric_name=..., direction=...)`` marks a loop and
names its metric (default ``value``, minimised).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adamtune.config.adam import AdamConfig
from adamtune.errors import DivergedError, TaskError, shown
from adamtune.training.batches import number


class TrialStopped(Exception):  # noqa: N818  (not an error: the pruner's decision)
    """Raised inside the user's loop by report() when the pruner stops the trial."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LoopTrial:
    """What the user's training function gets (see the module doc)."""

    config: AdamConfig
    seed: int
    device: torch.device
    metric_name: str
    _log: Any = field(repr=False)
    _on_eval: Any = field(repr=False)
    _make_optimizer: Any = field(repr=False)
    _evaluation: Any = field(repr=False)  # train.Evaluation (passed in: train imports this module)
    _check_divergence: Any = field(repr=False)  # train.check_divergence
    _divergence_factor: float = 100.0
    _epochs: int = 1
    _reports: int = 0
    _epochs_read: bool = False
    _step_metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list, repr=False)
    _monitor: _Monitor | None = field(default=None, repr=False)
    _values: Any = field(default=None, repr=False)  # adamtune.config.values.Values
    _losses_seen: int = 0  # train losses logged before the last report

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """A value of the loop's own, searched beside Adam's (Optuna's name and arguments)."""
        return self._values.suggest_float(name, low, high, step=step, log=log)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        return self._values.suggest_int(name, low, high, step=step, log=log)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._values.suggest_categorical(name, choices)

    @property
    def params(self) -> dict[str, Any]:
        """The values of the loop's own asked so far (a space's model: section's included)."""
        return self._values.params

    @property
    def epochs(self) -> int:
        """How many epochs to train: ``--epochs``, else the loop's own default."""
        self._epochs_read = True
        return self._epochs

    def optimizer(self, params: Any, implementation: str = "fused") -> torch.optim.Optimizer:
        if implementation not in ("fused", "torch"):
            raise TaskError(
                f"trial.optimizer: implementation must be 'fused' or 'torch', got {shown(implementation)}"
            )
        optimizer = self._make_optimizer(list(params), implementation)
        rates = self._log.learning_rates

        def record(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            rates.append(float(opt.param_groups[0]["lr"]))

        optimizer.register_step_post_hook(record)
        if self._monitor is None:
            self._monitor = _Monitor(optimizer)
        return optimizer

    def log_params(self, **params: Any) -> None:
        """Facts of the loop's own, logged as the run's params (a string, number or bool each)."""
        for key, value in params.items():
            if key in RESERVED_PARAMS:
                raise TaskError(
                    f"trial.log_params: {key!r} is one of adamtune's own params; use another name"
                )
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise TaskError(
                    f"trial.log_params: {key} must be a string, number or bool, got {shown(value)}"
                )
            self._log.params[key] = value

    def scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        from adamtune.training.builders import build_scheduler

        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise TaskError(
                f"trial.scheduler: total_steps must be an integer >= 1, got {shown(total_steps)}"
            )
        self._log.total_steps = total_steps
        return build_scheduler(optimizer, self.config, total_steps)

    def report(self, value: float, step: int) -> None:
        value = number("trial.report: value", value)
        if not math.isfinite(value):
            raise DivergedError(step, value, self._lr())
        self._reports += 1
        metrics = {self.metric_name: value, **self._diagnostics(value)}
        steps = len(self._log.learning_rates) if self._monitor is not None else int(step)
        evaluation = self._evaluation(self._reports, steps, metrics)
        self._log.evaluations.append(evaluation)
        reason = self._on_eval(evaluation) if self._on_eval is not None else None
        if reason:
            raise TrialStopped(reason)

    def log(self, step: int, **metrics: float) -> None:
        values = {key: number(f"trial.log: {key}", value) for key, value in metrics.items()}
        if "loss" in values:
            losses = self._log.train_losses
            loss = values.pop("loss")
            first = losses[0] if losses else loss
            self._check_divergence(len(losses), loss, first, self._divergence_factor, self._lr())
            losses.append(loss)
        if values:
            self._step_metrics.append((int(step), values))

    def _diagnostics(self, value: float) -> dict[str, float]:
        """What the report adds for monitoring (see the module doc); never the metric's name."""
        out: dict[str, float] = {}
        losses = self._log.train_losses[self._losses_seen :]
        self._losses_seen = len(self._log.train_losses)
        if losses:
            out["train_loss"] = sum(losses) / len(losses)
            if self.metric_name == "val_loss":
                out["val_train_gap"] = value - out["train_loss"]
        if self._monitor is not None:
            out.update(self._monitor.report(self._log.grad_norms))
        out.pop(self.metric_name, None)
        return out

    def _lr(self) -> float:
        rates = self._log.learning_rates
        return rates[-1] if rates else self.config.lr


def run_loop(
    task: Any,
    config: AdamConfig,
    *,
    seed: int,
    device: torch.device,
    make_optimizer: Callable[[list[Any], str], torch.optim.Optimizer],
    on_eval: Any,
    log: Any,
    divergence_factor: float,
    evaluation: Any,
    check_divergence: Any,
    epochs: int = 1,
    values: Any = None,
) -> tuple[float, dict[str, float], str | None, list[tuple[int, dict[str, float]]], float]:
    """Run the user's loop once: (value, metrics, stopped, per-step metrics, seconds);
    ``log.epochs_read`` says whether it read ``trial.epochs``."""
    started = time.perf_counter()
    trial = LoopTrial(
        config,
        seed,
        device,
        task.metric_name,
        log,
        on_eval,
        make_optimizer,
        evaluation,
        check_divergence,
        divergence_factor,
        epochs,
    )
    if values is None:
        from adamtune.config.values import Values

        values = Values()
    trial._values = values
    torch.manual_seed(seed)
    stopped: str | None = None
    try:
        returned = task.train_loop(trial)
    except TrialStopped as stop:
        stopped, returned = stop.reason, None
    except Exception as exc:
        if not _pruned_by_the_loop(exc):
            raise
        stopped, returned = f"pruned by the loop{f': {exc}' if str(exc) else ''}", None
    finally:
        log.epochs_read = trial._epochs_read
        if trial._monitor is not None:
            trial._monitor.flush(log.grad_norms)
    seconds = time.perf_counter() - started
    if stopped:
        last = log.evaluations[-1].metrics if log.evaluations else {}
        return (
            last.get(task.metric_name, math.nan),
            dict(last),
            stopped,
            trial._step_metrics,
            seconds,
        )
    metrics = _result_metrics(task, returned)
    if not log.total_steps:
        log.total_steps = len(log.learning_rates)
    return metrics[task.metric_name], metrics, None, trial._step_metrics, seconds


def _pruned_by_the_loop(exc: BaseException) -> bool:
    """The loop raised Optuna's TrialPruned itself (its own pruning, as in an Optuna
    objective): the trial is PRUNED, not FAIL. Told by name: training/ imports no Optuna."""
    return any(
        cls.__name__ == "TrialPruned" and cls.__module__.startswith("optuna")
        for cls in type(exc).__mro__
    )


# What adamtune logs itself for a loop's run: trial.log_params may not use these names.
RESERVED_PARAMS = frozenset(
    {"trial_number", "seed", "task", "total_steps", "device", "optimizer", "role", "baseline"}
    | set(AdamConfig.__dataclass_fields__)
)


class _Monitor:
    """Gradient norms, weight norm and update ratio of one optimizer, through its step hooks:
    norms stay on the device until a report reads them (one sync a report, not one a step)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.norms: list[torch.Tensor] = []
        self.before: list[torch.Tensor] | None = None
        self.watch = True  # copy the weights around the next step, for its update ratio
        self.ratio: torch.Tensor | None = None
        optimizer.register_step_pre_hook(self._pre)
        optimizer.register_step_post_hook(self._post)

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad.detach().float() for p in self.params if p.grad is not None]
        if grads:
            self.norms.append(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            )
        if self.watch:
            self.before = [p.detach().float().clone() for p in self.params]

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.before is None:
            return
        with torch.no_grad():
            now = [p.detach().float() for p in self.params]
            update = _global_norm([p - b for p, b in zip(now, self.before, strict=True)])
            self.ratio = update / _global_norm(self.before).clamp_min(1e-30)
        self.before, self.watch = None, False

    def flush(self, into: list[float]) -> None:
        if self.norms:
            into += torch.stack(self.norms).tolist()
            self.norms.clear()

    def report(self, grad_norms: list[float]) -> dict[str, float]:
        self.flush(grad_norms)
        with torch.no_grad():
            out = {"param_norm": _global_norm([p.detach().float() for p in self.params]).item()}
        if self.ratio is not None:
            out["update_ratio"] = self.ratio.item()
        self.ratio, self.watch = None, True
        return out


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _result_metrics(task: Any, returned: Any) -> dict[str, float]:
    where = f"task {task.name!r}: the training function"
    if isinstance(returned, dict):
        metrics = {str(k): number(f"{where}'s {k!r}", v) for k, v in returned.items()}
        if task.metric_name not in metrics:
            raise TaskError(
                f"{where} must return the task's metric {task.metric_name!r}, got {sorted(metrics)}"
            )
        return metrics
    if returned is None:
        raise TaskError(f"{where} returned None; return the final {task.metric_name} (a number)")
    return {task.metric_name: number(f"{where}'s result", returned)}
