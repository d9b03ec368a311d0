"""Values of the user's own, searched beside Adam's: trial.suggest_* in loops and in factories
that take the trial, a space's model: section, and where the values go (params, show, export,
confirmation)."""

import math

import optuna
import pytest
import torch
from torch.nn import functional as F

from adamtune.config.settings import SearchSettings
from adamtune.config.values import Values, parse_model_section
from adamtune.errors import SpaceError, TaskError
from adamtune.results.export import render
from adamtune.results.studies import exported_trial
from adamtune.search.run import run_search
from adamtune.space.search_space import load_space
from adamtune.tasks import resolve_task
from adamtune.tasks.loader import _loop_task
from adamtune.tasks.marks import training_loop
from adamtune.tracking import NullTracker


def test_values_come_from_the_optuna_trial_then_from_what_was_stored_then_defaults():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    live = Values(trial)
    dropout = live.suggest_float("dropout", 0.0, 0.5)
    width = live.suggest_int("width", 16, 128, log=True)
    act = live.suggest_categorical("act", ["relu", "gelu"])
    assert trial.params == {"dropout": dropout, "width": width, "act": act}
    assert live.values == trial.params
    assert live.suggest_float("dropout", 0.0, 0.5) == dropout  # asked twice: one value
    again = Values(stored=live.values)
    assert again.suggest_int("width", 16, 128, log=True) == width
    defaults = Values(stored={})
    assert defaults.suggest_float("dropout", 0.0, 0.5) == 0.25
    assert defaults.suggest_int("width", 16, 64, log=True) == 32  # the geometric middle
    assert defaults.suggest_float("smooth", 0.0, 0.4, step=0.1) == pytest.approx(0.2)
    assert defaults.suggest_categorical("act", ["relu", "gelu"]) == "relu"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda v: v.suggest_float("lr", 1e-4, 1e-2),
            "trial.suggest_float('lr'): 'lr' is one of Adam's values in adamtune; use another name",
        ),
        (
            lambda v: v.suggest_float("d", 0.5, 0.1),
            "trial.suggest_float('d'): low must be <= high, got low=0.5, high=0.1",
        ),
        (
            lambda v: v.suggest_float("d", 0.0, 1.0, log=True),
            "trial.suggest_float('d'): a log scale needs low > 0, got low=0.0",
        ),
        (
            lambda v: v.suggest_int("w", 1, 2.5),
            "trial.suggest_int('w'): high must be an integer, got 2.5",
        ),
        (
            lambda v: v.suggest_categorical("c", []),
            "trial.suggest_categorical('c'): choices must be a non-empty list, got []",
        ),
        (
            lambda v: v.suggest_categorical("c", [torch.nn.ReLU]),
            "trial.suggest_categorical('c'): each choice must be None, a bool, number or "
            "string, got <class 'torch.nn.modules.activation.ReLU'>",
        ),
    ],
)
def test_bad_suggestions_are_one_line(call, message):
    with pytest.raises(TaskError) as caught:
        call(Values(optuna.create_study().ask()))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"lr": 0.1}, "model.lr: 'lr' is one of Adam's values; use another name"),
        ({"d": {"low": 0.1}}, "model.d: a range needs low and high, got {'low': 0.1}"),
        ({"d": {"low": 1, "high": 2, "scale": 3}}, "model.d: unknown key 'scale'"),
        ({"d": {"choices": [1, 1]}}, "model.d.choices: holds a value twice: [1, 1]"),
        ({"d": {"low": 0.5, "high": 0.1}}, "model.d: low must be <= high, got low=0.5, high=0.1"),
        ([1], "model: must be a mapping of value names, got [1]"),
    ],
)
def test_a_bad_model_section_is_one_line(section, message):
    with pytest.raises(SpaceError) as caught:
        parse_model_section(section)
    assert str(caught.value).startswith(message)


def width_loop():
    def body(trial):
        hidden = trial.suggest_int("hidden", 2, 64, log=True)
        scale = trial.suggest_float("scale", 0.5, 2.0)
        torch.manual_seed(trial.seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )
        optimizer = trial.optimizer(model.parameters())
        x = torch.randn(64, 3)
        y = scale * x.sum(1, keepdim=True)
        for epoch in range(trial.epochs):
            loss = F.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trial.report(loss.item(), epoch)
        return {"val_loss": loss.item(), "hidden_seen": float(hidden)}

    return _loop_task("test", "width_loop", training_loop("val_loss", "minimize", epochs=3)(body))


class Runs(NullTracker):
    def __init__(self):
        self.runs = []

    def log_run(self, name, record):
        self.runs.append(record)


