"""Does `adamtune search --timeout S` end within S? The whole command, timed from outside.

For each (strategy, budget, seed): `adamtune search --timeout S` in a fresh directory, its wall
time from process start to exit, and the ratio to S; the target is at most 1.10 (the budget
plus 10%). Also what the budget bought: trials finished, populations' generations, and whether
confirmation ran and how large.

    python benchmarks/budget.py --budgets 30,60 --strategies search,pbt --seeds 0,1
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))


def run(strategy: str, budget: int, seed: int, task: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        done = subprocess.run(
            [ADAMTUNE, "search", "--task", task, "--timeout", str(budget), "--seed", str(seed)]
            + ["--n-trials", "100000", "--strategy", strategy, "--no-tracking"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.monotonic() - started
    err = done.stderr
    trials = re.findall(r"(\d+)/\d+ trials", err)
    confirmed = re.search(r"Confirmed over (\d+) seeds", done.stdout)
    return {
        "exit": done.returncode,
        "seconds": took,
        "ratio": took / budget,
        "trials": trials[-1] if trials else "-",
        "generations": 1 + len(re.findall(r"Population: generation", err)),
        "confirmed": f"{confirmed.group(1)} seeds" if confirmed else "no",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="30,60")
    parser.add_argument("--strategies", default="search,pbt")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--task", default="mnist1d-mlp")
    args = parser.parse_args()
    print(
        "| strategy | --timeout | seed | wall s | wall / budget | trials | generations | confirmed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for strategy in args.strategies.split(","):
        for budget in map(int, args.budgets.split(",")):
            for seed in map(int, args.seeds.split(",")):
                r = run(strategy, budget, seed, args.task)
                worst = max(worst, float(r["ratio"]))  # type: ignore[arg-type]
                trials = r["trials"] if strategy == "search" else "-"
                generations = r["generations"] if strategy == "pbt" else "-"
                print(
                    f"| {strategy} | {budget} | {seed} | {r['seconds']:.1f} | {r['ratio']:.3f} "
                    f"| {trials} | {generations} | {r['confirmed']} |",
                    flush=True,
                )
    print(f"\nworst wall / budget: {worst:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
