"""Exports are exact: run in a fresh interpreter, they reproduce the trial's schedule and result."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from adamtune.cli.app import cli
from adamtune.config.adam import AdamConfig, ScheduleConfig
from adamtune.config.schedules import learning_rates
from adamtune.config.settings import SearchSettings
from adamtune.errors import ConfigError
from adamtune.results.export import ExportedTrial, render
from adamtune.results.studies import load_config, load_trial
from adamtune.search.run import run_search

SCHEDULES = [
    ScheduleConfig("constant"),
    ScheduleConfig("constant", warmup_fraction=0.1),
    ScheduleConfig("linear", final_lr_fraction=0.05),
    ScheduleConfig("linear", warmup_fraction=0.07),
    ScheduleConfig("cosine"),
    ScheduleConfig("cosine", warmup_fraction=0.0526, final_lr_fraction=0.01),
    ScheduleConfig("exponential", final_lr_fraction=0.003),
    ScheduleConfig("exponential", warmup_fraction=0.2, final_lr_fraction=0.1),
    ScheduleConfig("step", gamma=0.3, decays=3),
    ScheduleConfig("step", warmup_fraction=0.05, gamma=0.5, decays=1),
]
TOTAL = 137


def exported(config, **overrides):
    base = dict(
        study_name="s",
        trial_number=3,
        value=0.91,
        metric="val_accuracy",
        direction="maximize",
        config=config,
        total_steps=TOTAL,
        seed=0,
        task="digits-mlp",
    )
    return ExportedTrial(**{**base, **overrides})


def run_fresh(source: Path, code: str) -> str:
    """Run ``code`` in a new interpreter, after executing ``source`` as module ``exported``."""
    prelude = (
        f"import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('exported', {str(source)!r})\n"
        "exported = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(exported)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True
    ).stdout


LRS = (
    "import torch\n"
    "p = torch.nn.Parameter(torch.zeros(3))\n"
    "opt = exported.build_optimizer([p])\n"
    "sch = exported.build_scheduler(opt, {total})\n"
    "lrs = []\n"
    "for _ in range({total}):\n"
    "    lrs.append(opt.param_groups[0]['lr'])\n"
    "    p.grad = torch.ones(3)\n"
    "    opt.step()\n"
    "    sch.step()\n"
    "print(repr(lrs)); print(type(opt).__name__, repr(opt.defaults))\n"
)


@pytest.mark.parametrize("fmt", ["torch", "adamtune"])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{s.kind}-w{s.warmup_fraction}")
def test_exported_schedule_is_bit_for_bit_the_trials(tmp_path, fmt, schedule):
    config = AdamConfig(
        lr=0.0041229701, beta1=0.8, beta2=0.995, eps=1e-9, weight_decay=0.03, schedule=schedule
    )
    path = tmp_path / "best.py"
    path.write_text(render(exported(config), fmt))
    out = run_fresh(path, LRS.format(total=TOTAL)).splitlines()
    assert eval(out[0]) == learning_rates(config.lr, config.schedule, TOTAL)  # exact
    assert out[1].startswith("FusedAdam" if fmt == "adamtune" else "AdamW")


def test_torch_export_leaves_out_torch_defaults_and_keeps_full_precision(tmp_path):
    config = AdamConfig(lr=0.1 + 0.2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    text = render(exported(config), "torch")
    assert "lr=0.30000000000000004" in text
    assert "betas=" not in text and "eps=" not in text and "weight_decay=" not in text
    adam = render(exported(AdamConfig(decoupled=False, weight_decay=0.01, amsgrad=True)), "torch")
    assert "torch.optim.Adam(" in adam and "weight_decay=0.01" in adam and "amsgrad=True" in adam
    zero = render(exported(AdamConfig(weight_decay=0.0)), "torch")
    assert "weight_decay=0.0" in zero  # AdamW's default is 0.01, so 0 must be written


@pytest.mark.parametrize("fmt", ["torch", "adamtune", "lightning", "hf"])
@pytest.mark.parametrize("clip", [None, 0.5])
def test_exported_code_passes_ruff_and_py_compile(tmp_path, fmt, clip):
    path = tmp_path / "exported.py"
    config = AdamConfig(schedule=ScheduleConfig("cosine"), max_grad_norm=clip)
    path.write_text(render(exported(config), fmt))
    subprocess.run([sys.executable, "-m", "py_compile", str(path)], check=True)
    result = subprocess.run(
        # ruff's defaults plus pycodestyle, warnings and bugbear; long lines are allowed (a study
        # name in the header comment is as long as the user made it)
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--extend-select",
            "E,W,B",
            "--ignore",
            "E501",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "name", ["evil\nimport os; os.system('echo pwned')\n#", "quote'\"\"\"'''", "naïve-étude-研究"]
)
def test_study_names_cannot_inject_code(tmp_path, name):
    for fmt in ("torch", "lightning", "hf", "adamtune"):
        text = render(exported(AdamConfig(), study_name=name, task=name, metric=name), fmt)
        assert text.isascii()
        path = tmp_path / "x.py"
        path.write_text(text)
        out = run_fresh(path, "print('ok')")
        assert out == "ok\n"  # nothing from the name ran
        assert all(line.startswith("#") for line in text.splitlines() if "evil" in line)


def test_lightning_configure_optimizers_steps_every_batch(tmp_path):
    path = tmp_path / "lit.py"
    config = AdamConfig(lr=0.01, schedule=ScheduleConfig("linear", warmup_fraction=0.1))
    path.write_text(render(exported(config), "lightning"))
    code = (
        "import torch, types\n"
        "model = torch.nn.Linear(2, 2)\n"
        "model.trainer = types.SimpleNamespace(estimated_stepping_batches=50)\n"
        "out = exported.configure_optimizers(model)\n"
        "opt, sch = out['optimizer'], out['lr_scheduler']['scheduler']\n"
        "lrs = []\n"
        "for _ in range(50):\n"
        "    lrs.append(opt.param_groups[0]['lr']); opt.step(); sch.step()\n"
        "print(repr(lrs)); print(out['lr_scheduler']['interval'])\n"
    )
    out = run_fresh(path, code).splitlines()
    assert eval(out[0]) == learning_rates(config.lr, config.schedule, 50)
    assert out[1] == "step"


# What the old hf export refused (TrainingArguments could not say it): now every one runs.
EVERY_WINNER = [
    AdamConfig(lr=2e-5, weight_decay=0.01, schedule=ScheduleConfig("cosine")),
    AdamConfig(schedule=ScheduleConfig("cosine", warmup_fraction=0.05)),
    AdamConfig(schedule=ScheduleConfig("step", warmup_fraction=0.1, gamma=0.5, decays=2)),
    AdamConfig(schedule=ScheduleConfig("linear", final_lr_fraction=0.1)),
    AdamConfig(schedule=ScheduleConfig("exponential", final_lr_fraction=0.01)),
    AdamConfig(decoupled=False, weight_decay=1e-4),
    AdamConfig(amsgrad=True, max_grad_norm=0.5),
]


def forty_steps(build):
    """The lr before each of 40 steps and the weights after them, with ``build(model)``'s
    optimizer and scheduler."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = build(model)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    return lrs, [p.tolist() for p in model.parameters()]


