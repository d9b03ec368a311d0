"""A configuration with phases (a population's schedule): its values at every step, the same
for training, replay, logging and export."""

import pytest

from adamtune.config.adam import AdamConfig, Phase, ScheduleConfig
from adamtune.config.phases import changes, learning_rates, phase_starts, values_at
from adamtune.config.schedules import multiplier
from adamtune.errors import ConfigError

COSINE = ScheduleConfig("cosine", warmup_fraction=0.1)
LATE = AdamConfig(lr=1e-3, beta2=0.99, weight_decay=0.01, schedule=COSINE)
CONFIG = AdamConfig(
    lr=1e-2,
    schedule=COSINE,
    phases=(Phase(0.3, AdamConfig(lr=5e-3, beta1=0.8)), Phase(0.75, LATE)),
)


def test_a_fixed_configuration_reads_as_it_always_has():
    assert "phases" not in AdamConfig().to_dict()
    assert AdamConfig.from_dict(AdamConfig().to_dict()) == AdamConfig()


def test_phases_round_trip_through_their_dict():
    data = CONFIG.to_dict()
    assert [p["start"] for p in data["phases"]] == [0.3, 0.75]
    assert "phases" not in data["phases"][0]["config"]
    assert AdamConfig.from_dict(data) == CONFIG
    assert CONFIG.fixed == AdamConfig(lr=1e-2, schedule=COSINE)


def test_each_phase_starts_at_its_share_of_the_run_and_follows_its_own_rule():
    rates = learning_rates(CONFIG, 100)
    assert [step for step, _ in phase_starts(CONFIG, 100)] == [0, 30, 75]
    assert rates[29] == 1e-2 * multiplier(COSINE, 29, 100)
    assert rates[30] == 5e-3 * multiplier(ScheduleConfig(), 30, 100)
    assert rates[80] == 1e-3 * multiplier(COSINE, 80, 100)
    assert values_at(CONFIG, 74, 100).beta1 == 0.8
    assert values_at(CONFIG, 75, 100) == LATE
    # another run length: the same fractions of training
    assert sorted(changes(CONFIG, 1000)) == [300, 750]
    assert len(learning_rates(CONFIG, 7)) == 7


def test_a_start_stored_as_step_over_steps_is_that_step_again():
    for total in (97, 640, 12345):
        for step in range(1, total, max(1, total // 50)):
            config = AdamConfig(phases=(Phase(step / total, AdamConfig(lr=0.1)),))
            assert list(changes(config, total)) == [step]


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ((Phase(0.5, AdamConfig()), Phase(0.4, AdamConfig())), "phases[1].start: must be"),
        ((Phase(1.0, AdamConfig()),), "phases[0].start: must be a fraction"),
        ((Phase(0.0, AdamConfig()),), "phases[0].start"),
        ((Phase(0.5, AdamConfig(decoupled=False)),), "phases[0].config: decoupled and amsgrad"),
        ((Phase(0.5, CONFIG),), "phases[0].config: a phase has no phases"),
        (("0.5",), "phases[0]: must be a Phase"),
    ],
)
def test_a_bad_phase_is_refused_naming_it(phases, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AdamConfig(phases=phases)


def test_a_bad_phase_in_a_file_is_refused_naming_the_source():
    data = CONFIG.to_dict()
    data["phases"][1]["start"] = 0.1
    with pytest.raises(ConfigError, match=r"winner.yaml: .*phases\[1\]\.start"):
        AdamConfig.from_dict(data, source="winner.yaml")
    data["phases"] = [{"start": 0.5}]
    with pytest.raises(ConfigError, match=r"phases\[0\]: must be a mapping with start and config"):
        AdamConfig.from_dict(data)
