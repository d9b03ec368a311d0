import math

import pytest

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.config.schedules import learning_rates, multiplier, multipliers, warmup_steps


def test_constant_without_warmup_is_the_peak_everywhere():
    assert learning_rates(0.1, ScheduleConfig(), 5) == [0.1] * 5


def test_warmup_ramps_linearly_to_the_peak():
    schedule = ScheduleConfig("constant", warmup_fraction=0.4)
    assert warmup_steps(schedule, 10) == 4
    assert multipliers(schedule, 10)[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_linear_decays_towards_final_fraction():
    values = multipliers(ScheduleConfig("linear", final_lr_fraction=0.1), 10)
    assert values[0] == 1.0
    assert values[5] == pytest.approx(1 - 0.9 * 0.5)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_cosine_is_half_way_at_the_middle_and_ends_near_final():
    values = multipliers(ScheduleConfig("cosine", final_lr_fraction=0.0), 100)
    assert values[0] == 1.0
    assert values[50] == pytest.approx(0.5)
    assert values[-1] == pytest.approx((1 + math.cos(math.pi * 0.99)) / 2)


def test_exponential_is_geometric():
    values = multipliers(ScheduleConfig("exponential", final_lr_fraction=0.01), 4)
    assert values == pytest.approx([1.0, 0.01**0.25, 0.01**0.5, 0.01**0.75])


def test_step_drops_by_gamma_at_evenly_spaced_points():
    values = multipliers(ScheduleConfig("step", gamma=0.5, decays=2), 9)
    assert values == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])


def test_warmup_then_cosine_is_continuous_at_the_peak():
    schedule = ScheduleConfig("cosine", warmup_fraction=0.1)
    values = multipliers(schedule, 100)
    assert values[9] == 1.0 and values[10] == 1.0
    assert max(values) == 1.0


def test_config_learning_rates_scale_by_peak():
    config = AdamConfig(lr=0.5, schedule=ScheduleConfig("linear"))
    assert learning_rates(config.lr, config.schedule, 4) == pytest.approx([0.5, 0.375, 0.25, 0.125])


@pytest.mark.parametrize(("step", "total"), [(-1, 5), (5, 5), (0, 0)])
def test_out_of_range_steps_are_errors(step, total):
    with pytest.raises(ValueError):
        multiplier(ScheduleConfig(), step, total)
