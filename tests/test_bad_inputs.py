"""A corpus of bad inputs: each is one line on stderr, a non-zero exit, no traceback, and the
study that was already in storage is left exactly as it was."""

import optuna
import pytest
from click.testing import CliRunner

from adamtune.cli import cli

BAD_SPACES = {
    "yaml-syntax.yaml": "lr: [1e-3\n",
    "unknown-key.yaml": "lr: 1e-3\nmomentum: 0.9\n",
    "missing-bound.yaml": "lr: {low: 1e-4}\n",
    "low-above-high.yaml": "lr: {low: 1e-2, high: 1e-3}\n",
    "log-low-zero.yaml": "eps: {low: 0, high: 1e-3, log: true}\n",
    "beta-above-one.yaml": "beta2: {low: 0.9, high: 1.5}\n",
    "negative-lr.yaml": "lr: -0.1\n",
    "negative-weight-decay.yaml": "weight_decay: -1\n",
    "unknown-schedule.yaml": "schedule:\n  kind: polynomial\n",
}
BAD_TASKS = {
    "not_a_task.py": "def make_task():\n    return 42\n",
    "raises.py": "def make_task():\n    raise RuntimeError('no data')\n",
    "syntax_error.py": "def make_task(:\n",
}
CASES = [
    *[["search", "--space", name] for name in BAD_SPACES],
    ["search", "--space", "no-such-space"],
    ["search", "--space", "missing/file.yaml"],
    ["search", "--n-trials", "0"],
    ["search", "--n-trials", "many"],
    ["search", "--sampler", "bayes"],
    ["search", "--pruner", "patient"],
    ["search", "--epochs", "-1"],
    ["search", "--timeout", "-5"],
    ["search", "--workers", "0"],
    ["search", "--device", "tpu"],
    ["search", "--no-such-flag"],
    ["search", "--task", "not_a_task.py:make_task"],
    ["search", "--task", "raises.py:make_task"],
    ["search", "--task", "syntax_error.py:make_task"],
    ["search", "--task", "missing.py:make_task"],
    ["search", "--task", "no_such_module:make_task"],
    ["search", "--task", "not_a_task.py:other"],
    ["search", "--task", "digits"],
    ["search", "--task", "digits-mlp", "--study-name", "existing"],  # created for wine-mlp
    ["search", "--storage", "nosuchdb://host/db"],
    ["search", "--storage", "not a url"],
    ["search", "--storage", "journal:"],
    ["search", "--storage", "postgresql://bob:s3cret@127.0.0.1:1/optuna"],  # nothing listens
    ["search", "--storage", "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db"],
    ["search", "--storage", "mysql+pymysql://root:s3cret@127.0.0.1:3306/test"],  # wrong password
    ["show", "ghost"],
    ["export", "ghost"],
    ["export", "existing", "--format", "hf", "--trial", "0"],
    ["spaces", "nope"],
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in {**BAD_SPACES, **BAD_TASKS}.items():
        (tmp_path / name).write_text(text)
    runner = CliRunner()
    made = runner.invoke(
        cli,
        [
            "search",
            "--task",
            "wine-mlp",
            "--study-name",
            "existing",
            "--n-trials",
            "2",
            "--epochs",
            "1",
            "--no-tracking",
            "--space",
            "adamw",
        ],
    )
    assert made.exit_code == 0, made.output
    return tmp_path


def snapshot():
    study = optuna.load_study(study_name="existing", storage="sqlite:///adamtune.db")
    return [(t.number, t.state, t.params, t.value) for t in study.trials]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a)[:60])
def test_bad_input_is_one_line_and_loses_nothing(workdir, args):
    before = snapshot()
    result = CliRunner().invoke(
        cli, [*args, "--no-tracking"] if args[0] == "search" else args, catch_exceptions=False
    )
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output + result.stderr
    assert "s3cret" not in result.output + result.stderr
    assert snapshot() == before
