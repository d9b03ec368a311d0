"""Honest gains: a confirmed gain inside the noise says so in plain words; a clear one does not."""

from adamtune.results.gain import Candidate, Confirmation, noise_line


def confirmation(winner, baseline):
    return Confirmation(
        metric="val_accuracy",
        test_metric=None,
        seeds=list(range(1, len(winner) + 1)),
        candidates=[Candidate("trial 4", 4, 0.9, winner, [None] * len(winner))],
        baseline=Candidate("AdamW defaults", None, 0.85, baseline, [None] * len(baseline)),
        winner=4,
    )


def test_a_gain_inside_the_noise_is_said_with_how_many_seeds_would_tell():
    # BERT's case: +0.5 points with sds of 1.3 and 3.0 points over 3 seeds
    line = noise_line(confirmation([0.905, 0.92, 0.895], [0.93, 0.87, 0.905]), maximize=True)
    assert line is not None
    assert line.startswith("Not distinguishable from AdamW defaults over 3 seeds")
    assert "--confirm" in line and "would tell" in line


def test_a_clear_gain_prints_nothing():
    assert noise_line(confirmation([0.95, 0.951, 0.949], [0.88, 0.87, 0.885]), True) is None


def test_a_clear_loss_is_not_called_noise_either():
    assert noise_line(confirmation([0.80, 0.801, 0.799], [0.88, 0.87, 0.885]), True) is None


def test_one_seed_cannot_tell():
    line = noise_line(confirmation([0.95], [0.80]), True)
    assert line is not None and "One seed cannot tell" in line


def test_seeds_where_either_failed_are_left_out_of_the_pairs():
    line = noise_line(confirmation([0.95, None, 0.951], [0.88, 0.87, None]), True)
    assert line is not None and "One seed" in line
