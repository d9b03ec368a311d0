"""Stacked trials against one at a time, side by side: the same number of trials of a task,
`adamtune search --stack 1` and `--stack N`, interleaved, each in a fresh directory.

Prints, per task: the trial phase (first trial's start to last trial's end, from the study's
own timestamps), trials per minute, and the whole command (start to prompt), with the ratios;
and what the pruner did on each side: trials COMPLETE / PRUNED and the epochs trained in all.

    python benchmarks/stacked_trials.py --tasks digits-mlp,mnist1d-mlp --trials 64 --stack 16
    python benchmarks/stacked_trials.py --tasks digits-mlp,mnist1d-mlp --trials 64 \
        --stack auto --pruner median --tracking      # the default command, both sides

``--before DIR`` adds a third side: the stacked search run by the adamtune source tree in DIR
(``git worktree add DIR COMMIT``), interleaved with the others, with its ratio to this one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))


def run(
    task: str, trials: int, stack: str, tracking: bool, pruner: str, seed: int, code: str | None
) -> tuple[float, float, str]:
    """(trial phase seconds, whole command seconds, what the pruner did) of one search in a
    fresh directory; ``code``: the adamtune source tree to run, else the installed one."""
    env = dict(os.environ, PYTHONPATH=code) if code else None
    with tempfile.TemporaryDirectory() as folder:
        args = [ADAMTUNE, "search", "--task", task, "--n-trials", str(trials), "--pruner", pruner]
        args += ["--stack", stack, "--study-name", "b", "--seed", str(seed)]
        args += [] if tracking else ["--no-tracking"]
        started = time.perf_counter()
        subprocess.run(args, cwd=folder, check=True, capture_output=True, env=env)
        whole = time.perf_counter() - started
        study = optuna.load_study(study_name="b", storage=f"sqlite:///{folder}/adamtune.db")
        first = min(t.datetime_start for t in study.trials)
        last = max(t.datetime_complete for t in study.trials)
        count = {s: sum(t.state == s for t in study.trials) for s in TrialState}
        epochs = sum(len(t.intermediate_values) for t in study.trials)
        phase = (last - first).total_seconds()
        pruning = f"{count[TrialState.COMPLETE]} / {count[TrialState.PRUNED]}, {epochs} epochs"
        return phase, whole, f"{pruning}, {phase:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="digits-mlp,mnist1d-mlp,mnist1d-cnn")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--stack", default="16", help="the stacked side: a width or auto")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, same seed")
    parser.add_argument("--seeds", default="0", help="search seeds, a run per side each: 0,1,2")
    parser.add_argument("--tracking", action="store_true", help="log to MLflow (default: off)")
    parser.add_argument("--pruner", default="none", help="the study's pruner (default: none)")
    parser.add_argument("--before", help="a source tree whose stacked search is a third side")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking = "on" if args.tracking else "off"
    print(f"{args.trials} trials, pruner {args.pruner}, tracking {tracking}")
    print(
        "| task | stack | trial phase (s) | trials/min | whole command (s) "
        "| each run: complete / pruned, epochs trained, trial phase |"
    )
    print("|---|---|---|---|---|---|")
    before = f"{args.stack}, before"
    sides = ("1", args.stack) + ((before,) if args.before else ())
    for task in args.tasks.split(","):
        phases: dict[str, list[float]] = {side: [] for side in sides}
        wholes: dict[str, list[float]] = {side: [] for side in sides}
        prunings: dict[str, list[str]] = {side: [] for side in sides}
        runs = [int(seed) for seed in args.seeds.split(",") for _ in range(args.repeats)]
        for seed in runs:
            for side in sides:
                stack, _, old = side.partition(", ")
                code = args.before if old else None
                phase, whole, pruning = run(
                    task, args.trials, stack, args.tracking, args.pruner, seed, code
                )
                phases[side].append(phase)
                wholes[side].append(whole)
                prunings[side].append(pruning)
        for side in sides:
            phase, whole = statistics.median(phases[side]), statistics.median(wholes[side])
            print(
                f"| {task} | {side} | {phase:.1f} | {60 * args.trials / phase:.0f} "
                f"| {whole:.1f} | {'; '.join(prunings[side])} |"
            )
        p1, pn = statistics.median(phases["1"]), statistics.median(phases[args.stack])
        w1, wn = statistics.median(wholes["1"]), statistics.median(wholes[args.stack])
        print(f"| {task} | ratio | {p1 / pn:.2f}x | | {w1 / wn:.2f}x | |")
        if args.before:
            pb, wb = statistics.median(phases[before]), statistics.median(wholes[before])
            print(f"| {task} | before / now | {pb / pn:.2f}x | | {wb / wn:.2f}x | |")


if __name__ == "__main__":
    main()
