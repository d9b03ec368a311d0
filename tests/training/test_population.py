"""Population Based Training inside the stack: an exploit is an exact row copy, a diverged
member is replaced, and the records reconstruct every member's values and its schedule."""

import random

import pytest
import torch

from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.config.phases import learning_rates
from adamtune.tasks import Task, accuracy, resolve_task
from adamtune.training.single import TrainingLog, planned_steps, run_precision, train
from adamtune.training.stacked.feed import Feed
from adamtune.training.stacked.loop import train_epoch
from adamtune.training.stacked.population import Rules, copy_row, train_population
from adamtune.training.stacked.rows import Row, join_rows, set_columns

CONFIGS = [
    AdamConfig(lr=3e-3, schedule=ScheduleConfig("cosine", warmup_fraction=0.1)),
    AdamConfig(lr=1e-2, beta1=0.8, beta2=0.99, weight_decay=0.05),
    AdamConfig(lr=1e-3, eps=1e-6),
    AdamConfig(lr=5e-4, beta2=0.9999, schedule=ScheduleConfig("linear")),
]


def _halve_lr(config):
    return AdamConfig(**{**config.__dict__, "lr": config.lr * 0.5})


def _bn_dropout_cnn():
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 64)),
        torch.nn.Conv1d(1, 4, 3),
        torch.nn.BatchNorm1d(4),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 62, 10),
    )


def _stack(task, precision, configs, steps=3):
    prec = run_precision(precision, torch.device("cpu"))
    total = planned_steps(task, 4)
    live = [
        Row(i, c, 0, learning_rates(c, total), TrainingLog(), 0.0) for i, c in enumerate(configs)
    ]
    stack, optimizer = join_rows(task, prec, 0, None, None, [], live)
    feed = Feed(task, torch.device("cpu"), prec)
    train_epoch(task, stack, optimizer, live, feed, prec, lambda n: n < steps)
    return stack, optimizer, live, feed, prec


@pytest.mark.parametrize(
    ("task_name", "precision", "amsgrad"),
    [
        ("digits-mlp", "fp32", False),
        ("digits-mlp", "fp32", True),
        ("digits-cnn", "fp32", False),
        ("digits-mlp", "bf16", False),  # bf16 forward and loss, fp32 weights and state
        ("digits-cnn", "bf16", True),
    ],
)
def test_after_an_exploit_the_copy_and_its_source_take_bit_identical_steps(
    task_name, precision, amsgrad
):
    if task_name == "digits-cnn":  # BatchNorm statistics and dropout noise are rows too
        digits = resolve_task("digits-mlp")
        task = Task(
            "digits-cnn",
            _bn_dropout_cnn,
            digits.train,
            digits.validation,
            digits.loss,
            accuracy,
            "val_accuracy",
            "maximize",
            2,
            32,
        )
    else:
        task = resolve_task(task_name)
    configs = [AdamConfig(**{**c.__dict__, "amsgrad": amsgrad}) for c in CONFIGS]
    stack, optimizer, live, feed, prec = _stack(task, precision, configs)
    copy_row(stack, optimizer, 1, 3)
    live[3].config, live[3].lrs = live[1].config, live[1].lrs
    set_columns(optimizer, [row.config for row in live])
    train_epoch(task, stack, optimizer, live, feed, prec, lambda n: n < 4)
    for p in stack.params:
        assert torch.equal(p[1], p[3])
        state = optimizer.state[p]
        assert set(state) >= {"step", "exp_avg", "exp_avg_sq"} | (
            {"max_exp_avg_sq"} if amsgrad else set()
        )
        for key, value in state.items():
            assert torch.equal(value[1], value[3]), key
    for buffer in stack.buffers.values():
        assert torch.equal(buffer[1], buffer[3])
    assert not torch.equal(stack.params[0][1], stack.params[0][2])  # the others differ


def test_under_bf16_pure_a_copy_is_exact_and_then_rounds_with_its_own_bits():
    """bf16-pure rounds stochastically with bits drawn per position in the stack, so a copy
    starts exactly as its source (weights and fp32 state) and then draws other rounding
    bits: the two agree to a bf16 step, not bit for bit (docs/population.md says so)."""
    task = resolve_task("digits-mlp")
    stack, optimizer, live, feed, prec = _stack(task, "bf16-pure", CONFIGS)
    copy_row(stack, optimizer, 1, 3)
    for p in stack.params:
        assert torch.equal(p[1], p[3])
        for value in optimizer.state[p].values():
            assert value.dtype == torch.float32 and torch.equal(value[1], value[3])
    live[3].config, live[3].lrs = live[1].config, live[1].lrs
    set_columns(optimizer, [row.config for row in live])
    train_epoch(task, stack, optimizer, live, feed, prec, lambda n: n < 4)
    for p in stack.params:
        torch.testing.assert_close(p[1].float(), p[3].float(), rtol=0, atol=2e-2)


def test_a_copy_takes_the_sources_step_count_and_moments():
    task = resolve_task("digits-mlp")
    stack, optimizer, live, _, _ = _stack(task, "fp32", CONFIGS)
    state = optimizer.state[stack.params[0]]
    state["step"][0] = 7.0  # rows at different steps: the copy takes the source's
    copy_row(stack, optimizer, 0, 2)
    assert state["step"][2] == 7.0
    assert torch.equal(state["exp_avg"][2], state["exp_avg"][0])


def _population(task, configs, **kwargs):
    kwargs.setdefault("rules", Rules(interval=1, quantile=0.25))
    return train_population(
        task, configs, explore=_halve_lr, rng=random.Random(0), epochs=4, **kwargs
    )


