"""Glue between one Optuna trial and the training loop.

trial -> AdamConfig (space) -> train(...) -> value; intermediate values go to the pruner, and
everything a reader of the study needs without adamtune goes into trial user attributes:
``config`` (the resolved AdamConfig), ``seed``, ``metrics``, ``total_steps``, ``seconds``,
``pruned_reason`` for pruned trials and ``fail_reason`` for failed ones. A tracker, when set,
hears of the trial's start and of its end, whatever the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna
import torch

from adamtune.config import AdamConfig
from adamtune.errors import DivergedError
from adamtune.optimizers import build_optimizer
from adamtune.report import config_rows
from adamtune.space import SearchSpace
from adamtune.tasks import Task
from adamtune.tracking import NullTracker, Tracker, TrialRecord
from adamtune.train import Evaluation, TrainingLog, TrainResult, train


@dataclass
class Objective:
    task: Task
    space: SearchSpace
    seed: int = 0
    epochs: int | None = None
    device: torch.device = torch.device("cpu")
    optimizer: str = "fused"
    tracker: Tracker = field(default_factory=NullTracker)

    def __call__(self, trial: optuna.Trial) -> float:
        config = self.space.sample(trial)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("seed", self.seed)
        self.tracker.start_trial(trial.number)
        log = TrainingLog()
        state, reason, value = "FAIL", "", None
        try:
            result = self._train(trial, config, log)
            self._record(trial, result)
            state, value = "COMPLETE", result.value
            return result.value
        except DivergedError as exc:
            state, reason = "PRUNED", f"diverged: {exc}"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason) from None
        except optuna.TrialPruned as exc:
            state, reason = "PRUNED", str(exc)
            raise
        except KeyboardInterrupt:
            reason = "interrupted (Ctrl-C)"
            trial.set_user_attr("fail_reason", reason)
            raise
        except Exception as exc:  # recorded on the trial; Optuna marks it FAIL
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            raise
        finally:
            self.tracker.end_trial(
                TrialRecord(
                    number=trial.number,
                    state=state,
                    reason=reason,
                    params=self._run_params(trial, config, log),
                    value=value,
                    metric_name=self.task.metric_name,
                    log=log,
                )
            )

    def _train(self, trial: optuna.Trial, config: AdamConfig, log: TrainingLog) -> TrainResult:
        factory = partial(build_optimizer, implementation=self.optimizer)
        return train(
            self.task,
            config,
            seed=self.seed,
            epochs=self.epochs,
            device=self.device,
            optimizer_factory=factory,
            on_eval=partial(self._report, trial),
            log=log,
        )

    def _report(self, trial: optuna.Trial, evaluation: Evaluation) -> None:
        value = evaluation.metrics[self.task.metric_name]
        trial.report(value, evaluation.epoch)
        if trial.should_prune():
            reason = (
                f"pruned at epoch {evaluation.epoch}: "
                f"{self.task.metric_name} {value:.4g} not promising"
            )
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)

    def _run_params(
        self, trial: optuna.Trial, config: AdamConfig, log: TrainingLog
    ) -> dict[str, Any]:
        """The resolved configuration and how the trial ran, for trackers."""
        return {
            **dict(config_rows(config.to_dict())),
            "trial_number": trial.number,
            "seed": self.seed,
            "task": self.task.name,
            "total_steps": log.total_steps,
            "batch_size": self.task.batch_size,
            "device": str(self.device),
            "optimizer": self.optimizer_name(),
        }

    def optimizer_name(self) -> str:
        if self.optimizer != "fused":
            return self.optimizer
        from adamtune.optim import resolve_backend

        return f"fused/{resolve_backend('auto', self.device)}"

    @staticmethod
    def _record(trial: optuna.Trial, result: TrainResult) -> None:
        trial.set_user_attr("metrics", result.metrics)
        trial.set_user_attr("total_steps", result.total_steps)
        trial.set_user_attr("seconds", round(result.seconds, 3))
