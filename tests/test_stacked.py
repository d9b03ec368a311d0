"""Stacked training: every row trains exactly as its configuration would alone."""

import pytest
import torch

from adamtune.config import AdamConfig, ScheduleConfig
from adamtune.stacked import train_stacked, why_not_stackable
from adamtune.tasks import Task, accuracy, resolve_task
from adamtune.train import train

CONFIGS = [
    AdamConfig(lr=3e-3),
    AdamConfig(lr=1e-2, beta1=0.8, beta2=0.99, weight_decay=0.05),
    AdamConfig(lr=1e-3, eps=1e-6, schedule=ScheduleConfig("cosine", warmup_fraction=0.2)),
    AdamConfig(lr=5e-4, beta2=0.9999, schedule=ScheduleConfig("step", gamma=0.5, decays=2)),
]


@pytest.mark.parametrize("name", ["digits-mlp", "wine-mlp", "diabetes-mlp", "mnist1d-cnn"])
def test_each_row_trains_as_its_configuration_alone(name):
    task = resolve_task(name)
    alone = [train(task, c, seed=3, epochs=2) for c in CONFIGS]
    stacked = train_stacked(task, CONFIGS, seed=3, epochs=2)
    for single, row in zip(alone, stacked, strict=True):
        assert row.stopped is None
        assert row.learning_rates == single.learning_rates  # the same schedule, bit for bit
        # MLPs: fp32 tolerance at every step. A stacked convolution is a grouped one, which
        # sums in another order, and Adam's normalised step amplifies rounding in this CNN:
        # two lone runs that differ only in torch's convolution backend (oneDNN on or off)
        # drift apart the same way, 1e-4 after 20 steps and 4e-3 after 40 (measured).
        cnn = name == "mnist1d-cnn"
        torch.testing.assert_close(
            row.train_losses[:5], single.train_losses[:5], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            row.train_losses[: 20 if cnn else None],
            single.train_losses[: 20 if cnn else None],
            rtol=1e-3 if cnn else 1e-5,
            atol=1e-6,
        )
        for mine, theirs in zip(row.evaluations, single.evaluations, strict=True):
            assert mine.step == theirs.step
            assert mine.metrics == pytest.approx(
                theirs.metrics, rel=3e-2 if cnn else 1e-4, abs=1e-5
            )


def test_a_row_does_not_depend_on_its_stack_mates():
    task = resolve_task("digits-mlp")
    first = train_stacked(task, [CONFIGS[0], CONFIGS[1]], epochs=2)
    second = train_stacked(task, [CONFIGS[2], CONFIGS[0], CONFIGS[3]], epochs=2)
    torch.testing.assert_close(first[0].train_losses, second[1].train_losses, rtol=1e-5, atol=1e-6)
    assert first[0].metrics == pytest.approx(second[1].metrics, rel=1e-4)


def test_pruned_and_diverged_rows_leave_the_stack_and_the_others_go_on():
    task = resolve_task("digits-mlp")
    configs = [CONFIGS[0], AdamConfig(lr=10.0), CONFIGS[1], CONFIGS[2]]
    seen = []

    def on_epoch(evaluations):
        seen.extend((row, evaluation.epoch) for row, evaluation in evaluations.items())
        return {2: "pruned at epoch 1"} if (2, 1) in seen and 2 in evaluations else {}

    results = train_stacked(task, configs, epochs=3, on_epoch=on_epoch)
    assert results[1].stopped.startswith("diverged: loss became")
    assert results[2].stopped == "pruned at epoch 1"
    assert results[0].stopped is None and results[3].stopped is None
    assert (2, 2) not in seen and not any(row == 1 for row, _ in seen)
    alone = train(task, CONFIGS[2], epochs=3)
    torch.testing.assert_close(results[3].train_losses, alone.train_losses, rtol=1e-5, atol=1e-6)
    assert len(results[0].learning_rates) == 3 * task.steps_per_epoch()
    assert len(results[2].evaluations) == 1


def test_mixed_decoupling_is_refused():
    with pytest.raises(ValueError, match="group the configurations"):
        train_stacked(resolve_task("wine-mlp"), [AdamConfig(), AdamConfig(decoupled=False)])


