import optuna
import pytest
from optuna.trial import FixedTrial

from adamtune.config.adam import AdamConfig
from adamtune.errors import SpaceError
from adamtune.space.search_space import (
    Categorical,
    FloatRange,
    IntRange,
    load_space,
    shipped_spaces,
)

SHIPPED = ["adam", "adamw", "algoperf", "default", "grid", "lr-only"]


def test_all_required_spaces_ship_with_a_description():
    spaces = shipped_spaces()
    assert sorted(spaces) == SHIPPED
    assert all(description for description in spaces.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_sample_valid_configs(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        assert isinstance(space.sample(study.ask()), AdamConfig)


def test_default_space_searches_betas_as_one_minus_beta_on_log_scale():
    params = load_space("default").params
    assert params["one_minus_beta1"] == FloatRange(1e-2, 0.5, log=True)
    assert params["one_minus_beta2"] == FloatRange(1e-4, 1e-1, log=True)
    assert params["weight_decay"] == FloatRange(1e-5, 1.0, log=True, include_zero=True)
    assert params["schedule.warmup_fraction"] == FloatRange(0.0, 0.1, log=False)


def test_algoperf_space_matches_the_published_ranges():
    space = load_space("algoperf")
    config = space.sample(FixedTrial({"lr": 1e-3, "one_minus_beta1": 0.1, "weight_decay": 0.1}))
    assert config.beta1 == pytest.approx(0.9)
    assert config.beta2 == 0.999
    assert config.schedule.kind == "cosine" and config.schedule.warmup_fraction == 0.05
    assert space.params["lr"] == FloatRange(1e-4, 1e-2, log=True)
    assert space.params["one_minus_beta1"] == FloatRange(2e-2, 0.5, log=True)
    assert space.params["weight_decay"] == FloatRange(5e-3, 1.0, log=True)
    assert config.eps == 1e-8 and config.decoupled and not config.amsgrad
    assert config.schedule.final_lr_fraction == 0.0
    assert space.searched == ["lr", "one_minus_beta1", "weight_decay"]


def test_sampling_resolves_one_minus_beta_and_zero_weight_decay():
    space = load_space("default")
    config = space.sample(
        FixedTrial(
            {
                "lr": 0.01,
                "one_minus_beta1": 0.1,
                "one_minus_beta2": 0.001,
                "eps": 1e-8,
                "weight_decay.enabled": False,
                "schedule.kind": "cosine",
                "schedule.warmup_fraction": 0.05,
            }
        )
    )
    assert config.beta1 == pytest.approx(0.9) and config.beta2 == pytest.approx(0.999)
    assert config.weight_decay == 0.0
    assert config.schedule.kind == "cosine"


def test_step_only_params_are_suggested_only_for_step_schedules():
    space = load_space("adamw")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        config = space.sample(trial)
        assert ("schedule.gamma" in trial.params) == (config.schedule.kind == "step")
        assert ("schedule.final_lr_fraction" in trial.params) == (
            config.schedule.kind in ("linear", "cosine", "exponential")
        )
    assert isinstance(space.params["schedule.decays"], IntRange)
    assert isinstance(space.params["amsgrad"], Categorical)


def test_a_user_space_file_loads_and_keeps_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("lr: {low: 1e-4, high: 1e-2}\nschedule:\n  kind: linear\n")
    space = load_space(str(path))
    assert space.name == "mine" and space.searched == ["lr"]
    assert space.params["lr"] == FloatRange(1e-4, 1e-2, log=True)  # YAML's "1e-4" string too
    config = space.sample(FixedTrial({"lr": 1e-3}))
    assert config.beta2 == 0.999 and config.schedule.kind == "linear"


BAD = [
    ("lr: 1e-3\nmomentum: 0.9\n", "momentum: unknown key"),
    ("lr: {low: 1e-3}\n", "lr: a range needs 'low' and 'high', 'high' is missing"),
    ("lr: {low: 1e-2, high: 1e-3}\n", "lr: 'low' must be < 'high', got low=0.01, high=0.001"),
    (
        "schedule:\n  warmup_fraction: {low: 0.0, high: 0.1, log: true}\n",
        "schedule.warmup_fraction.low: must be > 0 on a log scale, got 0.0",
    ),
    ("beta2: {low: 0.9, high: 1.5}\n", "beta2.high: must be in [0, 1), got 1.5"),
    ("beta1: 1.0\n", "beta1: must be in [0, 1), got 1.0"),
    ("lr: -0.1\n", "lr: must be > 0, got -0.1"),
    ("eps: -1e-8\n", "eps: must be >= 0, got -1e-08"),
    ("weight_decay: {low: -1, high: 1, log: false}\n", "weight_decay.low: must be >= 0, got -1"),
    (
        "schedule:\n  kind: polynomial\n",
        "schedule.kind: must be one of constant, linear, cosine, step, exponential, "
        "got 'polynomial'",
    ),
    ("lr: [1e-3\n", "invalid YAML"),
    ("- lr\n", "must be a mapping of parameters, got list"),
    ("beta1: 0.9\none_minus_beta1: 0.1\n", "beta1: give either beta1 or one_minus_beta1"),
    ("lr: {low: 1e-4, high: 1e-2, logg: true}\n", "lr.logg: unknown key; did you mean 'log'?"),
    ("amsgrad: maybe\n", "amsgrad: must be true or false, got 'maybe'"),
    ("lr: {choices: []}\n", "lr.choices: must be a non-empty list, got []"),
    (
        "schedule:\n  kind: exponential\n",
        "schedule.final_lr_fraction: must be > 0 when schedule.kind can be exponential",
    ),
    ("lr: fast\n", "lr: must be a number, got 'fast'"),
    ("max_grad_norm: -1\n", "max_grad_norm: must be > 0, got -1"),
    ("max_grad_norm: 0\n", "max_grad_norm: must be > 0, got 0"),
    ("max_grad_norm: {low: 0, high: 1, log: false}\n", "max_grad_norm.low: must be > 0, got 0"),
    (
        "max_grad_norm: {low: 0.1, high: 10, include_zero: true}\n",
        "max_grad_norm.include_zero: 0 is not a valid max_grad_norm",
    ),
    (
        "weight_decay: {low: 1e-4, high: 1, include_none: true}\n",
        "weight_decay.include_none: only max_grad_norm can be off (null); use include_zero",
    ),
    ("max_grad_norm: {choices: [1.0, -2]}\n", "max_grad_norm: must be > 0, got -2"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_malformed_files_give_one_line_naming_file_key_rule_and_value(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    line = str(info.value)
    assert line.startswith(f"{path}: ")
    assert message in line
    assert "\n" not in line


def test_unknown_space_name_suggests_the_close_one():
    with pytest.raises(SpaceError, match=r"not a shipped space .* did you mean 'default'\?"):
        load_space("defualt")


def test_missing_file_is_named():
    with pytest.raises(SpaceError, match=r"nope/space.yaml: no such file"):
        load_space("nope/space.yaml")


def test_max_grad_norm_is_fixed_off_searched_or_searched_with_off(tmp_path):
    def space(text):
        path = tmp_path / "clip.yaml"
        path.write_text(text)
        return load_space(str(path))

    assert space("lr: 1e-3\n").sample(FixedTrial({})).max_grad_norm is None  # off by default
    assert space("max_grad_norm: null\n").sample(FixedTrial({})).max_grad_norm is None
    assert space("max_grad_norm: 1.0\n").sample(FixedTrial({})).max_grad_norm == 1.0
    searched = space("max_grad_norm: {low: 0.1, high: 10, include_none: true}\n")
    assert searched.params["max_grad_norm"] == FloatRange(0.1, 10.0, log=True, include_none=True)
    on = FixedTrial({"max_grad_norm.enabled": True, "max_grad_norm": 2.5})
    assert searched.sample(on).max_grad_norm == 2.5
    off = FixedTrial({"max_grad_norm.enabled": False})
    assert searched.sample(off).max_grad_norm is None
    chosen = space("max_grad_norm: {choices: [null, 1.0]}\n")
    assert chosen.sample(FixedTrial({"max_grad_norm": None})).max_grad_norm is None
    assert chosen.sample(FixedTrial({"max_grad_norm": 1.0})).max_grad_norm == 1.0
