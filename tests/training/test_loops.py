"""Your own training loop, train(trial): LR logging, pruning, divergence, results, errors."""

import math
from pathlib import Path

import optuna
import pytest
import torch
from torch.nn import functional as F

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.config.schedules import learning_rates
from adamtune.config.settings import SearchSettings
from adamtune.errors import DivergedError, TaskError
from adamtune.search.run import run_search
from adamtune.tasks import resolve_task
from adamtune.tasks.loader import _loop_task
from adamtune.tasks.marks import is_training_loop, training_loop
from adamtune.tracking import NullTracker
from adamtune.training.single import train

EXAMPLE = f"{Path(__file__).parents[2] / 'examples' / 'plain_loop.py'}:train"
CONFIG = AdamConfig(lr=1e-2, decoupled=True, schedule=ScheduleConfig("cosine", warmup_fraction=0.1))


def loop(returns=None, loss=None, report=None, steps=12):
    """A tiny loop: steps of a linear model, a report every 4 steps, then ``returns``."""

    def body(trial):
        torch.manual_seed(trial.seed)
        model = torch.nn.Linear(3, 1)
        optimizer = trial.optimizer(model.parameters())
        scheduler = trial.scheduler(optimizer, steps)
        x, y = torch.randn(32, 3), torch.randn(32, 1)
        for step in range(steps):
            value = F.mse_loss(model(x), y)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            scheduler.step()
            trial.log(step, loss=loss(step) if loss else value.item(), grad_scale=1.0)
            if step % 4 == 3:
                trial.report(report if report is not None else value.item(), step)
        return value.item() if returns is None else returns

    return _loop_task("test", "body", training_loop("val_loss", "minimize", epochs=3)(body))


def test_every_optimizer_step_logs_the_schedules_learning_rate():
    result = train(loop(), CONFIG)
    assert result.learning_rates == pytest.approx(learning_rates(CONFIG.lr, CONFIG.schedule, 12))
    assert len(result.train_losses) == 12 and result.total_steps == 12
    assert [e.epoch for e in result.evaluations] == [1, 2, 3]  # one per report
    assert result.log.step_metrics[0] == (0, {"grad_scale": 1.0})
    assert result.value == result.metrics["val_loss"]


def test_the_pruner_stops_the_loop_at_a_report():
    seen = []

    def on_eval(evaluation):
        seen.append(evaluation.epoch)
        return "pruned at epoch 2" if evaluation.epoch == 2 else None

    result = train(loop(), CONFIG, on_eval=on_eval)
    assert result.stopped == "pruned at epoch 2" and seen == [1, 2]
    assert len(result.learning_rates) == 8  # it stopped there: no step after the report


def test_an_exploding_or_nan_loss_stops_the_trial_as_diverged():
    with pytest.raises(DivergedError, match="step 5"):
        train(loop(loss=lambda step: 1.0 if step < 5 else 1e6), CONFIG)
    with pytest.raises(DivergedError):
        train(loop(loss=lambda step: math.nan), CONFIG)
    with pytest.raises(DivergedError):
        train(loop(report=math.inf), CONFIG)


