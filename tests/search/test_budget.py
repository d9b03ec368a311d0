"""--timeout is the whole command's budget: the search's share, then the confirmation's, sized
from the search's measured speed; a trial still training at the end of its share is pruned."""

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from adamtune.search.budget import CONFIRM_SHARE, Budget
from adamtune.search.confirm import _in_time
from adamtune.training.runner import OUT_OF_TIME, Evaluated

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))


def test_the_search_gets_its_share_and_confirmation_the_rest():
    budget = Budget(100.0, confirms=True, started=1000.0)
    assert budget.search_deadline == 1000.0 + (1 - CONFIRM_SHARE) * 100
    assert budget.deadline == 1100.0
    assert Budget(100.0, confirms=False, started=0.0).search_deadline == 100.0
    assert Budget(None, confirms=True).search_deadline is None
    assert "the search has 75 s" in (budget.split_line() or "")


def test_confirmation_is_sized_to_what_is_left_at_the_searchs_speed(monkeypatch):
    now = 1000.0
    monkeypatch.setattr("adamtune.search.budget.time.monotonic", lambda: now)
    budget = Budget(100.0, confirms=True, started=925.0)
    budget.searched(trial_epochs=750)  # 75 s of search: 10 trial-epochs a second
    # 25 s left: 250 trial-epochs, 12 runs of 20 epochs: the top 3 and the baseline, 3 seeds
    assert budget.confirmation_size(top=5, seeds=3, epochs=20) == (3, 3)
    assert budget.confirmation_size(top=2, seeds=3, epochs=20) == (2, 3)
    # 6 runs fit: the winner and the baseline under 3 seeds; 4 runs: under 2 seeds, never fewer
    assert budget.confirmation_size(top=5, seeds=3, epochs=40) == (1, 3)
    assert budget.confirmation_size(top=5, seeds=3, epochs=60) == (1, 2)
    said = budget.confirmation_size(top=5, seeds=3, epochs=200)
    assert (
        isinstance(said, str) and said.startswith("Confirmation: skipped") and "--timeout" in said
    )


def test_seeds_not_every_candidate_finished_in_time_are_left_out():
    def run(seed, value):
        return (
            Evaluated(seed, value)
            if value is not None
            else Evaluated(seed, None, reason=OUT_OF_TIME)
        )

    results = [[run(1, 0.9), run(2, 0.8), run(3, None)], [run(1, 0.7), run(2, None), run(3, None)]]
    said = []
    seeds, kept = _in_time([1, 2, 3], results, said.append)
    assert seeds == [1] and [[r.value for r in runs] for runs in kept] == [[0.9], [0.7]]
    assert "seeds 2, 3" in said[0]


SLOW = """
import time
import torch
from torch.nn import functional as F
from adamtune import Task, accuracy


def make_task():  # a trial of 6 epochs takes about 3 s
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()

    def loss(outputs, targets):
        time.sleep(0.125)
        return F.cross_entropy(outputs, targets)

    return Task("slow", lambda: torch.nn.Linear(4, 2), (x, y), (x, y), loss, accuracy,
                "val_accuracy", "maximize", epochs=6, batch_size=16)
"""


@pytest.mark.slow
@pytest.mark.parametrize("confirm", ["3", "0"])
def test_timeout_bounds_the_whole_command(tmp_path, confirm):
    (tmp_path / "slow_task.py").write_text(SLOW)
    budget = 14
    started = time.monotonic()
    result = subprocess.run(
        [ADAMTUNE, "search", "--task", "slow_task.py:make_task", "--space", "lr-only"]
        + ["--timeout", str(budget), "--n-trials", "100", "--stack", "1", "--no-tracking"]
        + ["--pruner", "none", "--confirm", confirm],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "ADAMTUNE_CONFIRM": confirm},
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Budget: --timeout 14 s for the whole command" in result.stderr
    assert took < budget * 1.1 + 1.0, (took, result.stderr)  # the stated margin: 10% + 1 s
    study = optuna.load_study(
        study_name="slow_task-make_task-lr-only", storage=f"sqlite:///{tmp_path / 'adamtune.db'}"
    )
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    late = [t for t in study.trials if "out of time" in t.user_attrs.get("pruned_reason", "")]
    assert late, "the trial training when the search's share ran out was ended there"


@pytest.mark.slow
def test_a_population_fills_its_budget_with_generations(tmp_path):
    from adamtune.config.settings import SearchSettings
    from adamtune.search.run import run_search

    said = []
    settings = SearchSettings(
        task="digits-mlp",
        storage=f"sqlite:///{tmp_path / 's.db'}",
        strategy="pbt",
        population=4,
        epochs=2,
        timeout=12,
        study_name="p",
        confirm=0,
    )
    started = time.monotonic()
    study = run_search(settings, warn=said.append)
    took = time.monotonic() - started
    generations = [line for line in said if line.startswith("Population: generation")]
    assert generations, said  # more than one population in the budget
    assert len(study.trials) == 4 * (len(generations) + 1)
    assert all(t.state.is_finished() for t in study.trials)
    assert took < 12 * 1.1 + 1.0
    # each later generation starts from the last one's best member (its sampled values)
    second = sorted(study.trials, key=lambda t: t.number)[4]
    first_best = max(sorted(study.trials, key=lambda t: t.number)[:4], key=lambda t: t.value or 0)
    assert second.params == first_best.params
