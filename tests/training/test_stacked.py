"""Stacked training: every row trains exactly as its configuration would alone."""

import dataclasses

import pytest
import torch

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.tasks import Task, accuracy, resolve_task
from adamtune.training.single import train
from adamtune.training.stacked.loop import train_stacked
from adamtune.training.stacked.model import why_not_stackable

CONFIGS = [
    AdamConfig(lr=3e-3),
    AdamConfig(lr=1e-2, beta1=0.8, beta2=0.99, weight_decay=0.05),
    AdamConfig(lr=1e-3, eps=1e-6, schedule=ScheduleConfig("cosine", warmup_fraction=0.2)),
    AdamConfig(lr=5e-4, beta2=0.9999, schedule=ScheduleConfig("step", gamma=0.5, decays=2)),
]


def tiny_task(build_model, loss=torch.nn.functional.cross_entropy):
    """A 16-sample, 4-feature classification task around ``build_model`` and ``loss``."""
    x, y = torch.randn(16, 4), torch.zeros(16, dtype=torch.long)
    return Task("t", build_model, (x, y), (x, y), loss, accuracy, "val_accuracy", "maximize", 1, 8)


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


def test_a_stopped_row_is_handed_out_when_it_stops_not_when_the_stack_ends():
    task = resolve_task("digits-mlp")
    events = []

    def on_epoch(evaluations):
        events.append(("epoch", min(e.epoch for e in evaluations.values())))
        return {0: "pruned at epoch 1"} if 0 in evaluations else {}

    def on_result(i, result):
        events.append(("result", i, result.stopped, len(result.evaluations)))

    configs = [CONFIGS[0], AdamConfig(lr=10.0), CONFIGS[1]]
    results = train_stacked(task, configs, epochs=3, on_epoch=on_epoch, on_result=on_result)
    done = [e for e in events if e[0] == "result"]
    assert done[0][:2] == ("result", 1) and done[0][2].startswith("diverged: loss became")
    assert done[1] == ("result", 0, "pruned at epoch 1", 1)
    assert events.index(done[1]) == events.index(("epoch", 1)) + 1  # before epoch 2 ran
    assert done[2] == ("result", 2, None, 3)
    assert [r.stopped for r in results][:2] == [done[1][2], done[0][2]]


@pytest.mark.parametrize("name", ["wine-mlp", "mnist1d-cnn"])  # batched matmuls; vmap
def test_a_freed_slot_takes_the_next_configuration_which_trains_as_it_would_alone(name):
    from adamtune.training.stacked.loop import train_stack

    task = resolve_task(name)
    cnn = name == "mnist1d-cnn"  # see test_each_row_trains_as_its_configuration_alone
    queue = [CONFIGS[0], CONFIGS[1], CONFIGS[2], CONFIGS[3]]
    given, results, stack_sizes = [], {}, []

    def source():
        if queue:
            given.append(queue.pop(0))
            return given[-1]
        return None

    def on_epoch(evaluations):
        stack_sizes.append(sorted(evaluations))
        return {0: "pruned"} if 0 in evaluations and evaluations[0].epoch == 1 else {}

    train_stack(
        task,
        source,
        rows=2,
        epochs=3,
        on_epoch=on_epoch,
        on_result=lambda i, r: results.setdefault(i, r),
    )
    # rows 0 and 1 start; 0 is pruned after epoch 1, so 2 joins while 1 is in its epoch 2.
    assert stack_sizes[:3] == [[0, 1], [1, 2], [1, 2]]
    assert results[0].stopped == "pruned" and len(results[0].evaluations) == 1
    for i in (1, 2, 3):
        alone = train(task, given[i], epochs=3)
        assert results[i].stopped is None
        assert [e.epoch for e in results[i].evaluations] == [1, 2, 3]
        torch.testing.assert_close(
            results[i].train_losses[:5], alone.train_losses[:5], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            results[i].train_losses[: 20 if cnn else None],
            alone.train_losses[: 20 if cnn else None],
            rtol=1e-3 if cnn else 1e-5,
            atol=1e-6,
        )
        assert results[i].learning_rates == alone.learning_rates
        assert results[i].value == pytest.approx(alone.value, abs=3e-2 if cnn else 1e-6)


