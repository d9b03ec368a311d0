"""Glue between one Optuna trial and the training loop.

trial -> AdamConfig (space) -> train(...) -> value; intermediate values go to the pruner, and
everything a reader of the study needs without adamtune goes into trial user attributes:
``config`` (the resolved AdamConfig), ``seed``, ``metrics``, ``total_steps``, ``seconds``,
``pruned_reason`` for pruned trials and ``fail_reason`` for failed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import optuna
import torch

from adamtune.errors import DivergedError
from adamtune.optimizers import build_optimizer
from adamtune.space import SearchSpace
from adamtune.tasks import Task
from adamtune.train import Evaluation, TrainResult, train


@dataclass
class Objective:
    task: Task
    space: SearchSpace
    seed: int = 0
    epochs: int | None = None
    device: torch.device = torch.device("cpu")
    optimizer: str = "fused"

    def __call__(self, trial: optuna.Trial) -> float:
        config = self.space.sample(trial)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("seed", self.seed)
        try:
            result = train(
                self.task,
                config,
                seed=self.seed,
                epochs=self.epochs,
                device=self.device,
                optimizer_factory=partial(build_optimizer, implementation=self.optimizer),
                on_eval=partial(self._report, trial),
            )
        except DivergedError as exc:
            reason = f"diverged: {exc}"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason) from None
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            raise
        except Exception as exc:  # recorded on the trial; Optuna marks it FAIL
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise
        self._record(trial, result)
        return result.value

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

    @staticmethod
    def _record(trial: optuna.Trial, result: TrainResult) -> None:
        trial.set_user_attr("metrics", result.metrics)
        trial.set_user_attr("total_steps", result.total_steps)
        trial.set_user_attr("seconds", round(result.seconds, 3))