def test_a_diverged_member_is_replaced_not_spread():
    task = resolve_task("digits-mlp")
    configs = [*CONFIGS, AdamConfig(lr=50.0)]  # member 4 diverges in its first epoch
    results = _population(task, configs, rules=Rules(interval=100, quantile=0.25))
    lost = results[4]
    assert lost.member.lineage, "the diverged member copied a healthy one"
    first = lost.member.lineage[0]
    assert first.epoch == 1 and first.source != 4
    assert results[first.source].result.evaluations[0].metrics["val_accuracy"] > 0.2
    assert lost.result.stopped is None and lost.result.value > 0.5
    for other in results[:4]:  # interval 100: nobody else was exploited
        assert not other.member.lineage


def test_anchors_are_never_exploited_and_the_rest_copy_the_top():
    task = resolve_task("digits-mlp")
    configs = [AdamConfig(lr=lr) for lr in (1e-5, 2e-5, 3e-3, 5e-3, 1e-2, 3e-5, 4e-5, 2e-3)]
    results = _population(task, configs, rules=Rules(interval=1, quantile=0.25, anchors=2))
    assert [r.member.anchor for r in results[:2]] == [True, True]
    assert not results[0].member.lineage and not results[1].member.lineage
    copied = [r for r in results[2:] if r.member.lineage]
    assert copied, "the weak members copied"
    assert {e.source for r in copied for e in r.member.lineage} <= set(range(8))


def test_the_records_reconstruct_each_members_values_and_its_weights_schedule():
    task = resolve_task("digits-mlp")
    configs = [AdamConfig(lr=lr) for lr in (1e-5, 2e-5, 3e-3, 5e-3, 1e-2, 3e-5, 4e-5, 2e-3)]
    results = _population(task, configs)
    total = results[0].result.log.total_steps
    for index, done in enumerate(results):
        member, log = done.member, done.result.log
        # its trajectory is what it trained with, step by step, from its sampled values
        assert member.trajectory[0][1] == configs[index]
        own = [c.lr * m for c, m in _each_step(member.trajectory, total)]
        assert own == log.learning_rates
        # its schedule is what its weights trained with, through whom it copied
        assert learning_rates(member.schedule_config(total), total) == _ancestry(
            results, index, total, "learning_rates"
        )


def _each_step(trajectory, total):
    from adamtune.config.schedules import multiplier

    out = []
    for step in range(total):
        config = [c for s, c in trajectory if s <= step][-1]
        out.append((config, multiplier(config.schedule, step, total)))
    return out


def test_a_schedule_replays_from_scratch_in_train_and_in_a_stack():
    task = resolve_task("digits-mlp")
    configs = [AdamConfig(lr=lr) for lr in (1e-5, 3e-3, 1e-2, 2e-3)]
    results = _population(task, configs)
    winner = max(results, key=lambda r: r.result.value)
    schedule = winner.member.schedule_config(winner.result.log.total_steps)
    assert schedule.phases, "the winner's weights went through an exploit"
    alone = train(task, schedule, seed=5, epochs=4)
    assert alone.learning_rates == learning_rates(schedule, alone.log.total_steps)
    from adamtune.training.stacked.loop import train_stacked

    stacked = train_stacked(task, [schedule, AdamConfig()], seeds=[5, 6], epochs=4)[0]
    assert stacked.learning_rates == alone.learning_rates
    torch.testing.assert_close(stacked.train_losses, alone.train_losses, rtol=1e-5, atol=1e-6)


def test_stop_ends_the_population_at_the_next_interval():
    task = resolve_task("mnist1d-mlp")  # it has a test split
    asked = []

    def stop():
        asked.append(True)
        return True

    results = _population(task, CONFIGS, rules=Rules(interval=2), stop=stop)
    assert len(asked) == 1
    assert all(len(r.result.evaluations) == 2 for r in results)
    assert all("test_accuracy" in r.result.metrics for r in results)  # ended, then tested


def test_a_population_needs_a_task_that_stacks():
    task = resolve_task("digits-mlp")
    loop = Task(
        "loop",
        task.build_model,
        task.train,
        task.validation,
        task.loss,
        accuracy,
        "val_accuracy",
        "maximize",
        1,
        32,
        train_loop=lambda trial: None,
    )
    with pytest.raises(ValueError, match="cannot be stacked: it is a training loop"):
        _population(loop, CONFIGS)


def _ancestry(results, member, total, series):
    """``series`` (a log's per-step list) of every step of ``member``'s final weights, walked
    back through the members it copied."""
    out = [None] * total
    owner, end = member, total
    while True:
        exploits = [e for e in results[owner].member.lineage if e.step < end]
        start = exploits[-1].step if exploits else 0
        out[start:end] = getattr(results[owner].result.log, series)[start:end]
        if not exploits:
            return out
        owner, end = exploits[-1].source, start


def test_a_replay_under_the_populations_seed_retraces_the_winners_weights():
    """Members share the seed (initial weights, batch order, dropout noise), so the ancestry's
    schedule replayed alone from scratch takes the steps the winner's weights took: the
    distance between a replay and the member is the seed's, not the inheritance's."""
    task = resolve_task("digits-mlp")
    configs = [AdamConfig(lr=lr) for lr in (1e-5, 3e-3, 1e-2, 2e-3)]
    results = _population(task, configs, rules=Rules(interval=1, quantile=0.25))
    index = max(range(len(results)), key=lambda i: results[i].result.value)
    winner = results[index]
    total = winner.result.log.total_steps
    assert winner.member.schedule_config(total).phases
    replay = train(task, winner.member.schedule_config(total), seed=0, epochs=4)
    torch.testing.assert_close(
        replay.train_losses, _ancestry(results, index, total, "train_losses"), rtol=1e-4, atol=1e-5
    )
    assert replay.value == pytest.approx(winner.result.value, abs=1e-3)
