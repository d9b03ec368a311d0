"""Monitoring: the gradient norm of every step, and the weight norm, update ratio and
validation-train gap of every evaluation, alone and in stacked rows, into MLflow."""

import math

import pytest
import torch

from adamtune.config.adam import AdamConfig
from adamtune.errors import DivergedError
from adamtune.tasks import resolve_task
from adamtune.tracking.plots import _lr_axis, _schedules
from adamtune.training.single import TrainingLog, train
from adamtune.training.stacked.loop import train_stacked


def plain_loop_norms(task, config, epochs):
    """The norms a hand-written loop sees: clip_grad_norm_'s return value, before clipping."""
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    order, (x, y), norms = torch.Generator().manual_seed(0), task.train, []
    for _ in range(epochs):
        permutation = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), task.batch_size):
            index = permutation[start : start + task.batch_size]
            optimizer.zero_grad()
            task.loss(model(x[index]), y[index]).backward()
            limit = config.max_grad_norm or math.inf
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), limit).item())
            optimizer.step()
    return norms, model


@pytest.mark.parametrize("clip", [None, 0.5])
def test_every_step_logs_the_global_gradient_norm_before_clipping(clip):
    task = resolve_task("wine-mlp")
    config = AdamConfig(lr=1e-2, max_grad_norm=clip)
    result = train(task, config, epochs=2, optimizer_factory=_torch_adamw)
    expected, model = plain_loop_norms(task, config, 2)
    assert len(result.log.grad_norms) == result.total_steps == len(expected)
    assert result.log.grad_norms == pytest.approx(expected, rel=1e-5)
    weights = torch.linalg.vector_norm(
        torch.cat([p.detach().flatten() for p in model.parameters()])
    )
    assert result.metrics["param_norm"] == pytest.approx(weights.item(), rel=1e-5)


def _torch_adamw(params, config):
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)


def test_each_evaluation_has_the_weight_norm_update_ratio_and_gap():
    task = resolve_task("wine-mlp")
    result = train(task, AdamConfig(lr=3e-3), epochs=3)
    assert len(result.evaluations) == 3
    for evaluation in result.evaluations:
        m = evaluation.metrics
        assert m["param_norm"] > 0 and 0 < m["update_ratio"] < 1
        assert m["val_train_gap"] == pytest.approx(m["val_loss"] - m["train_loss"])
    # the weights move: every epoch's norm differs, and a larger lr moves them more per step
    assert len({e.metrics["param_norm"] for e in result.evaluations}) == 3
    fast = train(task, AdamConfig(lr=3e-2), epochs=3)
    assert (
        fast.evaluations[0].metrics["update_ratio"] > result.evaluations[0].metrics["update_ratio"]
    )


def test_a_run_that_diverges_keeps_the_norms_of_the_steps_it_took():
    task = resolve_task("wine-mlp")
    log = TrainingLog()
    with pytest.raises(DivergedError):
        train(task, AdamConfig(lr=1e4), epochs=5, log=log)
    assert 0 < len(log.grad_norms) == len(log.train_losses)


@pytest.mark.slow
def test_stacked_rows_monitor_exactly_as_alone():
    task = resolve_task("digits-mlp")
    configs = [AdamConfig(lr=3e-3), AdamConfig(lr=1e-2, max_grad_norm=0.5)]
    stacked = train_stacked(task, configs, epochs=2)
    for config, row in zip(configs, stacked, strict=True):
        alone = train(task, config, epochs=2)
        assert row.log.grad_norms == pytest.approx(alone.log.grad_norms, rel=1e-4)
        for name in ("param_norm", "update_ratio", "val_train_gap"):
            assert row.metrics[name] == pytest.approx(alone.metrics[name], rel=1e-4, abs=1e-6)


def test_an_lr_plot_inside_one_decade_is_linear_and_labelled():
    from matplotlib.figure import Figure

    for values, scale in (([1.5e-3, 1.6e-3, 1.7e-3], "linear"), ([1e-5, 1e-3], "log")):
        ax = Figure().subplots()
        ax.plot(values)
        _lr_axis(ax, values)
        assert ax.get_yscale() == scale
        ax.figure.canvas.draw() if hasattr(ax.figure.canvas, "draw") else None
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels, scale


def test_the_schedule_plot_of_constant_rates_has_tick_labels():
    from optuna.trial import create_trial

    config = AdamConfig(lr=1.5e-3).to_dict()
    trial = create_trial(value=0.5, user_attrs={"config": config, "total_steps": 10})
    figure = _schedules([trial])
    (ax,) = figure.axes
    figure.canvas.draw()
    assert ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
