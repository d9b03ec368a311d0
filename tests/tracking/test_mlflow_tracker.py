"""The MLflow layout, checked through MlflowClient against a real local store."""

import signal

import pytest
from mlflow import MlflowClient

from adamtune.config.adam import AdamConfig
from adamtune.config.schedules import learning_rates
from adamtune.config.settings import SearchSettings
from adamtune.search.run import run_search
from adamtune.tracking.mlflow_tracker import MlflowTracker

HOT_SPACE = "lr: {choices: [10.0, 0.003]}\nschedule:\n  kind: cosine\n  warmup_fraction: 0.2\n"


@pytest.fixture
def tracked(tmp_path):
    (tmp_path / "hot.yaml").write_text(HOT_SPACE)

    def settings(**overrides):
        base = dict(
            task="digits-mlp",
            baseline=False,  # the layout of trials; the baseline's run is tested on its own
            storage=f"sqlite:///{tmp_path / 'optuna.db'}",
            study_name="s",
            epochs=2,
            n_trials=4,
            sampler="random",
            pruner="none",
            space=str(tmp_path / "hot.yaml"),
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
        return SearchSettings(**{**base, **overrides})

    return settings


def runs_of(settings, experiment="s"):
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, exp, parents, children


def test_one_parent_and_one_child_per_trial_with_state_and_tags(tracked):
    settings = tracked()
    study = run_search(settings)
    client, exp, parents, children = runs_of(settings)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert len(parents) == 1 and len(children) == len(study.trials) == 4
    parent = parents[0]
    assert parent.info.run_name == "s" and parent.info.status == "FINISHED"
    for child in children:
        number = int(child.data.tags["adamtune.trial_number"])
        trial = study.trials[number]
        assert child.info.run_name == f"trial-{number}"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["adamtune.study"] == "s"
        assert child.data.tags["adamtune.trial_state"] == trial.state.name
        expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[trial.state.name]
        assert child.info.status == expected
        if trial.state.name == "PRUNED":
            assert child.data.tags["adamtune.reason"].startswith("diverged: loss became")
        assert float(child.data.params["lr"]) == trial.params["lr"]
        for key in (
            "beta1",
            "beta2",
            "eps",
            "weight_decay",
            "decoupled",
            "amsgrad",
            "schedule.kind",
            "schedule.warmup_fraction",
            "trial_number",
            "seed",
            "task",
            "total_steps",
            "batch_size",
            "device",
            "optimizer",
        ):
            assert key in child.data.params
    assert {t.state.name for t in study.trials} == {"COMPLETE", "PRUNED"}


def test_a_baseline_outside_the_space_has_a_run_of_its_own(tracked):
    settings = tracked(baseline=True)  # lr 1e-3 is not among the space's choices
    study = run_search(settings)
    client, exp, parents, children = runs_of(settings)
    (baseline,) = [r for r in children if r.info.run_name == "baseline"]
    assert baseline.data.tags["adamtune.role"] == "baseline"
    assert "adamtune.trial_number" not in baseline.data.tags  # it is no trial
    assert baseline.info.status == "FINISHED"
    assert baseline.data.params["lr"] == "0.001" and baseline.data.params["weight_decay"] == "0.01"
    assert len(client.get_metric_history(baseline.info.run_id, "lr")) == 2 * 23  # every step
    value = study.user_attrs["baseline"]["value"]
    assert baseline.data.metrics["objective"] == value == parents[0].data.metrics["baseline_value"]
    assert len(children) == len(study.trials) + 1


def test_each_trial_run_monitors_gradients_weights_and_the_gap(tracked):
    settings = tracked()
    study = run_search(settings)
    client, _, _, children = runs_of(settings)
    trial = next(t for t in study.trials if t.state.name == "COMPLETE")
    run = next(r for r in children if r.info.run_name == f"trial-{trial.number}")
    assert client.get_metric_history(run.info.run_id, "grad_norm") == []  # it does not clip
    for name in ("param_norm", "update_ratio", "val_train_gap", "grad_norm_mean", "grad_norm_max"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [23, 46], name  # after each epoch's last step
    mean = client.get_metric_history(run.info.run_id, "grad_norm_mean")
    largest = client.get_metric_history(run.info.run_id, "grad_norm_max")
    assert all(0 < m.value <= top.value for m, top in zip(mean, largest, strict=True))
    gap = client.get_metric_history(run.info.run_id, "val_train_gap")[-1].value
    metrics = trial.user_attrs["metrics"]
    assert gap == pytest.approx(metrics["val_loss"] - metrics["train_loss"])


def test_lr_is_logged_at_every_step_and_equals_the_schedule(tracked):
    settings = tracked()
    study = run_search(settings)
    client, _, _, children = runs_of(settings)
    for child in children:
        trial = study.trials[int(child.data.tags["adamtune.trial_number"])]
        history = sorted(client.get_metric_history(child.info.run_id, "lr"), key=lambda m: m.step)
        losses = client.get_metric_history(child.info.run_id, "train_loss")
        if trial.state.name == "COMPLETE":
            total = trial.user_attrs["total_steps"]
            config = AdamConfig.from_dict(trial.user_attrs["config"])
            expected = learning_rates(config.lr, config.schedule, total)
            assert [m.step for m in history] == list(range(total))
            assert [m.value for m in history] == pytest.approx(expected, rel=1e-12)
            assert len(losses) == total
            val = client.get_metric_history(child.info.run_id, "val_accuracy")
            assert sorted(m.step for m in val) == [total // 2, total]
            assert child.data.metrics["objective"] == trial.value
        else:  # diverged: one point per step actually taken, none after
            assert 0 < len(history) == len(losses) < 2 * 23


def test_parent_holds_settings_space_best_and_plots(tracked):
    settings = tracked()
    study = run_search(settings)
    client, _, parents, _ = runs_of(settings)
    parent = parents[0]
    assert parent.data.params["task"] == "digits-mlp"
    assert parent.data.params["sampler"] == "random"
    assert parent.data.metrics["best_value"] == study.best_value
    assert parent.data.params["best.lr"] == str(study.best_trial.user_attrs["config"]["lr"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "search_space.yaml" in artifacts
    exports = {a.path for a in client.list_artifacts(parent.info.run_id, "export")}
    assert exports == {"export/best_config_torch.py", "export/best_config.yaml"}
    local = client.download_artifacts(parent.info.run_id, "export/best_config.yaml")
    assert AdamConfig.from_file(local) == AdamConfig.from_dict(
        study.best_trial.user_attrs["config"]
    )
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {
        "plots/optimization_history.png",
        "plots/lr_schedules_top.png",
        "plots/validation_curves_top.png",
        "plots/grad_norms_top.png",
    } <= plots


def test_storage_password_never_reaches_mlflow(tracked, tmp_path):
    settings = tracked(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", n_trials=1)
    run_search(settings)
    _, _, parents, _ = runs_of(settings)
    assert "***" not in parents[0].data.params["storage"]  # sqlite has no password to hide
    from adamtune.config.settings import SearchSettings

    public = SearchSettings(storage="postgresql://bob:s3cret@db/optuna").redacted()
    assert public["storage"] == "postgresql://bob:***@db/optuna"


def test_parallel_trials_log_into_their_own_runs(tracked):
    settings = tracked(n_trials=6, n_jobs=3, space="lr-only")
    study = run_search(settings)
    _, _, parents, children = runs_of(settings)
    numbers = sorted(int(c.data.tags["adamtune.trial_number"]) for c in children)
    assert numbers == [t.number for t in study.trials] == list(range(6))
    assert all(c.info.status == "FINISHED" for c in children)


def test_a_resumed_study_adds_a_parent_run_per_invocation(tracked):
    run_search(tracked(n_trials=1))
    run_search(tracked(n_trials=2))
    _, _, parents, children = runs_of(tracked())
    assert len(parents) == 2 and len(children) == 3


def test_experiment_name_can_be_overridden(tracked):
    settings = tracked(n_trials=1, experiment="my-experiment")
    run_search(settings)
    _, exp, parents, children = runs_of(settings, "my-experiment")
    assert len(parents) == 1 and len(children) == 1


def test_no_run_is_left_running_after_ctrl_c(tracked, tmp_path):
    task = tmp_path / "interrupting.py"
    task.write_text(
        "from adamtune.tasks.builtin import digits_mlp\n"
        "from dataclasses import replace\n"
        "calls = []\n"
        "def make_task():\n"
        "    base = digits_mlp()\n"
        "    def metric(outputs, targets):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 3:\n"
        "            raise KeyboardInterrupt\n"
        "        return base.metric(outputs, targets)\n"
        "    return replace(base, name='interrupting', metric=metric)\n"
    )
    settings = tracked(task=f"{task}:make_task", space="lr-only", n_trials=5)
    with pytest.raises(KeyboardInterrupt):
        run_search(settings)
    _, _, parents, children = runs_of(settings)
    statuses = sorted(r.info.status for r in parents + children)
    assert "RUNNING" not in statuses
    assert parents[0].info.status == "KILLED"
    assert [c.info.status for c in children if c.data.tags["adamtune.trial_number"] == "1"] == [
        "FAILED"
    ]


def test_a_crashing_trial_is_failed_with_its_reason(tracked, tmp_path):
    task = tmp_path / "crashing.py"
    task.write_text(
        "from adamtune.tasks.builtin import digits_mlp\n"
        "from dataclasses import replace\n"
        "calls = []\n"
        "def make_task():\n"
        "    def metric(outputs, targets):\n"
        "        calls.append(1)\n"
        "        if len(calls) > 1:  # the first is adamtune's one-batch try, before the trials\n"
        "            raise RuntimeError('CUDA out of memory (simulated)')\n"
        "        return 0.0\n"
        "    return replace(digits_mlp(), name='crashing', metric=metric)\n"
    )
    settings = tracked(
        task=f"{task}:make_task", space="lr-only", n_trials=2, max_consecutive_failures=0
    )
    run_search(settings)
    _, _, parents, children = runs_of(settings)
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert (
        children[0].data.tags["adamtune.reason"] == "RuntimeError: CUDA out of memory (simulated)"
    )
    assert parents[0].info.status == "FINISHED"


def test_tracking_off_creates_nothing(tracked, tmp_path):
    run_search(tracked(tracking_uri=None, n_trials=1))
    assert not (tmp_path / "mlflow.db").exists()


def test_a_tracker_closed_before_its_study_stops_its_worker_at_once(tmp_path):
    """A search refused on bad input closes its tracker before any study: the worker, still
    loading MLflow, has nothing to log, so it is stopped rather than waited for."""
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'm.db'}")
    tracker.launch()
    worker = tracker._process
    tracker.close()
    assert worker.returncode == -signal.SIGKILL
    assert tracker.errors == []
    assert not (tmp_path / "m.db").exists()


DATASET_TASK = """
import torch
from dataclasses import replace
from adamtune.tasks.builtin import digits_mlp

class Pairs(torch.utils.data.Dataset):
    def __init__(self, split):
        self.x, self.y = split
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i], self.y[i]

def make_task():
    base = digits_mlp()
    return replace(base, name='digits-dataset', train=Pairs(base.train),
                   validation=Pairs(base.validation), test=Pairs(base.validation))
"""


def test_dataset_trials_and_confirmation_runs_get_the_full_record(tracked, tmp_path):
    task = tmp_path / "digits_dataset.py"
    task.write_text(DATASET_TASK)
    settings = tracked(
        task=f"{task}:make_task", space="lr-only", n_trials=2, confirm=2, confirm_top=1
    )
    study = run_search(settings)
    client, _, _, children = runs_of(settings)
    trials = [c for c in children if "adamtune.trial_number" in c.data.tags]
    confirms = [c for c in children if c.data.tags.get("adamtune.role") == "confirm"]
    assert len(trials) == 2 and len(confirms) >= 2
    assert study.best_trial is not None
    for trial in trials:  # the Dataset's test split, where the trial completed
        state = trial.data.tags["adamtune.trial_state"]
        assert state != "COMPLETE" or "test_accuracy" in trial.data.metrics
    steps = study.best_trial.user_attrs["total_steps"]
    for run in confirms:
        history = {
            key: client.get_metric_history(run.info.run_id, key)
            for key in ("lr", "train_loss", "val_accuracy")
        }
        assert len(history["lr"]) == len(history["train_loss"]) == steps
        assert len(history["val_accuracy"]) == 2  # one point per epoch, not one at the end
        assert "test_accuracy" in run.data.metrics
        assert run.info.end_time - run.info.start_time > 0  # its own training time, not 0 s
