import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from adamtune.config.settings import SearchSettings
from adamtune.errors import StudyError
from adamtune.results.studies import load_study, top_trials
from adamtune.search.run import run_search


def settings(storage, **overrides):
    base = dict(
        task="digits-mlp", storage=storage, n_trials=3, epochs=2, space="lr-only", study_name="s"
    )
    return SearchSettings(**{**base, **overrides})


def test_search_records_config_and_metrics_as_user_attributes(storage):
    study = run_search(settings(storage))
    assert len(study.trials) == 3
    trial = study.best_trial
    assert set(trial.user_attrs) >= {"config", "seed", "metrics", "total_steps", "seconds"}
    assert trial.user_attrs["config"]["lr"] == trial.params["lr"]
    assert trial.user_attrs["metrics"]["val_accuracy"] == trial.value
    assert study.user_attrs["task"] == "digits-mlp"
    assert study.user_attrs["metric"] == "val_accuracy"


def test_resume_adds_trials_and_keeps_completed_ones(storage):
    first = run_search(settings(storage))
    before = {t.number: (t.params, t.value) for t in first.trials}
    second = run_search(settings(storage, n_trials=2))
    assert len(second.trials) == 5
    assert {t.number: (t.params, t.value) for t in second.trials[:3]} == before
    # the resumed sampler draws new points rather than replaying the first three
    assert all(t.params not in [p for p, _ in before.values()] for t in second.trials[3:])


def test_same_seed_gives_the_same_study(tmp_path):
    a = run_search(settings(f"sqlite:///{tmp_path / 'a.db'}", sampler="random"))
    b = run_search(settings(f"sqlite:///{tmp_path / 'b.db'}", sampler="random"))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]


def test_a_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(storage, tmp_path):
    space = tmp_path / "hot.yaml"
    space.write_text("lr: {choices: [10.0, 0.001]}\n")
    study = run_search(settings(storage, space=str(space), n_trials=4, sampler="random"))
    states = {t.params["lr"]: t.state for t in study.trials}
    assert states[10.0] == TrialState.PRUNED
    assert states[0.001] == TrialState.COMPLETE
    pruned = next(t for t in study.trials if t.state == TrialState.PRUNED)
    assert pruned.user_attrs["pruned_reason"].startswith("diverged: loss became")


def test_consecutive_failures_stop_the_study_with_a_clear_message(storage, tmp_path):
    task = tmp_path / "broken.py"
    task.write_text(
        "import torch\nfrom torch.nn import functional as F\nfrom adamtune import Task, accuracy\n"
        "def make_task():\n"
        "    g = torch.Generator().manual_seed(0)  # the same data every run: the study resumes\n"
        "    x, y = torch.randn(8, 2, generator=g), torch.zeros(8, dtype=torch.long)\n"
        "    calls = []\n"
        "    def boom(o, t):\n"
        "        calls.append(1)\n"
        "        if len(calls) > 1:  # the first is adamtune's one-batch try\n"
        "            raise ValueError('metric exploded')\n"
        "        return 0.0\n"
        "    return Task('broken', lambda: torch.nn.Linear(2, 2), (x, y), (x, y),\n"
        "                F.cross_entropy, boom, 'm', 'maximize', 1, 4)\n"
    )
    with pytest.raises(
        StudyError,
        match="stopped after 2 failed trials in a row; last: ValueError: metric exploded",
    ):
        run_search(
            settings(
                storage,
                task=f"{task}:make_task",
                n_trials=10,
                max_consecutive_failures=2,
                stack=1,
            )
        )
    study = load_study("s", storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert study.trials[0].user_attrs["fail_reason"] == "ValueError: metric exploded"
    # Stacked (the default), the rows already running fail with it; none starts after.
    from adamtune.tasks import resolve_task

    resolve_task.cache_clear()  # as in a new process: its one-batch try passes again
    with pytest.raises(
        StudyError,
        match="stopped after 4 failed trials in a row; last: ValueError: metric exploded",
    ):
        run_search(
            settings(
                storage,
                task=f"{task}:make_task",
                n_trials=10,
                max_consecutive_failures=2,
                stack=4,
            )
        )
    assert [t.state for t in load_study("s", storage).trials] == [TrialState.FAIL] * 6


def test_resuming_with_another_task_is_refused(storage):
    run_search(settings(storage, n_trials=1))
    with pytest.raises(StudyError, match="created for task 'digits-mlp', not 'wine-mlp'"):
        run_search(settings(storage, task="wine-mlp"))


def test_unknown_study_lists_the_known_ones(storage):
    run_search(settings(storage, n_trials=1))
    with pytest.raises(StudyError, match=r"no study 'x' in .* \(studies there: s\)"):
        load_study("x", storage)


@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "random", "qmc"])
@pytest.mark.parametrize("pruner", ["median", "hyperband", "sha", "none"])
def test_every_sampler_and_pruner_runs(storage, sampler, pruner):
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # a raw Python warning is no message
        warnings.simplefilter("always", optuna.exceptions.ExperimentalWarning)
        study = run_search(
            settings(storage, sampler=sampler, pruner=pruner, n_trials=2, space="default", epochs=2)
        )
    assert [
        str(w.message) for w in caught if w.category is optuna.exceptions.ExperimentalWarning
    ] == []
    assert len(study.trials) == 2
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials), [
        t.user_attrs.get("fail_reason") for t in study.trials
    ]
    assert study.trials[0].state == TrialState.COMPLETE  # nothing to compare with: never pruned


