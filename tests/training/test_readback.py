"""Per-step values stay on the device: the loops read losses and gradient norms back once an
epoch (on CUDA a read is a host sync; one a step would cap a stack at launch speed), and the
divergence guard, checked at that read, still names the step and cuts the log there."""

import pytest
import torch

import adamtune.training.single
import adamtune.training.stacked.loop
from adamtune.config.adam import AdamConfig
from adamtune.errors import DivergedError
from adamtune.tasks import resolve_task
from adamtune.training.readback import read_back
from adamtune.training.single import TrainingLog, train
from adamtune.training.stacked.loop import train_stacked


@pytest.fixture
def reads(monkeypatch):
    calls = []

    def counted(tensors):
        calls.append(len(tensors))
        return read_back(tensors)

    monkeypatch.setattr(adamtune.training.single, "read_back", counted)
    monkeypatch.setattr(adamtune.training.stacked.loop, "read_back", counted)
    return calls


def test_one_trial_reads_its_steps_back_once_an_epoch(reads):
    task = resolve_task("digits-mlp")
    result = train(task, AdamConfig(lr=1e-3), epochs=3)
    assert len(reads) == 3  # one read back an epoch, of all its steps at once
    steps = task.steps_per_epoch()
    assert len(result.train_losses) == len(result.log.grad_norms) == 3 * steps


def test_a_stack_reads_its_rows_steps_back_once_an_epoch(reads):
    task = resolve_task("digits-mlp")
    configs = [AdamConfig(lr=lr) for lr in (1e-3, 3e-3, 1e-2)]
    results = train_stacked(task, configs, epochs=2)
    assert len(reads) == 2
    for result in results:
        assert len(result.train_losses) == 2 * task.steps_per_epoch()


def test_the_guard_at_the_read_names_the_diverging_step_and_cuts_the_log_there():
    task = resolve_task("digits-mlp")
    log = TrainingLog()
    with pytest.raises(DivergedError) as info:
        train(task, AdamConfig(lr=10.0), epochs=3, log=log)
    step = info.value.step
    assert step > 0
    # the steps before the diverging one, and nothing of it or after it
    assert len(log.train_losses) == len(log.learning_rates) == len(log.grad_norms) == step
    assert all(loss <= 100 * max(log.train_losses[0], 1e-3) for loss in log.train_losses)


def test_a_diverged_row_leaves_with_its_log_cut_and_its_neighbours_unchanged():
    task = resolve_task("digits-mlp")
    configs = [AdamConfig(lr=1e-3), AdamConfig(lr=10.0), AdamConfig(lr=3e-3)]
    results = train_stacked(task, configs, epochs=2)
    bad = results[1]
    assert bad.stopped.startswith("diverged:")
    assert len(bad.train_losses) == len(bad.learning_rates) == len(bad.log.grad_norms)
    assert len(bad.train_losses) < task.steps_per_epoch()
    alone = train(task, configs[2], epochs=2)
    torch.testing.assert_close(results[2].train_losses, alone.train_losses, rtol=1e-5, atol=1e-6)