@pytest.mark.parametrize("config", EVERY_WINNER)
def test_the_hf_export_runs_every_winner_step_for_step_as_the_torch_export(config):
    hf: dict = {}
    plain: dict = {}
    exec(render(exported(config), "hf"), hf)  # self-contained files: torch and math only
    exec(render(exported(config), "torch"), plain)

    def from_torch_export(model):
        optimizer = plain["build_optimizer"](model.parameters())
        return optimizer, plain["build_scheduler"](optimizer, 40)

    from_hf = forty_steps(lambda model: hf["build_optimizers"](model, 40))
    assert from_hf == forty_steps(from_torch_export)
    assert from_hf[0] == learning_rates(config.lr, config.schedule, 40)
    assert hf["training_args"] == {"max_grad_norm": config.max_grad_norm or 0.0}


TRAINER = """
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

class Rows(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)
    def __len__(self):
        return 8
    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 2)
    def forward(self, x, labels):
        return {"loss": torch.nn.functional.mse_loss(self.net(x), labels)}

torch.manual_seed(0)
model, data, lrs = Model(), Rows(), []
optimizer, scheduler = exported.build_optimizers(model, 30)
optimizer.register_step_pre_hook(lambda o, a, k: lrs.append(o.param_groups[0]["lr"]))
args = TrainingArguments(
    output_dir=OUT, max_steps=30, per_device_train_batch_size=8, report_to=[], use_cpu=True,
    save_strategy="no", logging_strategy="no", disable_tqdm=True, **exported.training_args,
)
Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, scheduler)).train()
print("LRS", repr(lrs)); print("TRAINED", repr([p.tolist() for p in model.parameters()]))

torch.manual_seed(0)
alone = Model()
optimizer, scheduler = exported.build_optimizers(alone, 30)
for _ in range(30):  # a plain loop over the same full batch
    optimizer.zero_grad(); alone(data.x, data.y)["loss"].backward()
    if exported.training_args["max_grad_norm"]:
        torch.nn.utils.clip_grad_norm_(alone.parameters(), exported.training_args["max_grad_norm"])
    optimizer.step(); scheduler.step()
print("ALONE", repr([p.tolist() for p in alone.parameters()]))
"""


