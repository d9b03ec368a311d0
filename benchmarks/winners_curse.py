"""The winner's curse, measured: how optimistic a search's best single run is, and what K seeds
of confirmation cost and change.

For each sampler seed: `adamtune search` with the default settings (tracking off, no
confirmation), then the top trials and the baseline retrained under --max-k further seeds, once,
stacked (adamtune.confirm). From those runs it prints, per seed and for every K <= max-k (the
first K confirmation seeds): the search's best trial's single-run value against its own mean
over K seeds (the optimism), the winner K seeds pick and its mean, and the confirmed gain over
the baseline; then the cost of confirmation, side by side with the search it follows.

    python benchmarks/winners_curse.py --task mnist1d-mlp --trials 20 --seeds 0,1,2 --max-k 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from adamtune.config.settings import SearchSettings
from adamtune.results.gain import mean_sd, study_baseline
from adamtune.search.confirm import confirm_study
from adamtune.search.run import run_search
from adamtune.tasks import resolve_task
from adamtune.tracking import NullTracker
from adamtune.training.runner import Runner
from adamtune.training.single import resolve_device
from adamtune.training.stacked.sizing import confirmation_rows


def one_seed(task_name: str, trials: int, seed: int, max_k: int, top: int) -> dict:
    task = resolve_task(task_name)
    with tempfile.TemporaryDirectory() as folder:
        settings = SearchSettings(
            task=task_name,
            n_trials=trials,
            seed=seed,
            storage=f"sqlite:///{Path(folder) / 'a.db'}",
            study_name="curse",
        )
        started = time.perf_counter()
        study = run_search(settings, task=task)
        search_seconds = time.perf_counter() - started
        device = resolve_device("auto")
        rows = confirmation_rows(task, device, 16, (top + 1) * max_k)
        runner = Runner(task, device=device, rows=rows)
        started = time.perf_counter()
        confirmation = confirm_study(
            study, runner, k=max_k, top=top, seed=seed, tracker=NullTracker()
        )
        confirm_seconds = time.perf_counter() - started
    assert confirmation is not None and confirmation.baseline is not None
    best = max(confirmation.candidates, key=lambda c: c.search_value or 0.0)
    per_k = {}
    for k in range(1, max_k + 1):
        means = {c.trial: mean_sd(c.values[:k])[0] for c in confirmation.candidates}
        winner = max(means, key=lambda n: means[n] if means[n] is not None else -1.0)
        base = mean_sd(confirmation.baseline.values[:k])[0]
        per_k[k] = {
            "best_single": best.search_value,
            "best_mean": means[best.trial],
            "winner": winner,
            "winner_mean": means[winner],
            "winner_test": mean_sd(
                next(c for c in confirmation.candidates if c.trial == winner).test_values[:k]
            )[0],
            "gain": (means[winner] or 0.0) - (base or 0.0),
        }
    return {
        "best_trial": best.trial,
        "baseline_search": study_baseline(study.user_attrs).value,
        "per_k": per_k,
        "search_seconds": search_seconds,
        "confirm_seconds": confirm_seconds,
        "rows": rows,
        "runs": (top + 1) * max_k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d-mlp")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-k", type=int, default=5)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        results[seed] = r = one_seed(args.task, args.trials, seed, args.max_k, args.top)
        print(
            f"seed {seed}: search {r['search_seconds']:.1f} s; confirmation of {args.top} trials "
            f"+ baseline x {args.max_k} seeds ({r['runs']} runs, {r['rows']} rows a stack) "
            f"{r['confirm_seconds']:.1f} s; search's best trial {r['best_trial']}"
        )
        for k, row in r["per_k"].items():
            print(
                f"  K={k}: best single run {row['best_single']:.4f} -> its mean "
                f"{row['best_mean']:.4f} (optimism {row['best_single'] - row['best_mean']:+.4f}); "
                f"winner trial {row['winner']} mean {row['winner_mean']:.4f}, test "
                f"{row['winner_test']:.4f}; gain over baseline {row['gain'] * 100:+.1f} points"
            )
    print("\nmeans over seeds")
    for k in range(1, args.max_k + 1):
        rows = [r["per_k"][k] for r in results.values()]
        optimism = statistics.fmean(row["best_single"] - row["best_mean"] for row in rows)
        changed = sum(
            row["winner"] != r["best_trial"] for row, r in zip(rows, results.values(), strict=True)
        )
        test = statistics.fmean(row["winner_test"] for row in rows)
        gain = statistics.fmean(row["gain"] for row in rows)
        print(
            f"K={k}: optimism of the search's best {optimism:+.4f}; winner differs from the "
            f"search's best in {changed}/{len(rows)}; winner's test {test:.4f}; confirmed gain "
            f"{gain * 100:+.1f} points"
        )
    search = statistics.fmean(r["search_seconds"] for r in results.values())
    confirm = statistics.fmean(r["confirm_seconds"] for r in results.values())
    print(
        f"time: search {search:.1f} s, confirmation at K={args.max_k} {confirm:.1f} s "
        f"({confirm / search:.2f}x the search)"
    )


if __name__ == "__main__":
    main()
