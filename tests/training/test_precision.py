"""--precision: autocast, loss scaling and bf16 weights in the one-at-a-time loop and in stacked
trials, the errors, and what a study remembers of it."""

import math

import optuna
import pytest
import torch

from adamtune.config.adam import AdamConfig
from adamtune.config.settings import SearchSettings
from adamtune.errors import ConfigError, StudyError
from adamtune.optim import FusedAdam
from adamtune.search.run import run_search
from adamtune.tasks import resolve_task
from adamtune.training.precision import Precision, PrecisionUnavailable, check_device_supports
from adamtune.training.single import train
from adamtune.training.stacked.loop import train_stacked
from tests.training.test_train import toy_task

CONFIG = AdamConfig(lr=1e-2, decoupled=True, weight_decay=0.01)


def capture(seen):
    """An optimizer factory that records the optimizer it builds."""

    def factory(params, config):
        optimizer = FusedAdam(params, lr=config.lr, decoupled_weight_decay=True)
        seen.append(optimizer)
        return optimizer

    return factory


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "bf16-pure"])
def test_every_precision_learns_and_reports_float_metrics(precision):
    seen = []
    result = train(toy_task(epochs=4), CONFIG, precision=precision, optimizer_factory=capture(seen))
    assert result.value > 0.7  # fp32 reaches 0.94 on this toy; every precision learns it
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.metrics.values())
    assert all(math.isfinite(v) for v in result.log.grad_norms)
    params = seen[0].param_groups[0]["params"]
    weights = torch.bfloat16 if precision == "bf16-pure" else torch.float32
    assert {p.dtype for p in params} == {weights}
    state = seen[0].state[params[0]]
    assert state["exp_avg"].dtype == torch.float32  # Adam's moments stay fp32 in every mode


def test_bf16_pure_rounds_stochastically_with_the_trial_seed():
    seen = []
    train(
        toy_task(epochs=1), CONFIG, seed=5, precision="bf16-pure", optimizer_factory=capture(seen)
    )
    group = seen[0].param_groups[0]
    assert group["stochastic_rounding"] and group["rounding_seed"] == 5
    a = train(toy_task(epochs=2), CONFIG, seed=5, precision="bf16-pure")
    b = train(toy_task(epochs=2), CONFIG, seed=5, precision="bf16-pure")
    assert a.metrics == b.metrics  # reproducible: the same seed, the same rounding bits


def test_bf16_autocast_changes_the_forward_pass_but_not_the_weights():
    fp32 = train(toy_task(), CONFIG)
    bf16 = train(toy_task(), CONFIG, precision="bf16")
    assert fp32.train_losses != bf16.train_losses  # the forward pass really ran in bf16
    assert fp32.train_losses[0] == pytest.approx(bf16.train_losses[0], rel=2e-2)


def test_fp16_skips_the_step_whose_gradients_overflowed_and_backs_off_the_scale():
    precision = Precision.for_run("fp16", torch.device("cpu"))
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = FusedAdam([p], lr=0.1)
    scale = precision.scaler.get_scale()
    precision.backward((p * torch.tensor([1.0, math.inf, 1.0])).sum())
    precision.unscale(optimizer)
    precision.step(optimizer)
    assert torch.equal(p.detach(), torch.ones(3)) and not optimizer.state[p]  # skipped
    assert precision.scaler.get_scale() == scale / 2
    optimizer.zero_grad()
    precision.backward(p.sum())
    precision.unscale(optimizer)
    assert torch.equal(p.grad, torch.ones(3))  # unscaled before clipping and measuring
    precision.step(optimizer)
    assert optimizer.state[p]["step"].item() == 1


def test_stacked_bf16_rows_train_as_they_would_alone():
    configs = [AdamConfig(lr=lr, decoupled=True) for lr in (3e-3, 1e-2, 3e-2)]
    stacked = train_stacked(toy_task(), configs, precision="bf16")
    for config, row in zip(configs, stacked, strict=True):
        alone = train(toy_task(), config, precision="bf16")
        assert row.value == pytest.approx(alone.value, abs=1e-6)
        assert row.train_losses == pytest.approx(alone.train_losses, rel=1e-4, abs=1e-5)


def test_stacked_bf16_pure_rows_learn_with_float32_moments():
    configs = [AdamConfig(lr=lr, decoupled=True) for lr in (3e-3, 1e-2, 3e-2)]
    stacked = train_stacked(toy_task(epochs=4), configs, precision="bf16-pure")
    assert all(row.value > 0.7 and not row.stopped for row in stacked)


def test_fp16_refuses_a_stack_and_auto_trains_it_one_at_a_time(storage):
    with pytest.raises(ConfigError, match=r"^--stack 4: fp16 trials cannot be stacked"):
        SearchSettings(precision="fp16", stack=4)
    with pytest.raises(ValueError, match="fp16 trials cannot be stacked"):
        train_stacked(toy_task(), [CONFIG, CONFIG], precision="fp16")
    said = []
    settings = SearchSettings(
        task="digits-mlp", storage=storage, n_trials=2, epochs=1, space="lr-only",
        precision="fp16", baseline=False,
    )  # fmt: skip
    study = run_search(settings, warn=said.append)
    assert any("fp16 trials cannot be stacked" in line for line in said)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(precision="fp8"),
            "--precision: must be one of fp32, bf16, fp16, bf16-pure, got 'fp8'",
        ),
        (dict(precision=None), "--precision: must be one of"),
        (
            dict(precision="bf16-pure", optimizer="torch"),
            "--precision: 'bf16-pure' needs --optimizer fused",
        ),
    ],
)
def test_bad_precision_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as caught:
        SearchSettings(**overrides)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_bf16_on_a_gpu_without_it_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(PrecisionUnavailable) as caught:
        check_device_supports("bf16", torch.device("cuda:0"))
    assert str(caught.value) == (
        "--precision: 'bf16' needs bfloat16 support, and cuda:0 (Tesla T4) has none; "
        "use fp16 or fp32"
    )
    check_device_supports("fp16", torch.device("cuda:0"))  # fp16 is the way out
    check_device_supports("bf16", torch.device("cpu"))


def test_a_study_keeps_its_precision_and_refuses_another(storage):
    base = dict(
        task="digits-mlp", storage=storage, n_trials=1, epochs=1, space="lr-only", baseline=False
    )
    study = run_search(SearchSettings(**base, precision="bf16"))
    assert study.study_name == "digits-mlp-lr-only-bf16"  # its own study by default
    assert study.user_attrs["precision"] == "bf16"
    with pytest.raises(StudyError, match=r"trained with --precision bf16, got --precision fp32"):
        run_search(SearchSettings(**base, study_name=study.study_name))
    again = run_search(SearchSettings(**base, precision="bf16"))
    assert len(again.trials) == 2


def test_built_in_task_under_bf16_pure_keeps_its_weights_in_bf16():
    task = resolve_task("digits-mlp")
    seen = []
    result = train(task, CONFIG, epochs=1, precision="bf16-pure", optimizer_factory=capture(seen))
    assert result.value > 0.5
    assert all(p.dtype == torch.bfloat16 for p in seen[0].param_groups[0]["params"])
