"""Stacked trials against one at a time, side by side: the same number of trials of a task,
`adamtune search --stack 1` and `--stack N`, interleaved, each in a fresh directory.

Prints, per task: the trial phase (first trial's start to last trial's end, from the study's
own timestamps), trials per minute, and the whole command (start to prompt), with the ratios.

    python benchmarks/stacked_trials.py --tasks digits-mlp,mnist1d-mlp --trials 64 --stack 16
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))


def run(task: str, trials: int, stack: int, tracking: bool, pruner: str) -> tuple[float, float]:
    """(trial phase seconds, whole command seconds) of one search in a fresh directory."""
    with tempfile.TemporaryDirectory() as folder:
        args = [ADAMTUNE, "search", "--task", task, "--n-trials", str(trials), "--pruner", pruner]
        args += ["--stack", str(stack), "--study-name", "b"]
        args += [] if tracking else ["--no-tracking"]
        started = time.perf_counter()
        subprocess.run(args, cwd=folder, check=True, capture_output=True)
        whole = time.perf_counter() - started
        study = optuna.load_study(study_name="b", storage=f"sqlite:///{folder}/adamtune.db")
        first = min(t.datetime_start for t in study.trials)
        last = max(t.datetime_complete for t in study.trials)
        return (last - first).total_seconds(), whole


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="digits-mlp,mnist1d-mlp,mnist1d-cnn")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--stack", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tracking", action="store_true", help="log to MLflow (default: off)")
    parser.add_argument("--pruner", default="none", help="the study's pruner (default: none)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking = "on" if args.tracking else "off"
    print(f"{args.trials} trials, pruner {args.pruner}, tracking {tracking}")
    print("| task | stack | trial phase (s) | trials/min | whole command (s) |")
    print("|---|---|---|---|---|")
    for task in args.tasks.split(","):
        phases: dict[int, list[float]] = {1: [], args.stack: []}
        wholes: dict[int, list[float]] = {1: [], args.stack: []}
        for _ in range(args.repeats):
            for stack in (1, args.stack):
                phase, whole = run(task, args.trials, stack, args.tracking, args.pruner)
                phases[stack].append(phase)
                wholes[stack].append(whole)
        for stack in (1, args.stack):
            phase, whole = statistics.median(phases[stack]), statistics.median(wholes[stack])
            print(
                f"| {task} | {stack} | {phase:.1f} | {60 * args.trials / phase:.0f} | {whole:.1f} |"
            )
        p1, pn = statistics.median(phases[1]), statistics.median(phases[args.stack])
        w1, wn = statistics.median(wholes[1]), statistics.median(wholes[args.stack])
        print(f"| {task} | ratio | {p1 / pn:.2f}x | | {w1 / wn:.2f}x |")


if __name__ == "__main__":
    main()
