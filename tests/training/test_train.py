import math

import pytest
import torch
from torch.nn import functional as F

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.config.schedules import learning_rates
from adamtune.errors import DivergedError, TaskError
from adamtune.tasks import Task, accuracy, resolve_task
from adamtune.training.single import train


def toy_task(epochs=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return Task(
        name="toy",
        build_model=lambda: torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
        ),
        train=(x[:64], y[:64]),
        validation=(x[64:], y[64:]),
        loss=F.cross_entropy,
        metric=accuracy,
        metric_name="val_accuracy",
        direction="maximize",
        epochs=epochs,
        batch_size=16,
    )


def test_same_config_and_seed_give_the_same_metrics():
    config = AdamConfig(lr=3e-3, schedule=ScheduleConfig("cosine", 0.1))
    task = resolve_task("digits-mlp")
    first = train(task, config, seed=3, epochs=2)
    second = train(task, config, seed=3, epochs=2)
    assert first.metrics == second.metrics
    assert first.train_losses == second.train_losses
    assert train(task, config, seed=4, epochs=2).train_losses != first.train_losses


def test_learns_digits():
    result = train(resolve_task("digits-mlp"), AdamConfig(lr=3e-3), seed=0, epochs=5)
    assert result.value > 0.9


def test_every_step_uses_the_schedule_learning_rate():
    config = AdamConfig(lr=0.01, schedule=ScheduleConfig("linear", warmup_fraction=0.25))
    seen = []

    def factory(params, cfg):
        optimizer = torch.optim.SGD(params, lr=cfg.lr)
        original = optimizer.step

        def step(*args, **kwargs):
            seen.append(optimizer.param_groups[0]["lr"])
            return original(*args, **kwargs)

        optimizer.step = step
        return optimizer

    result = train(toy_task(), config, optimizer_factory=factory)
    assert result.total_steps == 3 * 4
    assert seen == result.learning_rates == learning_rates(config.lr, config.schedule, 12)
    assert len(result.train_losses) == 12


def test_on_eval_is_called_after_every_epoch_and_can_stop_training():
    calls = []

    class Stop(Exception):
        pass

    def on_eval(evaluation):
        calls.append((evaluation.epoch, evaluation.step, sorted(evaluation.metrics)))
        if evaluation.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(toy_task(epochs=5), AdamConfig(), on_eval=on_eval)
    every = [
        "param_norm",
        "train_loss",
        "update_ratio",
        "val_accuracy",
        "val_loss",
        "val_train_gap",
    ]
    assert calls == [(1, 4, every), (2, 8, every)]


def test_a_non_finite_loss_stops_training_at_once():
    with pytest.raises(DivergedError) as info:
        train(
            resolve_task("digits-mlp"), AdamConfig(lr=1e6, eps=0.0), epochs=3, divergence_factor=0
        )
    error = info.value
    assert not math.isfinite(error.loss)
    assert error.step < 3 * 23
    assert "at step" in str(error) and "lr=1e+06" in str(error)


def test_an_exploding_loss_stops_training_at_once():
    with pytest.raises(DivergedError) as info:
        train(resolve_task("digits-mlp"), AdamConfig(lr=10.0), epochs=3)
    assert error_ratio(info.value) > 100
    assert "over 100x the first step's" in str(info.value)


def error_ratio(error):
    return error.loss / 2.4  # cross-entropy of 10 classes starts near ln(10) = 2.3


@pytest.mark.parametrize("implementation", ["fused", "torch"])
def test_both_optimizer_implementations_train_to_the_same_result(implementation):
    from functools import partial

    from adamtune.training.builders import build_optimizer

    config = AdamConfig(lr=1e-2, weight_decay=0.01)
    result = train(
        toy_task(),
        config,
        seed=1,
        optimizer_factory=partial(build_optimizer, optimizer=implementation),
    )
    reference = train(
        toy_task(),
        config,
        seed=1,
        optimizer_factory=partial(build_optimizer, optimizer="torch"),
    )
    assert result.value == pytest.approx(reference.value)
    assert result.train_losses == pytest.approx(reference.train_losses, rel=1e-5)


def test_test_split_is_reported_when_the_task_has_one():
    result = train(resolve_task("mnist1d-mlp"), AdamConfig(lr=3e-3), epochs=1)
    assert {"test_accuracy", "test_loss", "val_accuracy"} <= set(result.metrics)


def test_on_eval_returning_a_reason_stops_training_with_that_reason():
    result = train(
        toy_task(epochs=5), AdamConfig(), on_eval=lambda e: "enough" if e.epoch == 2 else None
    )
    assert result.stopped == "enough"
    assert [e.epoch for e in result.evaluations] == [1, 2]
    assert len(result.learning_rates) == result.evaluations[-1].step == 8
    assert result.value == result.evaluations[-1].metrics["val_accuracy"]
    assert train(toy_task(epochs=2), AdamConfig()).stopped is None


def test_patience_stops_a_run_at_its_best_and_reports_the_best_weights_test_metrics():
    task = resolve_task("mnist1d-mlp")
    config = AdamConfig(lr=3e-3)  # constant schedule: a shorter run takes the same steps
    result = train(task, config, seed=0, epochs=12, patience=2)
    assert result.best is not None and result.stopped is None
    assert len(result.evaluations) == result.best.epoch + 2 < 12  # two epochs without a gain
    values = [e.metrics["val_accuracy"] for e in result.evaluations]
    assert result.value == max(values) == result.best.metrics["val_accuracy"]
    assert result.best.step == result.best.epoch * task.steps_per_epoch()
    to_best = train(task, config, seed=0, epochs=result.best.epoch)  # the best epoch's weights
    assert result.metrics["test_accuracy"] == to_best.metrics["test_accuracy"]
    assert result.metrics["test_loss"] == pytest.approx(to_best.metrics["test_loss"], rel=1e-6)
    assert train(task, config, seed=0, epochs=3).best is None  # off by default


def test_a_task_can_turn_early_stopping_on_by_default():
    import dataclasses

    task = dataclasses.replace(resolve_task("digits-mlp"), patience=2)
    assert train(task, AdamConfig(lr=1e-2), epochs=12).best.epoch == 1
    assert train(task, AdamConfig(lr=1e-2), epochs=12, patience=20).best.epoch > 1
    with pytest.raises(TaskError, match="patience must be an integer >= 1 or None, got 0"):
        dataclasses.replace(task, patience=0)
