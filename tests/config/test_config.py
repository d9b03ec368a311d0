import pytest

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.errors import ConfigError


def test_defaults_are_torch_adamw_like():
    config = AdamConfig()
    assert (config.lr, config.betas, config.eps) == (1e-3, (0.9, 0.999), 1e-8)
    assert config.schedule.kind == "constant"


def test_round_trips_through_dict():
    config = AdamConfig(
        lr=0.1234567890123,
        weight_decay=0.01,
        decoupled=False,
        amsgrad=True,
        schedule=ScheduleConfig("step", 0.1, gamma=0.5, decays=2),
    )
    assert AdamConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "lr: must be > 0, got -1.0"),
        ({"lr": 0.0}, "lr: must be > 0, got 0.0"),
        ({"beta1": 1.0}, "beta1: must be in [0, 1), got 1.0"),
        ({"beta2": 1.5}, "beta2: must be in [0, 1), got 1.5"),
        ({"eps": -1e-8}, "eps: must be >= 0, got -1e-08"),
        ({"weight_decay": -0.1}, "weight_decay: must be >= 0, got -0.1"),
        ({"amsgrad": "yes"}, "amsgrad: must be true or false, got 'yes'"),
        ({"lr": float("nan")}, "lr: must not be NaN, got nan"),
    ],
)
def test_invalid_values_name_field_rule_and_value(kwargs, message):
    with pytest.raises(ConfigError) as info:
        AdamConfig(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"kind": "poly"},
            "schedule.kind: must be one of constant, linear, cosine, step, exponential, got 'poly'",
        ),
        ({"warmup_fraction": 1.0}, "schedule.warmup_fraction: must be in [0, 1), got 1.0"),
        (
            {"kind": "exponential"},
            "schedule.final_lr_fraction: must be > 0 for an exponential schedule, got 0.0",
        ),
        ({"decays": 1.5}, "schedule.decays: must be an integer, got 1.5"),
        ({"gamma": 0.0}, "schedule.gamma: must be in (0, 1], got 0.0"),
    ],
)
def test_invalid_schedules(kwargs, message):
    with pytest.raises(ConfigError) as info:
        ScheduleConfig(**kwargs)
    assert str(info.value) == message


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"best.json: learning_rate: unknown key"):
        AdamConfig.from_dict({"learning_rate": 0.1}, source="best.json")
    with pytest.raises(ConfigError, match=r"schedule.warmup: unknown key"):
        AdamConfig.from_dict({"schedule": {"warmup": 0.1}})


def test_max_grad_norm_is_off_by_default_positive_when_set_and_read_from_old_exports():
    from adamtune.config.adam import AdamConfig
    from adamtune.errors import ConfigError

    assert AdamConfig().max_grad_norm is None
    assert AdamConfig(max_grad_norm=0.5).to_dict()["max_grad_norm"] == 0.5
    with pytest.raises(ConfigError, match=r"^max_grad_norm: must be > 0, got 0$"):
        AdamConfig(max_grad_norm=0)
    old = AdamConfig().to_dict()
    del old["max_grad_norm"]  # a config stored before the field existed
    assert AdamConfig.from_dict(old) == AdamConfig()