@pytest.mark.parametrize("config", [EVERY_WINNER[1], EVERY_WINNER[6]])
def test_the_hf_export_drives_a_real_trainer_with_the_trials_schedule(tmp_path, config):
    pytest.importorskip("transformers", reason="transformers is an optional test dependency")
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    path = tmp_path / "hf.py"
    path.write_text(render(exported(config), "hf"))
    printed = run_fresh(path, TRAINER.replace("OUT", repr(str(tmp_path / "trainer"))))
    out = dict(line.split(" ", 1) for line in printed.splitlines() if line[:1].isupper())
    assert eval(out["LRS"]) == learning_rates(config.lr, config.schedule, 30)
    trained, alone = eval(out["TRAINED"]), eval(out["ALONE"])
    for a, b in zip(trained, alone, strict=True):
        assert torch.tensor(a).flatten().tolist() == pytest.approx(
            torch.tensor(b).flatten().tolist(), rel=1e-5, abs=1e-7
        )


def test_lightning_export_names_the_trainers_clipping_when_the_trial_clipped():
    assert "gradient_clip_val" not in render(exported(AdamConfig()), "lightning")
    text = render(exported(AdamConfig(max_grad_norm=0.25)), "lightning")
    assert "Trainer(gradient_clip_val=0.25, gradient_clip_algorithm='norm')" in text


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_yaml_and_json_round_trip_through_from_file(tmp_path, fmt):
    config = AdamConfig(
        lr=0.123456789012345,
        weight_decay=0.5,
        amsgrad=True,
        schedule=ScheduleConfig("step", 0.1, gamma=0.25, decays=2),
        max_grad_norm=0.75,
    )
    path = tmp_path / f"best.{fmt}"
    path.write_text(render(exported(config), fmt))
    assert AdamConfig.from_file(path) == config
    data = yaml.safe_load(path.read_text()) if fmt == "yaml" else json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["trial"] == 3


def test_from_file_names_what_is_wrong(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("schema_version: 2\nconfig: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: schema_version: must be 1, got 2"):
        AdamConfig.from_file(path)
    path.write_text("schema_version: 1\nconfig: {lr: -0.1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: lr: must be > 0, got -0.1"):
        AdamConfig.from_file(path)


@pytest.fixture(scope="module")
def study_storage(tmp_path_factory):
    storage = f"sqlite:///{tmp_path_factory.mktemp('export') / 'optuna.db'}"
    run_search(
        SearchSettings(
            task="digits-mlp",
            storage=storage,
            study_name="exp",
            n_trials=4,
            epochs=3,
            space="adamw",
            sampler="random",
            pruner="none",
            optimizer="torch",
        )
    )
    return storage


@pytest.fixture(scope="module")
def clipped_storage(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clipped")
    space = folder / "clip.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 3.0e-2}\nmax_grad_norm: 0.05\n")
    storage = f"sqlite:///{folder / 'optuna.db'}"
    run_search(
        SearchSettings(
            task="digits-mlp",
            storage=storage,
            study_name="exp",
            n_trials=2,
            epochs=3,
            space=str(space),
            sampler="random",
            pruner="none",
            optimizer="torch",
        )
    )
    return storage


@pytest.mark.parametrize("fmt", ["torch", "adamtune"])
@pytest.mark.parametrize("storage", ["study_storage", "clipped_storage"])
def test_retraining_with_the_export_reproduces_the_trials_objective(
    tmp_path, request, storage, fmt
):
    best = load_trial("exp", request.getfixturevalue(storage))
    assert (best.config.max_grad_norm is not None) == (storage == "clipped_storage")
    path = tmp_path / "best.py"
    path.write_text(render(best, fmt))
    # The user's own loop, as the export's header says: optimizer.step(); scheduler.step().
    # Same seed, same batch order as adamtune's loop (torch.randperm from a seeded generator).
    code = (
        "import torch\n"
        "from adamtune import resolve_task\n"
        "from adamtune.train import evaluate\n"
        f"task, seed, total = resolve_task({best.task!r}), {best.seed}, {best.total_steps}\n"
        "torch.manual_seed(seed)\n"
        "model = task.build_model()\n"
        "optimizer = exported.build_optimizer(model.parameters())\n"
        "scheduler = exported.build_scheduler(optimizer, total)\n"
        "order, (x, y), lrs = torch.Generator().manual_seed(seed), task.train, []\n"
        "for epoch in range(3):\n"
        "    model.train()\n"
        "    permutation = torch.randperm(len(x), generator=order)\n"
        "    for start in range(0, len(x), task.batch_size):\n"
        "        index = permutation[start : start + task.batch_size]\n"
        "        lrs.append(optimizer.param_groups[0]['lr'])\n"
        "        optimizer.zero_grad(set_to_none=True)\n"
        "        task.loss(model(x[index]), y[index]).backward()\n"
        "        if hasattr(exported, 'clip_gradients'):  # as the export's header says\n"
        "            exported.clip_gradients(model.parameters())\n"
        "        optimizer.step()\n"
        "        scheduler.step()\n"
        "value = evaluate(task, model, task.validation)[task.metric_name]\n"
        "print(repr(value)); print(repr(lrs))\n"
    )
    out = run_fresh(path, code).splitlines()
    assert float(out[0]) == pytest.approx(best.value, rel=1e-6)
    assert eval(out[1]) == learning_rates(best.config.lr, best.config.schedule, best.total_steps)


def test_load_config_returns_the_best_trials_config(study_storage):
    import optuna

    study = optuna.load_study(study_name="exp", storage=study_storage)
    assert load_config("exp", study_storage) == AdamConfig.from_dict(
        study.best_trial.user_attrs["config"]
    )
    assert load_config("exp", study_storage, trial=0) == AdamConfig.from_dict(
        study.trials[0].user_attrs["config"]
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["ghost"], "Error: no study 'ghost' in {storage} (studies there: exp)"),
        (["exp", "--trial", "99"], "Error: --trial 99: study 'exp' has trials 0..3"),
        (
            ["exp", "--format", "pdf"],
            "Error: Invalid value for '--format': 'pdf' is not one of "
            "'torch', 'adamtune', 'hf', 'lightning', 'yaml', 'json'.",
        ),
    ],
)
def test_cli_errors_are_one_line(study_storage, args, line):
    result = CliRunner().invoke(cli, ["export", *args, "--storage", study_storage])
    assert result.exit_code != 0
    assert result.stderr == line.format(storage=study_storage) + "\n"


