"""Cost of MLflow tracking: the default study with tracking on, against the same study with
--no-tracking as the baseline, side by side in one run.

Both runs use pruner "none" so they do exactly the same training work (with pruning, tiny
timing-independent differences could prune different trials; they do not here, but this removes
the doubt). Each run gets a fresh Optuna storage; tracking runs into an MLflow store that is
created fresh ("cold", includes creating the store's tables) or reused ("warm", what every
invocation after the first sees). Order is interleaved: off, cold, warm, off, ...

    python benchmarks/tracking_overhead.py [--repeats 2] [--n-trials 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from adamtune.study import SearchSettings, run_search
from adamtune.tasks import resolve_task


def timed(settings: SearchSettings) -> float:
    start = time.perf_counter()
    run_search(settings)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-trials", type=int, default=20)
    args = parser.parse_args()
    resolve_task("digits-mlp")  # data built once, outside the timings
    import mlflow  # noqa: F401  # a CLI process pays this import once; keep it out of the ratio

    walls: dict[str, list[float]] = {"off": [], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm_store = f"sqlite:///{root / 'warm-mlflow.db'}"
        timed(
            SearchSettings(
                n_trials=1,
                epochs=1,
                pruner="none",
                tracking_uri=warm_store,
                storage=f"sqlite:///{root / 'prime.db'}",
            )
        )
        for i in range(args.repeats):
            for mode, uri in (
                ("off", None),
                ("cold", f"sqlite:///{root / f'cold{i}.db'}"),
                ("warm", warm_store),
            ):
                settings = SearchSettings(
                    n_trials=args.n_trials,
                    pruner="none",
                    storage=f"sqlite:///{root / f'{mode}{i}-optuna.db'}",
                    tracking_uri=uri,
                    study_name=f"bench-{mode}-{i}",
                )
                walls[mode].append(timed(settings))
                print(f"{mode:>4} run {i + 1}: {walls[mode][-1]:.2f} s", flush=True)
    off = statistics.median(walls["off"])
    print(f"\n| tracking | wall s (median of {args.repeats}) | ratio to --no-tracking |")
    print("|---|---|---|")
    for mode, label in (
        ("off", "off (--no-tracking)"),
        ("warm", "on, existing MLflow store"),
        ("cold", "on, new MLflow store"),
    ):
        wall = statistics.median(walls[mode])
        print(f"| {label} | {wall:.2f} | {wall / off:.3f} |")


if __name__ == "__main__":
    main()