def test_mixed_decoupling_is_refused():
    with pytest.raises(ValueError, match="group the configurations"):
        train_stacked(resolve_task("wine-mlp"), [AdamConfig(), AdamConfig(decoupled=False)])


def test_layers_without_a_per_row_version_do_not_stack():
    def task(*layers):
        return tiny_task(lambda: torch.nn.Sequential(torch.nn.Linear(4, 4), *layers))

    assert "SyncBatchNorm (1)" in why_not_stackable(task(torch.nn.SyncBatchNorm(4)))
    assert "AlphaDropout (1)" in why_not_stackable(task(torch.nn.AlphaDropout(0.1)))
    assert why_not_stackable(task(torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.1))) is None
    assert why_not_stackable(resolve_task("mnist1d-cnn")) is None


class _ItemInForward(torch.nn.Module):  # reads a value: vmap cannot batch .item()
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x) * (2.0 if x.sum().item() > 0 else 1.0)


class _Pair(torch.nn.Module):  # returns a tuple
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x), x


class _CountsCalls(torch.nn.Module):  # state outside the parameters: stacked != alone
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x) * self.calls


@pytest.mark.parametrize(
    "model, reason",
    [
        (_ItemInForward, "torch.func cannot stack its model"),
        (_Pair, "its loss on one training batch of the model alone raised TypeError"),
        (_CountsCalls, "its stacked forward pass does not give what the model alone gives"),
    ],
)
def test_a_model_that_does_not_stack_the_same_is_found_before_training(model, reason):
    task = tiny_task(model)
    assert why_not_stackable(task).startswith(reason)


