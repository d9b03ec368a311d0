"""Search quality at equal wall time: `adamtune search --timeout T` one trial at a time against
stacked, over several sampler seeds, each run in a fresh directory with the default settings
otherwise (tracking on, median pruner). Prints, per seed and stack size: trials finished, the
best trial's validation metric and its test metric, then the mean over seeds.

    python benchmarks/equal_time_quality.py --task mnist1d-mlp --timeout 120 --seeds 0,1,2

``--before DIR`` adds a third side: the stacked search run by the adamtune source tree in DIR
(a checkout of the commit before a change, ``git worktree add DIR COMMIT``), interleaved with
the others, so a change is compared with what it changed in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))


def run(
    task: str, timeout: float, seed: int, stack: str, code: str | None = None
) -> tuple[int, float, float, float]:
    """(trials finished, best validation metric, its test metric, wall seconds of the trials);
    ``code``: the adamtune source tree to run, else the installed one."""
    env = dict(os.environ, PYTHONPATH=code) if code else None
    with tempfile.TemporaryDirectory() as folder:
        args = [ADAMTUNE, "search", "--task", task, "--timeout", str(timeout)]
        args += ["--n-trials", "100000", "--seed", str(seed), "--stack", stack, "--study-name", "q"]
        subprocess.run(args, cwd=folder, check=True, capture_output=True, env=env)
        study = optuna.load_study(study_name="q", storage=f"sqlite:///{folder}/adamtune.db")
        finished = [t for t in study.trials if t.state.is_finished()]
        best = study.best_trial
        metrics = best.user_attrs.get("metrics", {})
        name = next(k for k, v in metrics.items() if k.startswith("val_") and v == best.value)
        test = metrics.get("test_" + name.removeprefix("val_"), float("nan"))
        first = min(t.datetime_start for t in finished)
        last = max(t.datetime_complete for t in finished)
        return len(finished), float(best.value), float(test), (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="mnist1d-mlp")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--stack", default="16", help="the stacked side: N or auto")
    parser.add_argument("--before", help="a source tree whose stacked search is a third side")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sides = ("1", args.stack) + ((f"{args.stack}, before",) if args.before else ())
    print(f"{args.task}, --timeout {args.timeout:g}, tracking on, default pruner")
    print("| seed | stack | trials | best validation | its test | trial phase (s) |")
    print("|---|---|---|---|---|---|")
    bests: dict[str, list[float]] = {side: [] for side in sides}
    tests: dict[str, list[float]] = {side: [] for side in sides}
    counts: dict[str, list[int]] = {side: [] for side in sides}
    for seed in (int(s) for s in args.seeds.split(",")):
        for side in sides:
            stack, _, before = side.partition(", ")
            code = args.before if before else None
            trials, best, test, phase = run(args.task, args.timeout, seed, stack, code)
            bests[side].append(best)
            tests[side].append(test)
            counts[side].append(trials)
            print(f"| {seed} | {side} | {trials} | {best:.4f} | {test:.4f} | {phase:.0f} |")
    for side in sides:
        print(
            f"| mean | {side} | {statistics.mean(counts[side]):.0f} | "
            f"{statistics.mean(bests[side]):.4f} | {statistics.mean(tests[side]):.4f} | |"
        )


if __name__ == "__main__":
    main()
