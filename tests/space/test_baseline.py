"""The baseline a study is measured against: which config, and whether it lies in the space."""

import pytest
from optuna.trial import FixedTrial

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.errors import SpaceError
from adamtune.space.baseline import ADAMW_DEFAULTS, baseline_config, baseline_params
from adamtune.space.search_space import load_space


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_default_baseline_is_adamw_defaults_inside_the_default_space():
    space = load_space("default")
    config, label = baseline_config(space)
    assert label == "AdamW defaults"
    assert config == AdamConfig(weight_decay=0.01)
    params = baseline_params(space, config)
    assert params is not None
    assert params["weight_decay.enabled"] is True and params["schedule.kind"] == "constant"
    sampled = space.sample(FixedTrial(params))
    assert sampled.schedule == config.schedule
    assert sampled.beta1 == pytest.approx(0.9, rel=1e-15) and sampled.lr == config.lr


def test_fields_the_space_fixes_come_from_the_space():
    config, _ = baseline_config(load_space("algoperf"))
    assert config.schedule == ScheduleConfig(kind="cosine", warmup_fraction=0.05)
    assert (config.lr, config.beta2, config.weight_decay) == (1e-3, 0.999, 0.01)


def test_a_space_that_fixes_adam_gets_torch_adams_defaults():
    config, label = baseline_config(load_space("adam"))
    assert label == "Adam defaults"
    assert not config.decoupled and config.weight_decay == 0.0


def test_a_baseline_outside_the_ranges_does_not_fit(tmp_path):
    space = load_space(write(tmp_path, "lr: {low: 1.0e-2, high: 1.0e-1}\n"))
    assert baseline_params(space, baseline_config(space)[0]) is None


def test_a_fixed_field_that_differs_does_not_fit(tmp_path):
    text = "lr: {low: 1.0e-4, high: 1.0e-1}\nbeta2: 0.95\nbaseline: {lr: 1.0e-3}\n"
    space = load_space(write(tmp_path, text))
    assert space.baseline == AdamConfig(lr=1e-3)  # beta2 0.999 against the space's 0.95
    assert baseline_params(space, space.baseline) is None


def test_weight_decay_zero_fits_through_the_switch(tmp_path):
    text = "lr: {low: 1.0e-4, high: 1.0e-1}\nweight_decay: {low: 1.0e-3, high: 1.0, include_zero: true}\n"
    space = load_space(write(tmp_path, text))
    params = baseline_params(space, AdamConfig(weight_decay=0.0))
    assert params == {"lr": 1e-3, "weight_decay.enabled": False}


def test_a_space_baseline_in_its_three_forms(tmp_path):
    export = (
        "schema_version: 1\nconfig:\n  lr: 0.003\n  beta1: 0.8\n  weight_decay: 0.1\n"
        "  schedule: {kind: cosine, warmup_fraction: 0.1}\n"
    )
    write(tmp_path, export, "winner.yaml")
    mapping = load_space(
        write(
            tmp_path,
            "lr: {low: 1.0e-4, high: 1.0e-1}\nbaseline: {lr: 3.0e-3, one_minus_beta1: 0.2}\n",
        )
    )
    assert mapping.baseline.lr == 3e-3 and mapping.baseline.beta1 == pytest.approx(0.8)
    by_path = load_space(
        write(tmp_path, "lr: {low: 1.0e-4, high: 1.0e-1}\nbaseline: winner.yaml\n")
    )
    assert by_path.baseline.schedule.kind == "cosine" and by_path.baseline.weight_decay == 0.1
    assert baseline_config(by_path) == (by_path.baseline, "the space's baseline")


def test_an_exported_config_is_a_space_with_every_field_fixed(tmp_path):
    path = write(
        tmp_path,
        "schema_version: 1\nstudy: s\ntrial: 3\nvalue: 0.9\nconfig:\n  lr: 0.003\n"
        "  max_grad_norm: 1.0\n  schedule: {kind: linear, warmup_fraction: 0.1}\n",
        "export.yaml",
    )
    space = load_space(path)
    assert space.searched == []
    config = space.sample(FixedTrial({}))
    assert config.lr == 0.003 and config.max_grad_norm == 1.0
    assert config.schedule == ScheduleConfig(kind="linear", warmup_fraction=0.1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: 1.0e-3\nbaseline: [1, 2]\n", "baseline: must be a mapping of config fields"),
        ("lr: 1.0e-3\nbaseline: {lr: -1}\n", "baseline: lr: must be > 0, got -1"),
        ("lr: 1.0e-3\nbaseline: {lrr: 1}\n", "baseline: lrr: unknown key; did you mean 'lr'?"),
        ("lr: 1.0e-3\nbaseline: missing.yaml\n", "baseline: no such file"),
        ("schema_version: 7\nconfig: {lr: 0.1}\n", "schema_version: must be 1, got 7"),
        ("schema_version: 1\nconfig: {beta1: 2}\n", "config: beta1: must be in [0, 1), got 2"),
    ],
)
def test_bad_baselines_are_one_line(tmp_path, text, message):
    with pytest.raises(SpaceError) as error:
        load_space(write(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_adamw_defaults_are_torchs():
    import torch

    defaults = torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults
    assert defaults["lr"] == ADAMW_DEFAULTS.lr
    assert defaults["betas"] == ADAMW_DEFAULTS.betas
    assert defaults["eps"] == ADAMW_DEFAULTS.eps
    assert defaults["weight_decay"] == ADAMW_DEFAULTS.weight_decay
