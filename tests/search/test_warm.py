"""--warm-start: the best configurations of other studies or exported files train first,
clipped to the space; the source is never written; a bad source is one line that changes
nothing."""

import optuna
import pytest
from click.testing import CliRunner

from adamtune.cli.app import cli
from adamtune.config.adam import AdamConfig
from adamtune.search.warm import WARM_ATTR, WARM_TOP

QUICK = ["--task", "digits-mlp", "--epochs", "1", "--no-tracking", "--confirm", "0"]


def search(*args):
    return CliRunner().invoke(cli, ["search", *QUICK, *args])


@pytest.fixture
def source(in_tmp):
    result = search("--n-trials", "6", "--study-name", "src")
    assert result.exit_code == 0, result.output
    return optuna.load_study(study_name="src", storage="sqlite:///adamtune.db")


def test_the_sources_best_train_first_clipped_and_the_source_is_untouched(source):
    before = [(t.number, t.state, t.value, dict(t.user_attrs)) for t in source.trials]
    result = search(
        "--n-trials", "8", "--study-name", "dst", "--warm-start", "src", "--space", "lr-only"
    )
    assert result.exit_code == 0, result.output
    assert "Warm start: 3 configurations from src train first" in result.output
    assert "1 already in the study" in result.output  # AdamW's defaults: dst's baseline
    after = optuna.load_study(study_name="src", storage="sqlite:///adamtune.db")
    assert [(t.number, t.state, t.value, dict(t.user_attrs)) for t in after.trials] == before
    dst = optuna.load_study(study_name="dst", storage="sqlite:///adamtune.db")
    warm = [t for t in dst.trials if t.user_attrs.get(WARM_ATTR)]
    assert [t.number for t in warm] == [1, 2, 3]  # right after the baseline, trial 0
    best = sorted(
        (t for t in source.trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: t.value,
        reverse=True,
    )[:WARM_TOP]
    best = [t for t in best if "baseline" not in t.user_attrs]  # dst has it as its trial 0
    for trial, original in zip(warm, best, strict=True):
        config = AdamConfig.from_dict(original.user_attrs["config"])
        low, high = 1e-5, 1e-1  # lr-only's range: the warm value is clipped into it
        assert trial.params["lr"] == pytest.approx(min(max(config.lr, low), high))


def test_an_exported_file_is_a_source(source, in_tmp):
    assert (
        CliRunner().invoke(cli, ["export", "src", "--format", "json", "-o", "best.json"]).exit_code
        == 0
    )
    result = search("--n-trials", "2", "--study-name", "dst", "--warm-start", "best.json")
    assert result.exit_code == 0, result.output
    assert "Warm start: 1 configuration from best.json train first" in result.output


@pytest.mark.parametrize(
    "value, said",
    [
        ("ghost", "--warm-start 'ghost': no study 'ghost'"),
        ("nothing.yaml", "--warm-start 'nothing.yaml': no such file"),
        ("space.yaml", "--warm-start: space.yaml: config: missing; expected an adamtune export"),
        ("empty", "--warm-start 'empty': study 'empty' has no completed trial"),
    ],
)
def test_a_bad_source_is_one_line_and_creates_nothing(in_tmp, value, said):
    (in_tmp / "space.yaml").write_text("lr: {low: 1.0e-4, high: 1.0e-2}\n")
    optuna.create_study(study_name="empty", storage="sqlite:///adamtune.db")
    result = search("--n-trials", "2", "--study-name", "dst", "--warm-start", value)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and said in errors[0], result.output
    assert "dst" not in optuna.get_all_study_names("sqlite:///adamtune.db")


def test_a_resumed_study_may_change_its_sampler_and_says_so(in_tmp):
    assert search("--n-trials", "1").exit_code == 0
    again = search("--n-trials", "1", "--sampler", "random", "--pruner", "none")
    assert again.exit_code == 0, again.output
    assert "with --sampler random (its trials so far: tpe) and --pruner none" in again.output