def test_a_loops_values_are_searched_stored_and_retrained_for_confirmation(storage):
    tracker = Runs()
    study = run_search(
        SearchSettings(
            task="x", storage=storage, n_trials=4, space="lr-only", baseline=False,
            confirm=2, confirm_top=2,
        ),
        task=width_loop(),
        tracker=tracker,
    )  # fmt: skip
    assert len(tracker.runs) == 4
    for run in tracker.runs:  # each confirmation run trained its trial's own width
        hidden = study.trials[run.number].user_attrs["values"]["hidden"]
        assert run.final_metrics["hidden_seen"] == hidden
    for trial in study.trials:
        values = trial.user_attrs["values"]
        assert set(values) == {"hidden", "scale"}
        assert trial.params["hidden"] == values["hidden"]  # the sampler's own params
        assert trial.user_attrs["metrics"]["hidden_seen"] == values["hidden"]
    assert len({t.user_attrs["values"]["hidden"] for t in study.trials}) > 1
    confirmation = study.user_attrs["confirmation"]
    for candidate in confirmation["candidates"]:  # retrained with its own values: finished
        assert len(candidate["values"]) == 2, candidate
        assert all(v is not None and not math.isnan(v) for v in candidate["values"])
    exported = exported_trial(study)  # the confirmed winner
    own = study.trials[exported.trial_number].user_attrs["values"]
    assert exported.values == own
    namespace: dict = {}
    exec(render(exported, "torch"), namespace)
    assert namespace["VALUES"] == own


def test_the_baseline_trial_takes_the_values_defaults(storage):
    study = run_search(
        SearchSettings(task="x", storage=storage, n_trials=2, space="lr-only", stack=1),
        task=width_loop(),
    )
    baseline = study.trials[study.user_attrs["baseline"]["trial"]]
    assert baseline.user_attrs["values"] == {"hidden": 11, "scale": 1.25}  # sqrt(2*64), (0.5+2)/2
    assert "hidden" not in baseline.params  # no draw of the sampler's


def test_a_space_model_section_narrows_what_the_code_asks_for(storage, tmp_path):
    (tmp_path / "narrow.yaml").write_text(
        "lr: {low: 1.0e-3, high: 1.0e-2}\nmodel:\n  hidden: {choices: [4, 8]}\n  scale: 1.5\n"
    )
    study = run_search(
        SearchSettings(
            task="x", storage=storage, n_trials=4, space=str(tmp_path / "narrow.yaml"),
            baseline=False,
        ),
        task=width_loop(),
    )  # fmt: skip
    for trial in study.trials:
        assert trial.user_attrs["values"]["hidden"] in (4, 8)
        assert trial.user_attrs["values"]["scale"] == 1.5


FACTORY = """
import torch
from torch.nn import functional as F
from adamtune import Task, accuracy

def make_task(trial) -> Task:
    width = trial.suggest_categorical("width", [4, 32])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()
    return Task(
        "xor", lambda: torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(),
                                           torch.nn.Linear(width, 2)),
        (x[:96], y[:96]), (x[96:], y[96:]), F.cross_entropy, accuracy, "val_accuracy",
        "maximize", epochs=2, batch_size=32,
    )
"""


def test_a_factory_that_takes_the_trial_builds_each_trials_task_from_its_values(storage, tmp_path):
    (tmp_path / "xor_task.py").write_text(FACTORY)
    spec = f"{tmp_path / 'xor_task.py'}:make_task"
    task = resolve_task(spec)
    assert task.per_trial is not None and task.name == "xor"
    said = []
    study = run_search(
        SearchSettings(task=spec, storage=storage, n_trials=6, space="lr-only", baseline=False),
        warn=said.append,
    )
    assert any(
        "cannot be stacked (its factory takes the trial, so each trial builds its own task "
        "from its values); one at a time" in line
        for line in said
    )
    widths = {t.user_attrs["values"]["width"] for t in study.trials}
    assert widths == {4, 32}
    for trial in study.trials:  # each trial trained the model its own width builds
        assert trial.state == optuna.trial.TrialState.COMPLETE


def test_a_model_section_for_a_task_that_reads_no_values_is_refused(storage, tmp_path):
    (tmp_path / "m.yaml").write_text("lr: 1.0e-3\nmodel:\n  dropout: {low: 0.0, high: 0.5}\n")
    with pytest.raises(SpaceError, match=r"model: dropout: task 'digits-mlp' reads no values"):
        run_search(
            SearchSettings(
                task="digits-mlp", storage=storage, n_trials=1, space=str(tmp_path / "m.yaml")
            )
        )


def test_a_yaml_export_with_values_loads_back_as_a_space(tmp_path):
    from dataclasses import replace

    from adamtune.config.adam import AdamConfig
    from tests.results.test_export import exported

    trial = replace(exported(AdamConfig(lr=0.01)), values={"dropout": 0.2, "width": 64})
    (tmp_path / "best.yaml").write_text(render(trial, "yaml"))
    space = load_space(str(tmp_path / "best.yaml"))
    assert space.model == {"dropout": ("fixed", 0.2), "width": ("fixed", 64)}