def test_parallel_jobs_share_the_study(storage):
    study = run_search(settings(storage, n_trials=4, n_jobs=2))
    assert len(study.trials) == 4
    assert len({t.number for t in study.trials}) == 4
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_top_trials_are_sorted_best_first(storage):
    study = run_search(settings(storage, n_trials=4, sampler="random"))
    values = [t.value for t in top_trials(study, 3)]
    assert values == sorted(values, reverse=True) and len(values) == 3


def test_official_optuna_cli_reads_the_study(storage):
    run_search(settings(storage, n_trials=2))
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run(
        [str(optuna_cli), "trials", "--storage", storage, "--study-name", "s", "-f", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    trials = json.loads(out)
    assert len(trials) == 2
    assert "lr" in trials[0]["params"] and "config" in trials[0]["user_attrs"]


def test_journal_storage_works(tmp_path):
    study = run_search(settings(f"journal:{tmp_path / 'j.log'}", n_trials=2))
    assert len(optuna.load_study(study_name="s", storage=study._storage).trials) == 2


def write_task(
    tmp_path, name, *, metric="accuracy", metric_name="val_accuracy", direction="maximize"
):
    path = tmp_path / f"{name}.py"
    path.write_text(
        "import torch\nfrom torch.nn import functional as F\nfrom adamtune import Task, accuracy\n"
        "def nan_metric(o, t):\n    return float('nan')\n"
        "def text_metric(o, t):\n    return 'high'\n"
        "def make_task():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.randn(32, 2, generator=g)\n"
        "    y = (x[:, 0] > 0).long()\n"
        f"    return Task({name!r}, lambda: torch.nn.Linear(2, 2), (x, y), (x, y),\n"
        f"                F.cross_entropy, {metric}, {metric_name!r}, {direction!r}, 2, 8)\n"
    )
    return f"{path}:make_task"


def test_resuming_in_the_other_direction_is_refused(storage, tmp_path):
    up = write_task(tmp_path, "t", direction="maximize")
    run_search(settings(storage, task=up, n_trials=1))
    down = write_task(tmp_path, "t", direction="minimize")
    from adamtune.tasks import resolve_task

    resolve_task.cache_clear()
    with pytest.raises(
        StudyError,
        match="study 's' was created to maximize its metric, but task 't' asks to minimize "
        "val_accuracy; pass --study-name",
    ):
        run_search(settings(storage, task=down, n_trials=1))
    assert len(load_study("s", storage).trials) == 1


def test_resuming_with_other_parameter_types_is_refused_before_any_trial(storage, tmp_path):
    run_search(settings(storage, n_trials=1))
    space = tmp_path / "choices.yaml"
    space.write_text("lr: {choices: [0.001, 0.01]}\n")
    with pytest.raises(StudyError, match="parameter lr was searched as a log float range"):
        run_search(settings(storage, space=str(space)))
    assert len(load_study("s", storage).trials) == 1


def test_a_nan_metric_fails_the_trial_with_its_reason(storage, tmp_path):
    task = write_task(tmp_path, "nan", metric="nan_metric")
    with pytest.raises(StudyError, match="val_accuracy is nan"):
        run_search(settings(storage, task=task, n_trials=3, max_consecutive_failures=2))
    trial = load_study("s", storage).trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "val_accuracy is nan (not a finite number)"


def test_a_metric_that_is_not_a_number_is_one_line_before_any_trial(storage, tmp_path):
    from adamtune.errors import TaskError

    task = write_task(tmp_path, "text", metric="text_metric")
    with pytest.raises(TaskError) as info:  # the one-batch try finds it
        run_search(settings(storage, task=task, n_trials=3, max_consecutive_failures=2, stack=1))
    assert str(info.value) == "task 'text': metric must return a number, got 'high' (str)"
    assert optuna.get_all_study_names(storage) == []  # nothing made, nothing trained


def test_a_task_metric_named_train_loss_is_not_overwritten(storage, tmp_path):
    task = write_task(tmp_path, "tl", metric_name="train_loss")
    study = run_search(settings(storage, task=task, n_trials=1))
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["metrics"]["train_loss"] == trial.value
    assert 0.0 <= trial.value <= 1.0  # the task's accuracy, not a mean cross-entropy


def test_a_resumed_seed_near_the_limit_wraps_around(storage):
    study = run_search(settings(storage, n_trials=2, seed=2**32 - 1, sampler="random"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len(run_search(settings(storage, n_trials=1, seed=2**32 - 1)).trials) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(seed=2**32), "--seed: must be an integer in [0, 4294967295], got 4294967296"),
        (dict(timeout=float("nan")), "--timeout: must be a finite number of seconds > 0, got nan"),
        (dict(epochs=10**13), "--epochs: must be an integer in [1, 1000000], got 10000000000000"),
        (dict(device="meta"), "--device: must be auto, cpu, cuda, cuda:N or mps, got 'meta'"),
        (
            dict(sampler="bayes"),
            "--sampler: must be one of tpe, gp, cmaes, random, qmc, grid, got 'bayes'",
        ),
        (dict(study_name="x" * 513), "--study-name: must be at most 512 characters, got 513"),
    ],
)
def test_settings_refuse_bad_values_when_built(overrides, message):
    from adamtune.errors import AdamtuneError

    with pytest.raises(AdamtuneError) as info:
        SearchSettings(**overrides)
    assert str(info.value) == message


@pytest.mark.parametrize("stack", [1, "auto"])
def test_patience_ends_trials_at_their_best_and_records_where(storage, stack, tmp_path):
    from mlflow import MlflowClient

    from adamtune.results.export import render
    from adamtune.results.studies import load_trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = run_search(
        settings(
            storage,
            task="mnist1d-mlp",
            n_trials=4,
            epochs=12,
            patience=2,
            pruner="none",
            sampler="random",
            stack=stack,
            tracking_uri=uri,
        )
    )
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    params = {r.info.run_name: r.data.params for r in runs}
    stopped_early = 0
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        best_epoch, best_step = trial.user_attrs["best_epoch"], trial.user_attrs["best_step"]
        assert trial.value == max(trial.intermediate_values.values())
        assert trial.intermediate_values[best_epoch] == trial.value
        assert best_step == best_epoch * 32  # mnist1d-mlp: 32 steps an epoch
        run = params[f"trial-{trial.number}"]
        assert (run["best_epoch"], run["best_step"]) == (str(best_epoch), str(best_step))
        stopped_early += len(trial.intermediate_values) < 12
    assert stopped_early  # some trial stopped before its 12 epochs
    best = load_trial("s", storage)
    text = render(best, "torch")
    assert f"optimizer steps; early stopping took the weights after step {best.best_step}\n" in text


def test_a_budget_inside_tpes_random_start_is_said_to_be_a_random_search(storage):
    said = []
    run_search(settings(storage, n_trials=2, epochs=1), warn=said.append)
    assert [line for line in said if line.startswith("Note:")] == [
        "Note: TPE draws its first 10 trials at random, so these 2 are a random search "
        "(the lr-only space, seeded by --seed 0: the same points on every task); --n-trials 30 "
        "or more lets it learn from them."
    ]


@pytest.mark.parametrize(
    ("overrides", "already"),
    [({"n_trials": 11}, 0), ({"n_trials": 9}, 2), ({"n_trials": 3, "sampler": "random"}, 0)],
)
def test_no_random_start_line_past_the_start_up_or_for_other_samplers(overrides, already):
    from adamtune.search.study import say_random_start

    study = optuna.create_study()
    for _ in range(already):
        study.add_trial(optuna.trial.create_trial(value=1.0))
    said = []
    say_random_start(settings("sqlite://", **overrides), study, said.append)
    assert said == []


def test_a_study_with_no_completed_trial_says_no_confirming_line(storage, tmp_path):
    from adamtune.tasks.loader import _loop_task
    from adamtune.tasks.marks import training_loop

    def body(trial):
        raise RuntimeError("no data")

    said = []
    study = run_search(
        settings(storage, task="x", n_trials=2, confirm=3, max_consecutive_failures=0),
        task=_loop_task("x", "body", training_loop()(body)),
        warn=said.append,
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert not [line for line in said if line.startswith("Confirming")], said
