"""Tune small, train big: the transfer rules against their formulas, and an export rescaled
for a longer run still reproduces, at every step of the new length, the LRs it logs."""

import math

import optuna
import pytest
from click.testing import CliRunner

from adamtune.cli.app import cli
from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.config.schedules import learning_rates
from adamtune.errors import ExportError
from adamtune.results.transfer import transfer

CONFIG = AdamConfig(lr=2e-3, beta2=0.99, weight_decay=0.05, schedule=ScheduleConfig("cosine"))


def test_a_longer_run_keeps_the_adamw_timescale_a_share_of_the_run():
    moved = transfer(CONFIG, epochs=(10, 40), batch_size=(32, 32), rows=320)
    assert moved.total_steps == 400
    tau = lambda c, steps: 1 / (c.lr * c.weight_decay) / steps  # noqa: E731
    assert tau(moved.config, 400) == pytest.approx(tau(CONFIG, 100))
    assert moved.config.lr == CONFIG.lr and moved.config.beta2 == CONFIG.beta2
    assert any("AdamW timescale" in note for note in moved.notes)


def test_a_larger_batch_takes_the_square_root_rule_and_beta2s_half_life():
    moved = transfer(CONFIG, epochs=(10, 10), batch_size=(32, 128), rows=512)
    assert moved.config.lr == pytest.approx(CONFIG.lr * 2)
    half_life = lambda beta2, batch: math.log(0.5) / math.log(beta2) * batch  # noqa: E731
    assert half_life(moved.config.beta2, 128) == pytest.approx(half_life(0.99, 32))
    # the run is 4x fewer steps: lr * wd grows 4x to keep tau's share
    assert moved.config.lr * moved.config.weight_decay == pytest.approx(
        CONFIG.lr * CONFIG.weight_decay * 4
    )
    assert len(moved.notes) == 3


def test_the_same_steps_with_a_larger_lr_keep_lr_times_weight_decay():
    moved = transfer(CONFIG, epochs=(10, 40), batch_size=(32, 128), rows=512)
    assert moved.total_steps == 10 * 16
    assert moved.config.lr * moved.config.weight_decay == pytest.approx(
        CONFIG.lr * CONFIG.weight_decay
    )
    assert moved.config.weight_decay == pytest.approx(CONFIG.weight_decay / 2)


def test_adam_with_l2_keeps_its_decay_and_phases_are_refused():
    l2 = AdamConfig(lr=1e-3, weight_decay=1e-4, decoupled=False)
    assert transfer(l2, epochs=(5, 20), batch_size=(8, 8), rows=80).config == l2
    with pytest.raises(ExportError, match="must be >= 1"):
        transfer(CONFIG, epochs=(5, 0), batch_size=(8, 8), rows=80)


@pytest.fixture
def study_storage(in_tmp):
    (in_tmp / "wd.yaml").write_text(
        "lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nweight_decay: 0.05\n"
    )
    result = CliRunner().invoke(
        cli,
        ["search", "--task", "digits-mlp", "--n-trials", "3", "--epochs", "2", "--no-tracking"]
        + ["--confirm", "0", "--space", "wd.yaml", "--study-name", "s"],
    )
    assert result.exit_code == 0, result.output
    return "sqlite:///adamtune.db"


def test_an_export_rescaled_for_4x_the_epochs_reproduces_its_lrs_at_every_step(
    study_storage, in_tmp
):
    result = CliRunner().invoke(
        cli, ["export", "s", "--epochs", "8", "--format", "adamtune", "-o", "x.py"]
    )
    assert result.exit_code == 0, result.output
    assert "Transfer: weight_decay" in result.output
    text = (in_tmp / "x.py").read_text()
    steps = int(text.split("Rescaled for a run of ")[1].split(" ")[0])
    study = optuna.load_study(study_name="s", storage=study_storage)
    assert steps == 4 * study.best_trial.user_attrs["total_steps"]
    namespace: dict = {}
    exec(compile(text, "x.py", "exec"), namespace)  # noqa: S102  (our own export)
    import torch

    p = torch.nn.Parameter(torch.zeros(2))
    optimizer = namespace["build_optimizer"]([p])
    scheduler = namespace["build_scheduler"](optimizer, steps)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    config = namespace["CONFIG"]
    assert seen == pytest.approx(learning_rates(config.lr, config.schedule, steps), rel=1e-12)


def test_a_study_without_its_record_cannot_be_rescaled(study_storage):
    study = optuna.load_study(study_name="s", storage=study_storage)
    study.set_user_attr("task_record", None)
    result = CliRunner().invoke(cli, ["export", "s", "--batch-size", "64"])
    assert result.exit_code == 1
    assert "does not record its epochs" in result.output
