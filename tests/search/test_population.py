"""--strategy pbt through the library and the command: members are Optuna trials with lineage,
faults end as for searches, refusals are one line, the winner is confirmed and exported."""

import importlib.util
import signal
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from adamtune.cli.app import cli
from adamtune.config.adam import AdamConfig
from adamtune.config.phases import learning_rates, values_at
from adamtune.config.settings import SearchSettings
from adamtune.errors import ConfigError, SpaceError, StudyError
from adamtune.results.report import gain_report
from adamtune.search.population import trajectory_values
from adamtune.search.run import run_search
from adamtune.tracking import NullTracker


class Recorder(NullTracker):
    def __init__(self):
        self.records = {}

    def end_trial(self, record):
        self.records[record.number] = record


def settings(storage, **changes):
    base = dict(
        task="digits-mlp",
        storage=storage,
        strategy="pbt",
        population=8,
        epochs=4,
        pbt_interval=1,
        study_name="p",
    )
    return SearchSettings(**{**base, **changes})


def test_members_are_trials_with_their_lineage_trajectory_and_schedule(storage):
    tracker = Recorder()
    study = run_search(settings(storage), tracker=tracker)
    trials = study.get_trials()
    assert study.user_attrs["strategy"] == "pbt"
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs["baseline"] and trials[0].user_attrs["anchor"]  # a member
    assert sum(t.user_attrs["anchor"] for t in trials) == 2  # --anchors 0.25 of 8
    copied = [t for t in trials if t.user_attrs["lineage"]]
    assert copied and not any(t.user_attrs["anchor"] for t in copied)
    numbers = {t.number for t in trials}
    for t in trials:
        assert len(t.intermediate_values) == 4  # reported every evaluation, never pruned
        steps = t.user_attrs["total_steps"]
        record = tracker.records[t.number]
        every = trajectory_values(t.user_attrs["trajectory"], steps)
        assert record.hyperparameters["beta2"] == [c.beta2 for c in every]
        assert record.hyperparameters["weight_decay"] == [c.weight_decay for c in every]
        assert len(record.learning_rates) == steps
        for exploit in t.user_attrs["lineage"]:
            assert exploit["copied"] in numbers and exploit["copied"] != t.number
        schedule = AdamConfig.from_dict(t.user_attrs["config"])
        assert bool(schedule.phases) == bool(t.user_attrs["lineage"])


