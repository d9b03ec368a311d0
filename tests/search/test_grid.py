"""--sampler grid: grid fields, sizes, errors, and resuming without repeats."""

import optuna
import pytest
from click.testing import CliRunner

from adamtune.cli.app import cli
from adamtune.config.settings import SearchSettings
from adamtune.errors import SpaceError
from adamtune.search.run import run_search
from adamtune.space.search_space import load_space

GRID = """
lr: {low: 1.0e-4, high: 1.0e-1, points: 4}
weight_decay: {grid: [0.0, 0.01]}
schedule:
  kind: {grid: [constant, cosine]}
"""


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return str(path)


def test_points_are_log_spaced_on_a_log_range_and_grids_multiply(grid_file):
    space = load_space(grid_file).for_grid()
    assert space.grid() == {
        "lr": [1e-4, 1e-3, 1e-2, 1e-1],
        "weight_decay": [0.0, 0.01],
        "schedule.kind": ["constant", "cosine"],
    }
    assert space.grid_size() == 16
    assert space.grid_description() == "lr 4 x weight_decay 2 x schedule.kind 2 = 16 points"


def test_linear_integer_and_switchable_ranges(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        "schedule:\n  kind: step\n  warmup_fraction: {low: 0.0, high: 0.1, points: 3}\n"
        "  decays: {low: 1, high: 4, points: 4}\n"
        "weight_decay: {low: 1.0e-3, high: 1.0e-1, points: 3, include_zero: true}\n"
    )
    grid = load_space(str(path)).for_grid().grid()
    assert grid["schedule.warmup_fraction"] == [0.0, 0.05, 0.1]
    assert grid["schedule.decays"] == [1, 2, 3, 4]
    assert grid["weight_decay"] == [1e-3, 1e-2, 1e-1, 0.0]  # the off value, no extra switch


def test_the_shipped_grid_space_is_the_classic_sweep():
    assert load_space("grid").for_grid().grid_description() == "lr 4 x weight_decay 3 = 12 points"


def test_a_plain_range_under_the_grid_sampler_names_the_field():
    with pytest.raises(SpaceError) as error:
        load_space("default").for_grid()
    message = str(error.value)
    assert message.startswith("search_spaces/default.yaml: lr: a range needs 'points: N'")
    assert "--sampler grid" in message and "\n" not in message


@pytest.mark.parametrize("points", ["1", "2.5", "true", "100000"])
def test_points_must_be_a_sensible_integer(tmp_path, points):
    path = tmp_path / "g.yaml"
    path.write_text(f"lr: {{low: 1.0e-4, high: 1.0e-1, points: {points}}}\n")
    with pytest.raises(SpaceError, match=r"lr.points: must be an integer in \[2, 10000\]"):
        load_space(str(path))


def test_the_cli_refuses_a_plain_range_before_starting(in_tmp):
    result = CliRunner().invoke(cli, ["search", "--sampler", "grid", "--no-tracking"])
    assert result.exit_code != 0
    assert "lr: a range needs 'points: N'" in result.output
    assert not (in_tmp / "adamtune.db").exists()


def grid_settings(grid_file, storage, **overrides):
    base = dict(
        task="digits-mlp",
        space=grid_file,
        sampler="grid",
        n_trials=None,
        epochs=1,
        storage=storage,
        confirm=0,
        stack=1,
        pruner="none",
    )
    return SearchSettings(**{**base, **overrides})


def visited(study):
    return [
        (t.params["lr"], t.params["weight_decay"], t.params["schedule.kind"])
        for t in study.trials
        if "grid_id" in t.system_attrs
    ]


@pytest.mark.slow
def test_the_grid_runs_once_and_a_resume_finishes_it_without_repeats(grid_file, storage):
    said = []
    first = run_search(grid_settings(grid_file, storage, n_trials=6), warn=said.append)
    assert "Grid: lr 4 x weight_decay 2 x schedule.kind 2 = 16 points; 6 to run." in said
    assert len(visited(first)) == 6
    said.clear()
    second = run_search(grid_settings(grid_file, storage, stack=4), warn=said.append)
    assert any("6 already visited; 10 to run." in line for line in said)
    points = visited(second)
    assert len(points) == 16 and len(set(points)) == 16
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in second.trials)
    said.clear()
    third = run_search(grid_settings(grid_file, storage), warn=said.append)
    assert any("16 already visited; 0 to run." in line for line in said)
    assert len(third.trials) == 16


@pytest.mark.slow
def test_the_baseline_under_a_grid_is_evaluated_apart(grid_file, storage):
    said = []
    study = run_search(grid_settings(grid_file, storage, n_trials=2), warn=said.append)
    assert (
        "Baseline: AdamW defaults, outside the grid; evaluating it apart from the search." in said
    )
    baseline = study.user_attrs["baseline"]
    assert baseline["how"] == "separate" and baseline["state"] == "COMPLETE"
    assert 0 < baseline["value"] <= 1
    assert len(study.trials) == 2 and all("grid_id" in t.system_attrs for t in study.trials)
