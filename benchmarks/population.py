"""Population training (--strategy pbt) against the default search and against a plain Optuna
loop around torch's AdamW, at equal wall time, over several seeds; and the cost of one exploit.

Sides, each run in a fresh directory for ``--timeout`` seconds of trials (then its own
confirmation, outside the budget, as a user runs it):

- ``pbt``: `adamtune search --strategy pbt --population N --timeout T --confirm 3`; its figure
  is the test metric of the population's winner, its schedule replayed from scratch under the
  3 confirmation seeds;
- ``pbt, no anchors``: the same with ``--anchors 0`` (the guard against collapse off);
- ``search``: `adamtune search --timeout T --confirm 3` (TPE, the median pruner, stacked): its
  confirmed winner's test metric under the same 3 seeds;
- ``plain``: what a user writes without adamtune: an Optuna study (TPE, MedianPruner) around
  torch.optim.AdamW with a linear-warmup cosine schedule, the same model, data and budget; its
  best trial retrained under the same 3 seeds.

    python benchmarks/population.py --tasks mnist1d-mlp,mnist1d-cnn --timeout 120 --seeds 0,1,2

Then one exploit (a row copy plus explore) per row, beside one training step of the stack.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))
CONFIRM_SEEDS = 3


def adamtune_side(task: str, timeout: float, seed: int, extra: list[str]) -> tuple[float, int]:
    """(the replayed winner's test mean over the confirmation seeds, members or trials)."""
    with tempfile.TemporaryDirectory() as folder:
        args = [ADAMTUNE, "search", "--task", task, "--timeout", str(timeout), "--seed", str(seed)]
        args += ["--n-trials", "100000", "--study-name", "q", "--no-tracking", "--confirm", "3"]
        subprocess.run(args + extra, cwd=folder, check=True, capture_output=True)
        study = optuna.load_study(study_name="q", storage=f"sqlite:///{folder}/adamtune.db")
        confirmation = study.user_attrs["confirmation"]
        candidates = confirmation["candidates"]
        pick = next((c for c in candidates if c.get("role") == "schedule"), None)
        pick = pick or next(c for c in candidates if c["trial"] == confirmation["winner"])
        return float(pick["test_mean"]), len(study.trials)


def plain_side(task_name: str, timeout: float, seed: int) -> tuple[float, int]:
    """The plain Optuna + torch AdamW loop; (its best trial's test mean under 3 seeds, trials)."""
    from adamtune.tasks import resolve_task

    task = resolve_task(task_name)
    epochs = task.epochs

    def run(params: dict, run_seed: int, trial: optuna.Trial | None) -> tuple[float, float]:
        torch.manual_seed(run_seed)
        model = task.build_model()
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=params["lr"],
            betas=(params["beta1"], params["beta2"]),
            weight_decay=params["weight_decay"],
        )
        x, y = task.train
        steps = epochs * math.ceil(len(x) / task.batch_size)
        warmup = max(1, round(params["warmup"] * steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        order = torch.Generator().manual_seed(run_seed)
        val = 0.0
        for epoch in range(epochs):
            model.train()
            for index in torch.randperm(len(x), generator=order).split(task.batch_size):
                optimizer.zero_grad()
                task.loss_of(model(x[index]), y[index]).backward()
                optimizer.step()
                scheduler.step()
            val = accuracy(model, task.validation)
            if trial is not None:
                trial.report(val, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return val, accuracy(model, task.test)

    def objective(trial: optuna.Trial) -> float:
        params = {
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "beta1": 1 - trial.suggest_float("one_minus_beta1", 1e-2, 0.5, log=True),
            "beta2": 1 - trial.suggest_float("one_minus_beta2", 1e-4, 1e-1, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1.0, log=True),
            "warmup": trial.suggest_float("warmup", 0.0, 0.1),
        }
        trial.set_user_attr("params", params)
        value = run(params, seed, trial)[0]
        return value if math.isfinite(value) else 0.0

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(objective, timeout=timeout)
    best = study.best_trial.user_attrs["params"]
    tests = [run(best, seed + 1 + i, None)[1] for i in range(CONFIRM_SEEDS)]
    return statistics.mean(tests), len(study.trials)


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    x, y = split
    return float((model(x).argmax(-1) == y).float().mean())


def exploit_cost(task_name: str, rows: int = 16, repeats: int = 50) -> tuple[float, float]:
    """(ms for one exploit per row: copy plus explore, ms for one training step of the stack)."""
    from adamtune.config.adam import AdamConfig
    from adamtune.space import load_space
    from adamtune.space.explore import Explorer
    from adamtune.tasks import resolve_task
    from adamtune.training.precision import Precision
    from adamtune.training.single import TrainingLog
    from adamtune.training.stacked.feed import Feed
    from adamtune.training.stacked.loop import train_epoch
    from adamtune.training.stacked.population import copy_row
    from adamtune.training.stacked.rows import Row, join_rows, set_columns

    task = resolve_task(task_name)
    live = [Row(i, AdamConfig(), 0, [1e-3] * 10**6, TrainingLog(), 0.0) for i in range(rows)]
    prec = Precision()
    stack, optimizer = join_rows(task, prec, 0, None, None, [], live)
    feed = Feed(task, torch.device("cpu"), prec)
    steps = {"n": 0}

    def go_on(n: int) -> bool:
        steps["n"] = n
        return n < repeats

    started = time.perf_counter()
    train_epoch(task, stack, optimizer, live, feed, prec, go_on)
    step_ms = 1000 * (time.perf_counter() - started) / steps["n"]
    explorer = Explorer(load_space("default"), random.Random(0))
    started = time.perf_counter()
    for i in range(repeats):
        copy_row(stack, optimizer, i % rows, (i + 1) % rows)
        live[(i + 1) % rows].config = explorer(live[i % rows].config)
        set_columns(optimizer, [row.config for row in live])
    return 1000 * (time.perf_counter() - started) / repeats, step_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="mnist1d-mlp,mnist1d-cnn")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--population",
        default="mnist1d-mlp=256,mnist1d-cnn=64",
        help="members per task: about what the budget trains (a slower one ends at --timeout)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = dict(item.split("=") for item in args.population.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"--timeout {args.timeout:g} s of trials per side, {CONFIRM_SEEDS} confirmation seeds")
    for task in args.tasks.split(","):
        size = sizes.get(task, "64")
        pbt = ["--strategy", "pbt", "--population", size]
        sides = {
            "pbt": (task, pbt),
            "pbt, no anchors": (task, [*pbt, "--anchors", "0"]),
            "search": (task, []),
            "plain": (task, None),
        }
        found: dict[str, list[float]] = {name: [] for name in sides}
        print(f"\n{task} (population {size})\n| seed | side | trials | test |\n|---|---|---|---|")
        for seed in seeds:
            for name, (name_of_task, extra) in sides.items():
                if extra is None:
                    test, trials = plain_side(name_of_task, args.timeout, seed)
                else:
                    test, trials = adamtune_side(name_of_task, args.timeout, seed, extra)
                found[name].append(test)
                print(f"| {seed} | {name} | {trials} | {test:.4f} |", flush=True)
        print("\n| side | test mean ± sd |\n|---|---|")
        for name, values in found.items():
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"| {name} | {statistics.mean(values):.4f} ± {sd:.4f} |")
        copy_ms, step_ms = exploit_cost(task)
        print(
            f"\none exploit per row (copy + explore): {copy_ms:.3f} ms; one training step of a "
            f"16-row stack: {step_ms:.3f} ms ({copy_ms / step_ms:.3f} of a step)"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
