"""The examples in the README and docs/ are code users copy: they must work as written."""

import re
from pathlib import Path

import pytest
import torch

from adamtune.config.settings import SearchSettings
from adamtune.optim import FusedAdam
from adamtune.search.run import run_search
from adamtune.space.search_space import load_space

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
MANUAL = README + "".join(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))


def block(language: str, first_line: str) -> str:
    for code in re.findall(rf"```{language}\n(.*?)```", MANUAL, flags=re.S):
        if code.startswith(first_line):
            return code
    raise AssertionError(f"README and docs/ have no {language} block starting with {first_line!r}")


def test_setup_commands_come_first():
    commands = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[:2]
    assert commands[0].strip() == "pip install torch==2.13.0 -e . && adamtune search"
    assert commands[1].strip() == 'pip install torch==2.13.0 -e ".[test]" && pytest'


def test_ci_runs_the_readme_test_command():
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert 'pip install --quiet --disable-pip-version-check torch==2.13.0 -e ".[test]"' in ci
    assert "&& python3 -m pytest" in ci


@pytest.fixture
def readme_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_task.py").write_text(block("python", "# my_task.py"))
    (tmp_path / "my-space.yaml").write_text(block("yaml", "# AdamW, short budget"))
    return tmp_path


def test_the_example_space_and_task_run_a_study(readme_files):
    space = load_space("my-space.yaml")
    assert set(space.searched) == {"lr", "one_minus_beta2", "weight_decay"}
    study = run_search(
        SearchSettings(task="my_task.py:make_task", space="my-space.yaml", n_trials=2)
    )
    assert study.best_value > 0.8
    assert study.user_attrs["task"] == "moons-mlp"


def test_the_per_row_example_runs():
    code = block("python", "n = 32")
    namespace = {"torch": torch, "FusedAdam": FusedAdam}
    exec(code, namespace)
    weights, opt = namespace["weights"], namespace["opt"]
    weights.grad = torch.randn_like(weights)
    opt.step()
    assert opt.state[weights]["step"].item() == 1


def test_the_dataset_task_example_runs_a_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_dataset_task.py").write_text(block("python", "# my_dataset_task.py"))
    said = []
    study = run_search(
        SearchSettings(task="my_dataset_task.py:make_task", space="lr-only", n_trials=3),
        warn=said.append,
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.best_value < 16  # better than guessing among 16 tokens
    assert not any("cannot be stacked" in line for line in said)
    assert any(line.startswith("--stack auto: ") for line in said)  # it stacks, or says why not


def test_the_model_section_example_loads(tmp_path):
    path = tmp_path / "with-model.yaml"
    path.write_text(block("yaml", "lr: {low: 1.0e-4, high: 1.0e-2}\nmodel:"))
    assert load_space(str(path)).model == {
        "width": ("categorical", [64, 128]),
        "dropout": ("fixed", 0.1),
    }