def test_a_stacked_search_gives_each_trial_its_own_outcome(storage):
    from optuna.trial import TrialState

    from adamtune.config.adam import AdamConfig
    from adamtune.config.settings import SearchSettings
    from adamtune.search.run import run_search

    settings = SearchSettings(
        task="digits-mlp",
        storage=storage,
        study_name="s",
        n_trials=6,
        stack=3,
        epochs=2,
        space="default",
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


def test_a_pruned_row_is_told_to_optuna_while_its_stack_mates_train_on(storage):
    import optuna
    from optuna.trial import TrialState

    from adamtune.search.objective import Objective
    from adamtune.search.stacked import run_stacked
    from adamtune.space.search_space import load_space

    class PruneEvenTrials(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number % 2 == 0

    study = optuna.create_study(storage=storage, direction="maximize", pruner=PruneEvenTrials())
    objective = Objective(resolve_task("digits-mlp"), load_space("default"), epochs=3)
    told = []
    run_stacked(
        study,
        objective,
        rows=4,
        n_trials=4,
        timeout=None,
        callbacks=[lambda study, trial: told.append(trial)],
    )
    assert [t.number for t in told[:2]] == [0, 2]  # told at epoch 1, before the others end
    assert [t.state for t in told[:2]] == [TrialState.PRUNED] * 2
    assert all(t.state == TrialState.COMPLETE for t in told[2:])
    assert max(t.datetime_complete for t in told[:2]) < min(t.datetime_complete for t in told[2:])
    assert told[0].user_attrs["pruned_reason"].startswith("pruned at epoch 1")
    assert len(study.trials) == 4 and TrialState.RUNNING not in {t.state for t in study.trials}


def test_a_stacked_search_logs_every_row_to_mlflow(tmp_path, storage):
    from mlflow import MlflowClient

    from adamtune.config.settings import SearchSettings
    from adamtune.search.run import run_search

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "clip.yaml"
    space.write_text(
        "lr: {low: 1.0e-3, high: 1.0e-2}\nmax_grad_norm: {low: 0.1, high: 1.0, include_none: true}\n"
    )
    study = run_search(
        SearchSettings(
            task="digits-mlp",
            storage=storage,
            study_name="s",
            n_trials=6,
            stack=6,
            epochs=1,
            space=str(space),
            sampler="random",
            tracking_uri=uri,
            pruner="none",
        )
    )
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    trials = {r.info.run_name: r for r in runs if r.info.run_name.startswith("trial-")}
    assert sorted(trials) == [f"trial-{i}" for i in range(6)]
    clipped = set()
    for trial in study.trials:
        run = trials[f"trial-{trial.number}"]
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "lr")
        assert [m.step for m in history] == list(range(23))
        limit = trial.user_attrs["config"]["max_grad_norm"]
        norms = client.get_metric_history(run.info.run_id, "grad_norm")  # per step where it clips
        assert [m.step for m in norms] == ([] if limit is None else list(range(23)))
        assert run.data.params.get("max_grad_norm") == (None if limit is None else str(limit))
        clipped.add(limit is None)
    assert clipped == {True, False}  # both kinds of row in the one stack


def test_stack_refusals_are_one_line(tmp_path, storage):
    from adamtune.config.settings import SearchSettings
    from adamtune.errors import AdamtuneError, StudyError
    from adamtune.search.run import run_search

    with pytest.raises(
        AdamtuneError, match="--stack 4: stacked trials train with --optimizer fused"
    ):
        SearchSettings(stack=4, optimizer="torch")
    with pytest.raises(AdamtuneError, match="--stack 2: stacked trials and --n-jobs threads"):
        SearchSettings(stack=2, n_jobs=2)
    path = tmp_path / "bn.py"
    path.write_text(
        "import torch\nfrom torch.nn import functional as F\nfrom adamtune import Task, accuracy\n"
        "def make_task():\n"
        "    x, y = torch.randn(16, 4), torch.zeros(16, dtype=torch.long)\n"
        "    return Task('bn', lambda: torch.nn.Sequential(torch.nn.Linear(4, 4),\n"
        "                torch.nn.SyncBatchNorm(4)), (x, y), (x, y), F.cross_entropy, accuracy,\n"
        "                'val_accuracy', 'maximize', 1, 8)\n"
    )
    task = f"{path}:make_task"
    with pytest.raises(
        StudyError,
        match=r"--stack 4: task 'bn' cannot be stacked: its model has "
        r"SyncBatchNorm \(1\), whose statistics are shared across processes, not kept per "
        r"row; use --stack 1",
    ):
        run_search(SearchSettings(storage=storage, task=task, stack=4, n_trials=2))
    assert not (tmp_path / "studies.db").exists()  # refused before any storage is touched
    said = []
    study = run_search(
        SearchSettings(storage=storage, task=task, stack="auto", n_trials=2, study_name="a"),
        warn=said.append,
    )
    assert len(study.trials) == 2
    assert [line for line in said if line.startswith("--stack")] == [
        "--stack auto: task 'bn' cannot be stacked (its model has SyncBatchNorm (1), whose "
        "statistics are shared across processes, not kept per row); one at a time"
    ]


@pytest.mark.parametrize(
    "options", [{"optimizer": "torch"}, {"n_jobs": 2}, {"n_trials": 1}, {"stack": 1}]
)
def test_auto_trains_one_at_a_time_where_the_user_chose_what_cannot_stack(options):
    from adamtune.config.settings import SearchSettings
    from adamtune.training.stacked.sizing import stack_rows

    said = []
    settings = SearchSettings(**options)
    assert settings.stack == options.get("stack", "auto")  # the default
    assert stack_rows(settings, resolve_task("wine-mlp"), torch.device("cpu"), said.append) == 1
    assert said == []  # what the user asked for needs no warning


def test_auto_stacks_sixteen_on_cpu_within_the_trials_asked_for():
    from adamtune.config.settings import SearchSettings
    from adamtune.training.stacked.sizing import stack_rows

    task, cpu = resolve_task("wine-mlp"), torch.device("cpu")
    assert stack_rows(SearchSettings(n_trials=100), task, cpu, print) == 16
    assert stack_rows(SearchSettings(n_trials=5), task, cpu, print) == 5


def test_user_code_that_exits_while_stacking_is_tried_makes_the_task_one_not_to_stack():
    def exiting_loss(outputs, targets):
        raise SystemExit(4)

    task = tiny_task(lambda: torch.nn.Linear(4, 2), exiting_loss)
    assert why_not_stackable(task) == "trying a stacked step raised SystemExit: 4"


def test_trials_sampled_with_other_kernel_settings_wait_for_a_stack_of_their_own(
    tmp_path, monkeypatch
):
    import optuna
    from optuna.trial import TrialState

    from adamtune.search.objective import Objective
    from adamtune.search.stacked import run_stacked
    from adamtune.space.search_space import load_space

    space = tmp_path / "mixed.yaml"
    space.write_text(
        "lr: {low: 1.0e-3, high: 1.0e-2}\nweight_decay: 0.1\n"
        "decoupled: {choices: [true, false]}\namsgrad: {choices: [false, true]}\n"
    )
    task = resolve_task("wine-mlp")
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    stacks = []
    objective = Objective(task, load_space(str(space)), epochs=2)
    import adamtune.search.stacked as stack_search

    real = stack_search.train_stack

    def recording(task, source, **kwargs):
        kinds = []

        def watched():
            config = source()
            if config is not None:
                kinds.append((config.decoupled, config.amsgrad))
            return config

        real(task, watched, **kwargs)
        stacks.append(kinds)

    monkeypatch.setattr(stack_search, "train_stack", recording)
    run_stacked(study, objective, rows=3, n_trials=10, timeout=None)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 10
    assert len(stacks) > 1 and all(len(set(kinds)) == 1 for kinds in stacks)
    assert sum(len(kinds) for kinds in stacks) == 10
    for trial in study.trials:  # each trained as it would alone, whatever its stack
        config = AdamConfig.from_dict(trial.user_attrs["config"])
        assert trial.value == pytest.approx(train(task, config, epochs=2).value, abs=1e-6)


def test_a_row_whose_own_metric_raises_fails_only_its_trial(storage):
    import optuna
    from optuna.trial import TrialState

    from adamtune.search.objective import Objective
    from adamtune.search.stacked import run_stacked
    from adamtune.space.search_space import load_space

    task = resolve_task("wine-mlp")
    calls = []

    def picky_accuracy(outputs, targets):  # raises for the second row it is asked about
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit(3)
        return accuracy(outputs, targets)

    task = dataclasses.replace(task, metric=picky_accuracy)
    study = optuna.create_study(
        storage=storage, direction="maximize", pruner=optuna.pruners.NopPruner()
    )
    run_stacked(
        study, Objective(task, load_space("lr-only"), epochs=2), rows=3, n_trials=3, timeout=None
    )
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs["fail_reason"] == "SystemExit: 3"
    alone = train(task, AdamConfig.from_dict(study.trials[2].user_attrs["config"]), epochs=2)
    assert study.trials[2].value == pytest.approx(alone.value, abs=1e-6)


def test_epoch_orders_replay_train_s_orders_and_keep_only_the_epochs_in_use():
    from adamtune.training.stacked.feed import EpochOrders

    generator = torch.Generator().manual_seed(7)
    expected = [torch.randperm(50, generator=generator) for _ in range(4)]
    orders = EpochOrders(50, 7, torch.device("cpu"))
    assert torch.equal(orders.get(3), expected[3])  # later epochs first
    assert torch.equal(orders.get(0), expected[0])
    assert torch.equal(orders.get(2), expected[2])
    orders.keep({2, 3})
    assert sorted(orders.cached) == [2, 3]
    assert torch.equal(orders.get(0), expected[0])  # replayed from the saved state


def test_an_explicit_stack_larger_than_the_free_memory_is_one_line(monkeypatch):
    import adamtune.training.stacked.sizing as study_module
    from adamtune.config.settings import SearchSettings
    from adamtune.errors import StudyError

    monkeypatch.setattr(study_module, "_free_memory", lambda device: int(0.3 * 2**30))
    task, cpu = resolve_task("digits-mlp"), torch.device("cpu")  # 26,122 parameters: 0.4 MB a row
    assert study_module.stack_rows(SearchSettings(stack=500), task, cpu, print) == 500
    with pytest.raises(StudyError) as info:
        study_module.stack_rows(SearchSettings(stack=1024, n_trials=5000), task, cpu, print)
    assert str(info.value) == (
        "--stack 1024: 1024 rows of task 'digits-mlp' need about 0.4 GiB for parameters, "
        "gradients and Adam's moments, more than the 0.3 GiB free on cpu; use --stack auto or "
        "fewer rows"
    )


def test_each_row_is_clipped_by_its_own_gradient_norm_as_it_would_be_alone():
    task = resolve_task("digits-mlp")
    configs = [
        AdamConfig(lr=3e-3, max_grad_norm=0.05),  # clipped at nearly every step
        AdamConfig(lr=3e-3),  # never clipped
        AdamConfig(lr=1e-3, max_grad_norm=1.0),
    ]
    stacked = train_stacked(task, configs, seed=1, epochs=2)
    for config, row in zip(configs, stacked, strict=True):
        alone = train(task, config, seed=1, epochs=2)
        torch.testing.assert_close(row.train_losses, alone.train_losses, rtol=1e-5, atol=1e-6)
        assert row.value == pytest.approx(alone.value, abs=1e-6)
    unclipped = train(task, AdamConfig(lr=3e-3), seed=1, epochs=2)
    assert stacked[0].train_losses[5:] != pytest.approx(unclipped.train_losses[5:], rel=1e-3)


def test_train_clips_as_torch_clip_grad_norm_does():
    from adamtune.training.builders import build_optimizer

    task = resolve_task("wine-mlp")
    config = AdamConfig(lr=1e-2, max_grad_norm=0.1)
    ours = train(task, config, seed=2, epochs=1, optimizer_factory=build_optimizer)
    torch.manual_seed(2)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    order, (x, y), losses = torch.Generator().manual_seed(2), task.train, []
    permutation = torch.randperm(len(x), generator=order)
    for start in range(0, len(x), task.batch_size):
        index = permutation[start : start + task.batch_size]
        optimizer.zero_grad()
        loss = task.loss(model(x[index]), y[index])
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
    torch.testing.assert_close(ours.train_losses, losses, rtol=1e-5, atol=1e-6)


def test_early_stopping_stops_each_row_as_it_would_stop_alone():
    from adamtune.training.stacked.loop import train_stack

    task = resolve_task("mnist1d-mlp")
    # Configurations whose runs float32 rounding does not move across a tie of the metric in
    # 12 epochs (lr 5e-3 does after ~4: Adam amplifies a 1e-7 difference, stacked or not).
    configs = [AdamConfig(lr=3e-3), AdamConfig(lr=1e-2), AdamConfig(lr=1e-3)]
    queue, results = list(configs), {}
    train_stack(
        task,
        lambda: queue.pop(0) if queue else None,
        rows=2,  # the third joins when the first stops
        epochs=12,
        patience=2,
        on_result=lambda i, result: results.setdefault(i, result),
    )
    for i, config in enumerate(configs):
        alone = train(task, config, epochs=12, patience=2)
        row = results[i]
        assert row.best is not None and row.stopped is None
        assert (row.best.epoch, row.best.step) == (alone.best.epoch, alone.best.step)
        assert len(row.evaluations) == len(alone.evaluations)
        assert row.value == pytest.approx(alone.value, abs=1e-6)
        assert row.metrics["test_accuracy"] == pytest.approx(
            alone.metrics["test_accuracy"], abs=1e-6
        )
    together = train_stacked(task, configs, epochs=12, patience=2)  # the fixed-list form too
    assert [r.best.epoch for r in together] == [results[i].best.epoch for i in range(3)]


def test_a_loss_that_is_not_one_number_is_found_before_training():
    def per_sample(outputs, targets):  # train() would fail on .item(), alone or stacked
        return torch.nn.functional.cross_entropy(outputs, targets, reduction="none")

    task = tiny_task(lambda: torch.nn.Linear(4, 2), per_sample)
    assert why_not_stackable(task) == "its loss gives shape (8,) per model, not one number"