def test_cli_refuses_an_unfinished_trial(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(storage=storage, study_name="p")
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    result = CliRunner().invoke(cli, ["export", "p", "--storage", storage, "--trial", "0"])
    assert result.stderr == (
        "Error: --trial 0: the trial is PRUNED, not COMPLETE; only "
        "completed trials can be exported\n"
    )
    assert CliRunner().invoke(cli, ["export", "p", "--storage", storage]).stderr == (
        "Error: study 'p' has no completed trial yet\n"
    )


def test_cli_writes_a_file(tmp_path, study_storage):
    out = tmp_path / "best.py"
    result = CliRunner().invoke(cli, ["export", "exp", "--storage", study_storage, "-o", str(out)])
    assert result.exit_code == 0 and result.stderr == f"Wrote {out}\n"
    assert "def build_optimizer(params):" in out.read_text()


@pytest.mark.parametrize("fmt", ["torch", "adamtune", "lightning", "hf"])
@pytest.mark.parametrize("precision", ["bf16", "fp16", "bf16-pure"])
def test_exports_say_how_the_trial_trained_under_its_precision(tmp_path, fmt, precision):
    path = tmp_path / "exported.py"
    path.write_text(render(exported(AdamConfig(), precision=precision, seed=4), fmt))
    text = path.read_text()
    assert f"--precision {precision}" in text
    subprocess.run([sys.executable, "-m", "py_compile", str(path)], check=True)
    assert "--precision" not in render(exported(AdamConfig()), fmt)  # fp32 says nothing


def test_the_adamtune_export_of_a_bf16_pure_trial_builds_its_optimizer(tmp_path):
    path = tmp_path / "exported.py"
    path.write_text(render(exported(AdamConfig(), precision="bf16-pure", seed=4), "adamtune"))
    code = (
        "import torch\n"
        "p = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))\n"
        "opt = exported.build_optimizer([p])\n"
        "p.grad = torch.ones(3, dtype=torch.bfloat16)\n"
        "opt.step()\n"
        "g = opt.param_groups[0]\n"
        "print(g['stochastic_rounding'], g['rounding_seed'], opt.state[p]['exp_avg'].dtype)\n"
    )
    assert run_fresh(path, code).split() == ["True", "4", "torch.float32"]


def test_yaml_export_records_the_precision_and_still_loads(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(render(exported(AdamConfig(lr=0.02), precision="bf16"), "yaml"))
    assert yaml.safe_load(path.read_text())["precision"] == "bf16"
    assert AdamConfig.from_file(path).lr == 0.02
