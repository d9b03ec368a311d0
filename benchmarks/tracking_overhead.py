"""Cost of MLflow tracking: `adamtune search` on the default study with tracking on, against the
same command with --no-tracking as the baseline, side by side in one run.

What is timed is what a user waits for: the whole command, from process start to exit, as a
subprocess. Every run gets a fresh Optuna storage and the same seed, so every run trains the
same trials (checked: the trial values must match the baseline's, else the script fails).
Tracking goes into an MLflow store that is reused ("warm", what every invocation after the
first sees) or created by the run ("cold", includes creating the store's tables). Order is
interleaved: off, warm, cold, off, ... so machine noise hits all three alike.

Each run's wall time is split by the trials' own timestamps: set-up (process start to the first
trial), trials (first trial start to last trial end) and wind-down (last trial end to exit,
which with tracking includes the summary plots).

    python benchmarks/tracking_overhead.py [--repeats 5] [-- extra search flags]
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

MODES = {
    "off": "off (--no-tracking)",
    "warm": "on, existing MLflow store",
    "cold": "on, new MLflow store",
}


def search(root: Path, name: str, tracking: str | None, extra: list[str]) -> tuple[float, float]:
    """Start time (epoch seconds) and wall seconds of one `adamtune search` into its own
    storage; raises if it fails."""
    command = [sys.executable, "-m", "adamtune.cli", "search", "--study-name", name]
    command += ["--storage", f"sqlite:///{root / f'{name}.db'}", *extra]
    command += ["--tracking-uri", tracking] if tracking else ["--no-tracking"]
    started, start = time.time(), time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return started, wall


def trials_of(root: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{root / f'{name}.db'}"
    return optuna.load_study(study_name=name, storage=storage).trials


def phases(started: float, wall: float, trials: list[optuna.trial.FrozenTrial]) -> list[float]:
    """[set-up, trials, wind-down] seconds of one run."""
    first = trials[0].datetime_start.timestamp() - started
    last = max(t.datetime_complete.timestamp() for t in trials) - started
    return [first, last - first, wall - last]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("extra", nargs="*", help="more `adamtune search` flags, after --")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    parts: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm_store = f"sqlite:///{root / 'warm-mlflow.db'}"
        search(root, "prime", warm_store, ["--n-trials", "1", "--epochs", "1"])
        baseline: list[float | None] | None = None
        for i in range(args.repeats):
            for mode in MODES:
                name = f"bench-{mode}-{i}"
                tracking = {"off": None, "warm": warm_store}.get(
                    mode, f"sqlite:///{root / f'cold-{i}.db'}"
                )
                started, wall = search(root, name, tracking, args.extra)
                trials = trials_of(root, name)
                walls[mode].append(wall)
                parts[mode].append(phases(started, wall, trials))
                values = [t.value for t in trials]
                if baseline is None:
                    baseline = values
                elif values != baseline:
                    raise SystemExit(f"{name} trained different trials than the baseline")
                split = " / ".join(f"{p:.2f}" for p in parts[mode][-1])
                print(f"{mode:>4} run {i + 1}: {wall:.2f} s ({split})", flush=True)
    off = statistics.median(walls["off"])
    print(
        "\n| tracking | wall s | ratio of medians | median of paired ratios "
        "| set-up s | trials s | wind-down s |\n|---|---|---|---|---|---|---|"
    )
    for mode, label in MODES.items():
        wall = statistics.median(walls[mode])
        paired = statistics.median(w / o for w, o in zip(walls[mode], walls["off"], strict=True))
        split = " | ".join(f"{statistics.median(p[k] for p in parts[mode]):.2f}" for k in range(3))
        print(f"| {label} | {wall:.2f} | {wall / off:.3f} | {paired:.3f} | {split} |")
    print(f"(medians of {args.repeats} runs each; a paired ratio divides a run by the")
    print(" --no-tracking run just before it, which cancels slow drifts of the machine)")


if __name__ == "__main__":
    main()