@pytest.mark.parametrize(
    "returns, message",
    [
        ("none", "the training function returned None; return the final val_loss"),
        ({"loss": 1.0}, "must return the task's metric 'val_loss', got ['loss']"),
        ("high", "the training function's result must be a number, got 'high'"),
    ],
)
def test_a_bad_result_is_one_line(returns, message):
    task = loop(returns=returns)
    if returns == "none":
        task = _loop_task("test", "body", training_loop("val_loss")(lambda trial: None))
    with pytest.raises(TaskError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(task, CONFIG)


def test_a_loop_is_told_apart_from_a_task_factory():
    assert not is_training_loop(lambda: None)  # a factory takes nothing
    assert is_training_loop(lambda trial: None)
    assert is_training_loop(lambda trial, extra=1: None)  # optional parameters do not count
    assert not is_training_loop(lambda a, b: None)
    marked = training_loop("val_accuracy", "maximize")(lambda *args: None)
    assert is_training_loop(marked)
    task = resolve_task(EXAMPLE)
    assert task.train_loop is not None
    assert (task.metric_name, task.direction, task.epochs) == ("val_accuracy", "maximize", 8)


def test_the_example_loop_runs_a_study_with_pruning(storage):
    settings = SearchSettings(
        task=EXAMPLE, storage=storage, n_trials=6, space="lr-only", pruner="median"
    )
    said = []
    study = run_search(settings, warn=said.append)
    assert any("training loop of its own" in line for line in said)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3
    assert study.best_value > 0.8  # XOR of two halves: a learnt boundary
    best = study.best_trial
    assert best.user_attrs["total_steps"] == 160


def test_bad_calls_on_the_trial_are_one_line():
    def bad_scheduler(trial):
        optimizer = trial.optimizer([torch.nn.Parameter(torch.zeros(1))])
        trial.scheduler(optimizer, 0)

    def bad_implementation(trial):
        trial.optimizer([torch.nn.Parameter(torch.zeros(1))], implementation="sgd")

    for body, message in (
        (bad_scheduler, "trial.scheduler: total_steps must be an integer >= 1, got 0"),
        (bad_implementation, "trial.optimizer: implementation must be 'fused' or 'torch'"),
    ):
        with pytest.raises(TaskError, match=message):
            train(_loop_task("t", "b", training_loop()(body)), CONFIG)


def test_implementation_torch_gives_torchs_adamw_and_still_logs_every_lr():
    kinds = []

    def body(trial):
        p = torch.nn.Parameter(torch.zeros(2))
        optimizer = trial.optimizer([p], implementation="torch")
        kinds.append(type(optimizer).__name__)
        scheduler = trial.scheduler(optimizer, 5)
        for _ in range(5):
            p.grad = torch.ones(2)
            optimizer.step()
            scheduler.step()
        return 0.5

    result = train(_loop_task("t", "b", training_loop()(body)), CONFIG)
    assert kinds == ["AdamW"]
    assert result.learning_rates == pytest.approx(learning_rates(CONFIG.lr, CONFIG.schedule, 5))


# Lightning 2.6 under torch 2.13 warns about its own use of torch's pytree and about loaders
# without workers: its warnings, not this example's.
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_the_lightning_example_tunes_a_lightning_module(storage):
    pytest.importorskip("lightning")
    example = f"{Path(__file__).parents[2] / 'examples' / 'lightning_module.py'}:train"
    task = resolve_task(example)
    config = AdamConfig(lr=1e-2, decoupled=True, schedule=ScheduleConfig("cosine"))
    result = train(task, config, seed=0)
    steps = 5 * 20  # 5 epochs of 1000 rows in batches of 50
    assert result.total_steps == steps and len(result.train_losses) == steps
    assert result.learning_rates == pytest.approx(learning_rates(config.lr, config.schedule, steps))
    assert [e.epoch for e in result.evaluations] == [1, 2, 3, 4, 5]
    assert result.value > 0.8
    study = run_search(
        SearchSettings(task=example, storage=storage, n_trials=3, space="lr-only", baseline=False)
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


def epochs_loop(reads):
    """A loop of ``trial.epochs`` reports when ``reads``, else of its own 3."""
    seen = []

    def body(trial):
        epochs = trial.epochs if reads else 3
        seen.append(epochs)
        for epoch in range(epochs):
            trial.report(1.0 / (epoch + 1), epoch)
        return 1.0 / epochs

    return _loop_task("test", "body", training_loop("val_loss", "minimize", epochs=5)(body)), seen


def test_trial_epochs_is_the_flag_else_the_loops_own_default(storage):
    task, seen = epochs_loop(reads=True)
    base = dict(task="x", storage=storage, n_trials=1, space="lr-only", baseline=False)
    run_search(SearchSettings(**base, epochs=2, study_name="flag"), task=task)
    run_search(SearchSettings(**base, study_name="default"), task=task)
    assert seen == [2, 5]


def test_a_loop_that_ignores_epochs_is_told_once_and_progress_counts_its_reports(storage):
    task, _ = epochs_loop(reads=False)
    said, shown = [], []
    run_search(
        SearchSettings(task="x", storage=storage, n_trials=3, space="lr-only", epochs=2),
        task=task,
        warn=said.append,
        on_epoch=lambda number, epoch, epochs, metrics: shown.append((epoch, epochs)),
    )
    told = [line for line in said if "--epochs" in line]
    assert told == [
        "Warning: --epochs 2 does not reach the training loop body(trial): it never reads "
        "trial.epochs (it reported 3 time(s)); loop over range(trial.epochs) to let the flag "
        "set its length."
    ]
    assert all(epoch <= epochs for epoch, epochs in shown) and (3, 3) in shown


def test_a_loop_that_reads_epochs_is_not_told(storage):
    task, _ = epochs_loop(reads=True)
    said = []
    run_search(
        SearchSettings(task="x", storage=storage, n_trials=2, space="lr-only", epochs=2),
        task=task,
        warn=said.append,
    )
    assert not [line for line in said if "--epochs" in line]


class Records(NullTracker):
    def __init__(self):
        self.trials = []

    def end_trial(self, record):
        self.trials.append(record)


def monitored_loop():
    def body(trial):
        trial.log_params(batch_size=8, accumulation_steps=2)
        torch.manual_seed(trial.seed)
        model = torch.nn.Linear(3, 1)
        optimizer = trial.optimizer(model.parameters())
        x, y = torch.randn(32, 3), torch.randn(32, 1)
        for epoch in range(trial.epochs):
            for step in range(4):
                value = F.mse_loss(model(x[step * 8 : step * 8 + 8]), y[step * 8 : step * 8 + 8])
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                trial.log(epoch * 4 + step, loss=value.item())
            trial.report(F.mse_loss(model(x), y).item(), epoch)
        return F.mse_loss(model(x), y).item()

    return _loop_task("test", "body", training_loop("val_loss", "minimize", epochs=2)(body))


def one_trial_record(storage, task):
    tracker = Records()
    run_search(
        SearchSettings(task="x", storage=storage, n_trials=1, space="lr-only", baseline=False),
        task=task,
        tracker=tracker,
    )
    (record,) = tracker.trials
    return record


def test_a_loops_run_logs_its_own_params_and_the_monitoring_metrics_not_a_batch_size(storage):
    record = one_trial_record(storage, monitored_loop())
    assert record.params["batch_size"] == 8 and record.params["accumulation_steps"] == 2
    assert len(record.grad_norms) == 8 and all(g > 0 for g in record.grad_norms)
    assert [step for _, step, _ in record.evaluations] == [4, 8]  # optimizer steps, as built-ins
    for _, _, metrics in record.evaluations:
        assert {"param_norm", "update_ratio", "train_loss", "val_train_gap"} <= set(metrics)
        assert 0 < metrics["update_ratio"] < 1
        assert metrics["val_train_gap"] == pytest.approx(
            metrics["val_loss"] - metrics["train_loss"]
        )


def test_a_loop_without_params_of_its_own_logs_no_batch_size(storage):
    assert "batch_size" not in one_trial_record(storage, loop()).params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lr": 1}, "trial.log_params: 'lr' is one of adamtune's own params; use another name"),
        ({"shape": [1, 2]}, "trial.log_params: shape must be a string, number or bool, got [1, 2]"),
    ],
)
def test_bad_log_params_are_one_line(params, message):
    def body(trial):
        trial.log_params(**params)
        return 1.0

    with pytest.raises(TaskError) as caught:
        train(_loop_task("test", "body", body), CONFIG)
    assert str(caught.value) == message
