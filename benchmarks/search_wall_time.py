"""Wall time of the default study (`adamtune search` with no options), and the cost of a trial
with adamtune's FusedAdam against torch's own Adam (--optimizer torch) as the baseline.

Each run uses a fresh SQLite file in a temporary directory, so nothing is resumed. The first
row is the default study as a user runs it. The next two run the same study with pruning off,
so both optimizers do exactly the same number of training steps and their ratio compares like
with like (with pruning on, tiny numerical differences change which trials get pruned). torch's
optimizers import torch._dynamo on first use (1-2 s, which FusedAdam avoids); that one-off
import is made before the torch row, so the ratio compares training, not imports.

    python benchmarks/search_wall_time.py [--n-trials 20] [--task digits-mlp]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from optuna.trial import TrialState

from adamtune.config.settings import SearchSettings
from adamtune.search.run import run_search
from adamtune.tasks import resolve_task


def run(optimizer: str, n_trials: int, task: str, pruner: str) -> tuple[float, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings(
            task=task,
            n_trials=n_trials,
            optimizer=optimizer,
            pruner=pruner,
            storage=f"sqlite:///{Path(tmp) / 'bench.db'}",
        )
        start = time.perf_counter()
        study = run_search(settings)
        return time.perf_counter() - start, study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--task", default="digits-mlp")
    args = parser.parse_args()
    resolve_task(args.task)  # build the data set once, outside the timings
    print(f"| optimizer | pruner | wall s | s/trial | complete | pruned | best {args.task} |")
    print("|---|---|---|---|---|---|---|")
    walls = {}
    for optimizer, pruner in (("fused", "median"), ("fused", "none"), ("torch", "none")):
        if optimizer == "torch":
            import torch._dynamo  # noqa: F401  (see the module doc)
        wall, study = run(optimizer, args.n_trials, args.task, pruner)
        walls[optimizer, pruner] = wall
        states = [t.state for t in study.trials]
        print(
            f"| {optimizer} | {pruner} | {wall:.1f} | {wall / len(states):.2f} | "
            f"{states.count(TrialState.COMPLETE)} | {states.count(TrialState.PRUNED)} | "
            f"{study.best_value:.4f} (trial {study.best_trial.number}) |",
            flush=True,
        )
    ratio = walls["fused", "none"] / walls["torch", "none"]
    print(f"\nfused / torch wall-time ratio, same steps (pruner none): {ratio:.2f}")


if __name__ == "__main__":
    main()
