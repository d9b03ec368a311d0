"""Stacking for the models users bring, side by side: `adamtune search --stack auto` against
`--stack 1` on the same trials, pruner off, tracking off, no baseline or confirmation, each in
a fresh directory, the two sides interleaved.

Workloads: an MLP on tensors (digits-mlp, the reference), the same MLP served through a
Dataset, a BatchNorm + dropout residual CNN on scikit-learn's digits, and charlm-transformer
(a Dataset of dict batches with compute_loss and evaluate hooks). Prints trial-phase trials per
minute (first trial's start to last trial's end, from the study's own timestamps), the ratio,
and the line `--stack auto` printed about the width it chose.

    python benchmarks/stack_models.py --trials 32
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))
HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "MLP on tensors (digits-mlp)": ["--task", "digits-mlp"],
    "the same MLP through a Dataset": ["--task", f"{HERE / 'workloads.py'}:digits_mlp_dataset"],
    "BatchNorm + dropout CNN (digits)": ["--task", f"{HERE / 'workloads.py'}:digits_resnet"],
    "charlm-transformer": ["--task", "charlm-transformer", "--epochs", "2"],
}


def run(options: list[str], trials: int, stack: str) -> tuple[float, str, float]:
    """(trial phase seconds, the --stack line, the best value) of one search in a fresh
    directory."""
    with tempfile.TemporaryDirectory() as folder:
        args = [ADAMTUNE, "search", *options, "--n-trials", str(trials), "--pruner", "none"]
        args += ["--stack", stack, "--study-name", "b", "--no-tracking", "--no-baseline"]
        args += ["--confirm", "0", "--seed", "0"]
        done = subprocess.run(args, cwd=folder, check=True, capture_output=True, text=True)
        said = [line for line in (done.stderr + done.stdout).splitlines() if "--stack auto" in line]
        study = optuna.load_study(study_name="b", storage=f"sqlite:///{folder}/adamtune.db")
        first = min(t.datetime_start for t in study.trials)
        last = max(t.datetime_complete for t in study.trials)
        return (last - first).total_seconds(), said[0] if said else "", study.best_value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--only", default="", help="workloads whose name contains this")
    parser.add_argument("--stack", default="auto", help="the stacked side (default: auto)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{args.trials} trials, pruner off, tracking off, trial phase, --stack {args.stack}")
    print(
        "| workload | --stack 1 trials/min | stacked trials/min | ratio | best value, "
        "--stack 1 / stacked | auto said |"
    )
    print("|---|---|---|---|---|---|")
    for name, options in WORKLOADS.items():
        if args.only not in name:
            continue
        alone, _, best_alone = run(options, args.trials, "1")
        stacked, said, best_stacked = run(options, args.trials, args.stack)
        per_minute = 60 * args.trials
        print(
            f"| {name} | {per_minute / alone:.0f} | {per_minute / stacked:.0f} | "
            f"{alone / stacked:.2f}x | {best_alone:.4f} / {best_stacked:.4f} | "
            f"{said.split(': ', 1)[-1]} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