def test_models_with_running_statistics_or_dropout_do_not_stack():
    x, y = torch.randn(16, 4), torch.zeros(16, dtype=torch.long)

    def task(*layers):
        return Task(
            "t",
            lambda: torch.nn.Sequential(torch.nn.Linear(4, 4), *layers),
            (x, y),
            (x, y),
            torch.nn.functional.cross_entropy,
            accuracy,
            "val_accuracy",
            "maximize",
            1,
            8,
        )

    assert "BatchNorm1d" in why_not_stackable(task(torch.nn.BatchNorm1d(4)))
    assert "Dropout" in why_not_stackable(task(torch.nn.Dropout(0.1)))
    assert why_not_stackable(task(torch.nn.ReLU())) is None
    assert why_not_stackable(resolve_task("mnist1d-cnn")) is None


def test_a_stacked_search_gives_each_trial_its_own_outcome(storage):
    from optuna.trial import TrialState

    from adamtune.config import AdamConfig
    from adamtune.study import SearchSettings, run_search

    settings = SearchSettings(
        storage=storage, study_name="s", n_trials=6, stack=3, epochs=2, space="default"
    )
    study = run_search(settings)
    assert len(study.trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    task = resolve_task("digits-mlp")
    for trial in study.trials:
        config = AdamConfig.from_dict(trial.user_attrs["config"])
        if trial.state == TrialState.COMPLETE:
            alone = train(task, config, epochs=2)
            assert trial.value == pytest.approx(alone.value, abs=1e-6)
            assert trial.user_attrs["metrics"]["val_loss"] == pytest.approx(
                alone.metrics["val_loss"], rel=1e-4
            )
            assert trial.user_attrs["total_steps"] == alone.total_steps
            assert len(trial.intermediate_values) == 2


def test_a_stacked_search_logs_every_row_to_mlflow(tmp_path, storage):
    from mlflow import MlflowClient

    from adamtune.study import SearchSettings, run_search

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_search(
        SearchSettings(
            storage=storage,
            study_name="s",
            n_trials=4,
            stack=4,
            epochs=1,
            space="lr-only",
            tracking_uri=uri,
            pruner="none",
        )
    )
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    trials = {r.info.run_name: r for r in runs if r.info.run_name.startswith("trial-")}
    assert sorted(trials) == ["trial-0", "trial-1", "trial-2", "trial-3"]
    for run in trials.values():
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "lr")
        assert [m.step for m in history] == list(range(23))


def test_stack_refusals_are_one_line(tmp_path, storage):
    from adamtune.errors import AdamtuneError, StudyError
    from adamtune.study import SearchSettings, run_search

    with pytest.raises(AdamtuneError, match="--stack: stacked trials train with --optimizer fused"):
        SearchSettings(stack=4, optimizer="torch")
    path = tmp_path / "bn.py"
    path.write_text(
        "import torch\nfrom torch.nn import functional as F\nfrom adamtune import Task, accuracy\n"
        "def make_task():\n"
        "    x, y = torch.randn(16, 4), torch.zeros(16, dtype=torch.long)\n"
        "    return Task('bn', lambda: torch.nn.Sequential(torch.nn.Linear(4, 4),\n"
        "                torch.nn.BatchNorm1d(4)), (x, y), (x, y), F.cross_entropy, accuracy,\n"
        "                'val_accuracy', 'maximize', 1, 8)\n"
    )
    task = f"{path}:make_task"
    with pytest.raises(
        StudyError,
        match=r"--stack 4: task 'bn' cannot be stacked: its model has "
        r"BatchNorm1d \(1\); use --stack 1",
    ):
        run_search(SearchSettings(storage=storage, task=task, stack=4, n_trials=2))
    said = []
    study = run_search(
        SearchSettings(storage=storage, task=task, stack="auto", n_trials=2, study_name="a"),
        warn=said.append,
    )
    assert len(study.trials) == 2
    assert said == [
        "--stack auto: task 'bn' cannot be stacked (its model has BatchNorm1d (1)); one at a time"
    ]
