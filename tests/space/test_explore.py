"""Explore (--strategy pbt): a copied member's values move inside the space it came from."""

import math
import random

import pytest

from adamtune.config.adam import AdamConfig
from adamtune.errors import SpaceError
from adamtune.space import load_space
from adamtune.space.explore import Explorer, check_explorable
from adamtune.space.search_space import FloatRange

SPACE = load_space("default")


def _sampled(seed):
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return SPACE.sample(study.ask())


def test_explore_never_leaves_the_space_and_never_moves_a_fixed_field():
    rng = random.Random(0)
    explore = Explorer(SPACE, rng)
    for seed in range(20):
        config = _sampled(seed)
        for _ in range(50):
            config = explore(config)
            assert 1e-5 <= config.lr <= 1e-1
            # 1 - beta round-trips through beta: within float64's rounding of the bound
            assert 1e-2 * (1 - 1e-9) <= 1 - config.beta1 <= 0.5 * (1 + 1e-9)
            assert 1e-4 * (1 - 1e-9) <= 1 - config.beta2 <= 1e-1 * (1 + 1e-9)
            assert 1e-10 <= config.eps <= 1e-3
            assert config.weight_decay == 0 or 1e-5 <= config.weight_decay <= 1
            assert config.schedule.kind in ("constant", "linear", "cosine")
            assert 0 <= config.schedule.warmup_fraction <= 0.1
            assert config.schedule.final_lr_fraction == 0.0  # fixed in the space
            assert config.decoupled and not config.amsgrad  # fixed in the space


def test_a_perturbation_is_x0_8_or_x1_2_in_the_spaces_own_scale():
    explore = Explorer(SPACE, random.Random(1), resample=0.0)
    config = AdamConfig(lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=1e-3)
    for _ in range(30):
        moved = explore(config)
        for before, after in (
            (config.lr, moved.lr),
            (1 - config.beta2, 1 - moved.beta2),  # 1 - beta2: the space's log field
            (config.eps, moved.eps),
        ):
            assert after / before == pytest.approx(0.8) or after / before == pytest.approx(1.2)
    # at a bound, the factor is clamped into the space
    top = AdamConfig(lr=1e-1)
    assert all(explore(top).lr <= 1e-1 for _ in range(20))


def test_resampling_draws_on_the_log_scale_where_the_space_has_it():
    explore = Explorer(SPACE, random.Random(2), resample=1.0)
    logs = [math.log10(explore(AdamConfig()).lr) for _ in range(2000)]
    assert min(logs) >= -5 and max(logs) <= -1
    # log-uniform on [1e-5, 1e-1]: a quarter of the draws in each decade
    assert sum(-5 <= v < -4 for v in logs) / len(logs) == pytest.approx(0.25, abs=0.04)


def test_a_switched_off_field_stays_off_until_resampled():
    explore = Explorer(SPACE, random.Random(3), resample=0.0)
    assert all(explore(AdamConfig(weight_decay=0.0)).weight_decay == 0.0 for _ in range(20))
    assert isinstance(SPACE.params["weight_decay"], FloatRange)


def test_a_space_that_searches_the_kernels_settings_is_refused(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("lr: {low: 1.0e-4, high: 1.0e-2}\ndecoupled: {choices: [true, false]}\n")
    with pytest.raises(SpaceError, match="decoupled: --strategy pbt trains the population as one"):
        check_explorable(load_space(str(path)))