def test_a_population_is_not_resumed_nor_searched_on_and_says_so(storage):
    run_search(settings(storage, population=4, epochs=2))
    with pytest.raises(StudyError, match="already holds 4 trials .* cannot be resumed"):
        run_search(settings(storage, population=4, epochs=2))
    with pytest.raises(StudyError, match="holds a population .* a search cannot add trials"):
        run_search(settings(storage, strategy="search"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stack": 1}, "--stack 1 cannot be one: use --stack auto or N >= 2"),
        ({"optimizer": "torch"}, "--optimizer torch cannot be one"),
        ({"sampler": "grid"}, "--sampler grid cannot be one"),
        ({"n_jobs": 2, "stack": "auto"}, "--n-jobs 2 cannot be one"),
        ({"population": 1}, "--population: must be an integer in"),
        ({"anchors": 0.9}, "--anchors: must be a share in"),
        ({"strategy": "evolve"}, "--strategy: must be one of search, pbt"),
    ],
)
def test_what_a_population_cannot_be_is_refused_in_one_line(storage, changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        settings(storage, **changes)
    assert "\n" not in str(caught.value)


def test_a_task_that_cannot_stack_or_a_space_over_the_kernel_is_refused(storage, tmp_path):
    path = tmp_path / "loop.py"
    path.write_text(
        "from adamtune.tasks import resolve_task\n"
        "from dataclasses import replace\n"
        "def train(trial):\n"
        "    for epoch in range(trial.epochs):\n"
        "        trial.report(0.5, epoch + 1)\n"
        "    return 0.5\n"
    )
    with pytest.raises(StudyError, match="--strategy pbt: task .* cannot be stacked"):
        run_search(settings(storage, task=f"{path}:train"))
    space = tmp_path / "s.yaml"
    space.write_text("lr: {low: 1.0e-4, high: 1.0e-2}\namsgrad: {choices: [true, false]}\n")
    with pytest.raises(SpaceError, match="amsgrad: --strategy pbt"):
        run_search(settings(storage, space=str(space)))


def test_an_interrupt_fails_every_member_and_leaves_none_running(storage):
    def interrupt(rows):
        if rows[0][1] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(settings(storage), on_stack=interrupt)
    study = optuna.load_study(study_name="p", storage=storage)
    assert all(t.state == TrialState.FAIL for t in study.trials)
    assert {t.user_attrs["fail_reason"] for t in study.trials} == {
        "interrupted (Ctrl-C or SIGTERM)"
    }


def test_timeout_ends_the_population_at_the_next_interval(storage):
    study = run_search(settings(storage, timeout=0.001, pbt_interval=2))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert {len(t.intermediate_values) for t in study.trials} == {2}


def test_the_winners_schedule_is_confirmed_from_scratch_beside_the_best_fixed_one(storage):
    study = run_search(settings(storage, confirm=2))
    candidates = study.user_attrs["confirmation"]["candidates"]
    roles = {c.get("role") for c in candidates}
    assert roles <= {"schedule", "fixed"} and roles
    best = max(study.trials, key=lambda t: t.value)
    assert candidates and any(c["trial"] == best.number for c in candidates)
    report = gain_report(study.user_attrs, best, "val_accuracy", True)
    if "schedule" in roles:
        assert "replayed from scratch" in report and "best fixed configuration" in report


def _load(path):
    spec = importlib.util.spec_from_file_location("exported", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_command_shows_and_exports_the_winners_schedule(in_tmp):
    import torch

    runner = CliRunner()
    args = ["search", "--task", "digits-mlp", "--strategy", "pbt", "--population", "8"]
    args += ["--epochs", "4", "--pbt-interval", "1", "--no-tracking", "--study-name", "p"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="p", storage="sqlite:///adamtune.db")
    member = next(t for t in study.trials if t.user_attrs.get("lineage"))
    config = AdamConfig.from_dict(member.user_attrs["config"])
    total = member.user_attrs["total_steps"]
    shown = runner.invoke(cli, ["show", "p"])
    for fmt in ("torch", "hf", "adamtune"):
        out = in_tmp / f"{fmt}.py"
        done = runner.invoke(
            cli, ["export", "p", "--trial", str(member.number), "--format", fmt, "-o", str(out)]
        )
        assert done.exit_code == 0, done.output
        module = _load(out)
        for steps in (total, 3 * total + 7):  # the recorded length, and another
            model = torch.nn.Linear(2, 2)
            optimizer = module.build_optimizer(model.parameters())
            scheduler = module.build_scheduler(optimizer, steps)
            want = learning_rates(config, steps)
            for step in range(steps):
                group, values = optimizer.param_groups[0], values_at(config, step, steps)
                assert group["lr"] == want[step]
                assert tuple(group["betas"]) == values.betas
                assert (group["eps"], group["weight_decay"]) == (values.eps, values.weight_decay)
                optimizer.step()
                scheduler.step()
    for fmt in ("yaml", "json"):
        out = in_tmp / f"w.{fmt}"
        runner.invoke(
            cli, ["export", "p", "--trial", str(member.number), "--format", fmt, "-o", str(out)]
        )
        assert AdamConfig.from_file(out) == config
    lightning = in_tmp / "l.py"
    runner.invoke(
        cli,
        [
            "export",
            "p",
            "--trial",
            str(member.number),
            "--format",
            "lightning",
            "-o",
            str(lightning),
        ],
    )
    compile(lightning.read_text(), str(lightning), "exec")
    assert "The schedule its weights trained with" in shown.output or "segment" in shown.output
    assert signal.SIGTERM  # the command's SIGTERM is Ctrl-C's (tests/faults)


def test_a_population_is_one_process(storage):
    from adamtune.search.launch import search
    from adamtune.storage.claims import take

    with pytest.raises(ConfigError, match="--workers 2 cannot be one"):
        search(settings(storage), workers=2)
    # a second process started on the same new study finds the population claimed
    study = optuna.create_study(study_name="p", storage=storage, direction="maximize")
    study.set_user_attr("task", "digits-mlp")
    assert take(study, "population") is not None
    with pytest.raises(StudyError, match="another process trains the population of study 'p'"):
        run_search(settings(storage, baseline=False))


@pytest.mark.slow
def test_mlflow_holds_every_members_values_per_step_the_plot_and_the_lineage(storage, tmp_path):
    import json

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = run_search(settings(storage, tracking_uri=uri, population=4, epochs=3))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("p")
    found = client.search_runs([experiment.experiment_id])
    parent = next(r for r in found if "mlflow.parentRunId" not in r.data.tags)
    paths = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/population_lr.png" in paths
    path = client.download_artifacts(parent.info.run_id, "population/lineage.json")
    lineage = json.loads(Path(path).read_text())
    assert set(lineage) == {str(t.number) for t in study.trials}
    member = study.trials[-1]
    run = next(r for r in found if r.data.tags.get("adamtune.trial_number") == str(member.number))
    steps = member.user_attrs["total_steps"]
    for name in ("lr", "beta1", "beta2", "eps", "weight_decay"):
        assert len(client.get_metric_history(run.info.run_id, name)) == steps, name


def test_the_command_says_that_n_trials_does_not_apply(in_tmp):
    args = ["search", "--task", "digits-mlp", "--strategy", "pbt", "--population", "4"]
    args += ["--epochs", "2", "--no-tracking", "--n-trials", "50"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Warning: --n-trials 50 does not apply to --strategy pbt" in result.output
    study = optuna.load_study(study_name="digits-mlp-default", storage="sqlite:///adamtune.db")
    assert len(study.trials) == 4


def test_an_interrupt_while_members_are_asked_leaves_none_running(storage, monkeypatch):
    from adamtune.search.objective import Objective

    real = Objective.begin
    calls = []

    def begin(self, trial):
        calls.append(trial.number)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, trial)

    monkeypatch.setattr(Objective, "begin", begin)
    with pytest.raises(KeyboardInterrupt):
        run_search(settings(storage))
    study = optuna.load_study(study_name="p", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
