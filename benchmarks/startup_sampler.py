"""Does a space-filling start beat TPE's random start-up at 10-30 trials?

TPE samples its first 10 trials at random. This runs the default search (the default space,
the baseline as trial 0, stacked trials, tracking and confirmation off) twice per sampler seed:
once with adamtune's TPE as it is, once with the same TPE whose start-up trials come from
Optuna's QMCSampler (scrambled Sobol, seeded alike). It prints the best validation value among
the first 10, 20 and 30 trials of each, the mean over seeds, and the QMC start's mean gain.

    python benchmarks/startup_sampler.py --task mnist1d-mlp --trials 30 --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import adamtune.search.samplers
from adamtune.config.settings import SearchSettings
from adamtune.search.run import run_search
from adamtune.tasks import resolve_task

STARTUP = 10  # TPE's n_startup_trials


class QmcStart(optuna.samplers.BaseSampler):
    """Trials numbered below STARTUP from QMCSampler, the rest from ``tpe``."""

    def __init__(self, tpe: optuna.samplers.BaseSampler, seed: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.qmc = optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
        self.tpe = tpe

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        return self.qmc if trial.number < STARTUP else self.tpe

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, space: Any) -> Any:
        return self._for(trial).sample_relative(study, trial, space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: Any
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)


PLAIN = adamtune.search.samplers.make_sampler


def with_qmc_start(name: str, seed: int, space: Any = None) -> optuna.samplers.BaseSampler:
    sampler = PLAIN(name, seed, space)
    return QmcStart(sampler, seed) if name == "tpe" else sampler


def best_so_far(task_name: str, trials: int, seed: int, qmc: bool) -> list[float]:
    """The best value among the first 10, 20, ... trials of one search."""
    adamtune.search.samplers.make_sampler = with_qmc_start if qmc else PLAIN
    try:
        with tempfile.TemporaryDirectory() as folder:
            settings = SearchSettings(
                task=task_name,
                n_trials=trials,
                seed=seed,
                storage=f"sqlite:///{Path(folder) / 'a.db'}",
                study_name="startup",
            )
            study = run_search(settings, task=resolve_task(task_name))
    finally:
        adamtune.search.samplers.make_sampler = PLAIN
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials_by_number = sorted(study.trials, key=lambda t: t.number)
    out = []
    for n in range(STARTUP, trials + 1, STARTUP):
        values = [t.value for t in trials_by_number[:n] if t.state == TrialState.COMPLETE]
        out.append((max if maximize else min)(values))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d-mlp")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2,3")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    marks = list(range(STARTUP, args.trials + 1, STARTUP))
    results: dict[bool, list[list[float]]] = {False: [], True: []}
    print(f"task {args.task}, {args.trials} trials, sampler seeds {seeds}")
    header = "seed  start   " + "  ".join(f"best@{n:<4}" for n in marks)
    print(header)
    for seed in seeds:
        for qmc in (False, True):
            row = best_so_far(args.task, args.trials, seed, qmc)
            results[qmc].append(row)
            cells = "  ".join(f"{v:<9.4f}" for v in row)
            print(f"{seed:<5} {'qmc' if qmc else 'random':<7} {cells}", flush=True)
    print("\nmean over seeds (qmc minus random; > 0 is better for a maximised metric)")
    for i, n in enumerate(marks):
        plain = statistics.mean(r[i] for r in results[False])
        qmc = statistics.mean(r[i] for r in results[True])
        wins = sum(q[i] > p[i] for q, p in zip(results[True], results[False], strict=True))
        ties = sum(q[i] == p[i] for q, p in zip(results[True], results[False], strict=True))
        print(
            f"best@{n}: random {plain:.4f}, qmc {qmc:.4f}, difference {qmc - plain:+.4f}; "
            f"qmc better on {wins}/{len(seeds)} seeds, tied on {ties}"
        )


if __name__ == "__main__":
    main()
