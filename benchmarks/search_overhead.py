"""What the search machinery costs per trial when training costs nothing, in a study that
already holds many trials: Optuna's ask, TPE's sampling (constant liar, as the default search
samples), the per-epoch reports and pruning decisions, and the tell, each timed.

Both ways the search runs them, side by side in one run on one SQLite study: one trial at a
time (report, then ``should_prune``, per epoch) and a stack of rows (one transaction for all
rows' reports, every row judged against one read of the study). No model is trained: each
epoch reports a made-up metric, so the first table is the machinery's own cost.

The second table is what of it the training waits for: a real search (the search's own
code: one at a time through Optuna's optimize loop; stacked, asking at the epoch boundary as
on a CPU; and stacked with the next trials asked on a thread while an epoch trains, as on a
GPU) on a model so small that an epoch takes milliseconds, in the same kind of study, each
part timed on the training thread only.

    python benchmarks/search_overhead.py --history 1000 --trials 64 --rows 16
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import optuna
import optuna.study._optimize as optuna_optimize
import torch

from adamtune import Task, accuracy
from adamtune.search import stacked as stacked_search
from adamtune.search.objective import Objective
from adamtune.search.pruners import PeerMedianPruner
from adamtune.search.samplers import make_sampler
from adamtune.space.search_space import SearchSpace, load_space
from adamtune.storage.reads import one_read_of_trials
from adamtune.storage.writes import report_all, set_user_attrs

EPOCHS = 8


def metric(rng: random.Random, epoch: int) -> float:
    return min(1.0, 0.3 + 0.05 * epoch + rng.gauss(0.0, 0.05))


def history(space: SearchSpace, n: int, seed: int) -> list[optuna.trial.FrozenTrial]:
    """``n`` finished trials from a random search of ``space``, a quarter of them pruned."""
    rng = random.Random(seed)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed))
    for _ in range(n):
        trial = study.ask()
        space.sample(trial)
        last = EPOCHS if rng.random() > 0.25 else 2
        value = 0.0
        for epoch in range(1, last + 1):
            value = metric(rng, epoch)
            trial.report(value, epoch)
        if last == EPOCHS:
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return study.trials


class Clock:
    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.inside = False

    def time(self, part: str, work, *args):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        out = work(*args)
        self.spent[part] += time.perf_counter() - started
        return out


def sample(space: SearchSpace, trial: optuna.Trial) -> None:
    with one_read_of_trials(trial.study):
        config = space.sample(trial)
    set_user_attrs(trial, {"config": config.to_dict(), "seed": 0})


def one_at_a_time(study: optuna.Study, space: SearchSpace, trials: int, clock: Clock) -> None:
    rng = random.Random(1)
    for _ in range(trials):
        trial = clock.time("ask", study.ask)
        clock.time("sample", sample, space, trial)
        pruned = False
        for epoch in range(1, EPOCHS + 1):
            clock.time("report", trial.report, metric(rng, epoch), epoch)
            if clock.time("prune", trial.should_prune):
                pruned = True
                break
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        value = None if pruned else metric(rng, EPOCHS)
        clock.time("tell", study.tell, trial, value, state)


def stacked(study: optuna.Study, space: SearchSpace, trials: int, rows: int, clock: Clock) -> None:
    """Stacks of ``rows``, refilled at the epoch boundary as the stacked search refills them."""
    rng = random.Random(1)
    asked = 0
    running: dict[int, tuple[optuna.Trial, int]] = {}  # row -> (trial, its epoch)

    def judge(stack: dict[int, tuple[optuna.Trial, int]]) -> dict[int, bool]:
        with one_read_of_trials(study):
            return {row: trial.should_prune() for row, (trial, _) in stack.items()}

    while running or asked < trials:
        for row in range(rows):
            if row not in running and asked < trials:
                trial = clock.time("ask", study.ask)
                clock.time("sample", sample, space, trial)
                running[row] = (trial, 0)
                asked += 1
        running = {row: (trial, epoch + 1) for row, (trial, epoch) in running.items()}
        reports = [(trial, metric(rng, epoch), epoch) for trial, epoch in running.values()]
        clock.time("report", report_all, reports)
        verdicts = clock.time("prune", judge, running)
        for row, (trial, epoch) in list(running.items()):
            if verdicts[row]:
                clock.time("tell", study.tell, trial, None, optuna.trial.TrialState.PRUNED)
                del running[row]
            elif epoch == EPOCHS:
                clock.time("tell", study.tell, trial, metric(rng, EPOCHS))
                del running[row]


def measure(side: str, past: list, space: SearchSpace, args: argparse.Namespace) -> Clock:
    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{Path(folder) / 'overhead.db'}"
        study = optuna.create_study(
            storage=storage,
            direction="maximize",
            sampler=make_sampler("tpe", 0),
            pruner=PeerMedianPruner(n_startup_trials=5, n_warmup_steps=2),
        )
        study.add_trials(past)
        clock = Clock()
        if side == "1":
            one_at_a_time(study, space, args.trials, clock)
        else:
            stacked(study, space, args.trials, args.rows, clock)
        return clock


def tiny_task(epoch_steps: int) -> Task:
    """A linear model on 64 random samples: ``epoch_steps`` steps of milliseconds an epoch."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=generator), torch.randint(0, 2, (64,), generator=generator)
    return Task(
        "tiny", lambda: torch.nn.Linear(8, 2), (x, y), (x, y), torch.nn.functional.cross_entropy,
        accuracy, "val_accuracy", "maximize", EPOCHS, 64 // epoch_steps,
    )  # fmt: skip


def on_training_thread(clock: Clock, part: str, work):  # type: ignore[no-untyped-def]
    """``work`` timed into ``part`` when the training (main) thread calls it."""

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread() is not threading.main_thread() or clock.inside:
            return work(*args, **kwargs)  # another thread's, or inside a part already timed
        clock.inside = True
        started = time.perf_counter()
        try:
            return work(*args, **kwargs)
        finally:
            clock.spent[part] += time.perf_counter() - started
            clock.inside = False

    return timed


def critical_path(side: str, past: list, space: SearchSpace, args: argparse.Namespace) -> Clock:
    """A real search of ``args.trials`` trials on the tiny task, its machinery timed where the
    training thread waits for it: asking and sampling, reports and pruning, recording and
    telling."""
    clock = Clock()
    patches = [
        (optuna.Study, "ask", "ask + sample"),
        (Objective, "begin", "ask + sample"),
        (Objective, "begin_values", "ask + sample"),
        (stacked_search._Search, "start_trial", "ask + sample"),
        (stacked_search._AskAhead, "wait", "ask + sample"),
        (Objective, "report", "report + prune"),
        (stacked_search, "_judge", "report + prune"),
        (Objective, "record", "record + tell"),
        (optuna.Study, "tell", "record + tell"),
        (optuna_optimize, "_tell_with_warning", "record + tell"),  # the optimize loop's tell
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, part in patches:
        setattr(owner, name, on_training_thread(clock, part, getattr(owner, name)))
    try:
        with tempfile.TemporaryDirectory() as folder:
            study = optuna.create_study(
                storage=f"sqlite:///{Path(folder) / 'path.db'}",
                direction="maximize",
                sampler=make_sampler("tpe", 0),
                pruner=PeerMedianPruner(n_startup_trials=5, n_warmup_steps=2),
            )
            study.add_trials(past)
            objective = Objective(tiny_task(args.epoch_steps), space, epochs=EPOCHS)
            started = time.perf_counter()
            if side == "1":
                study.optimize(objective, n_trials=args.trials, catch=(Exception,))
            else:
                stacked_search.run_stacked(
                    study, objective, rows=args.rows, n_trials=args.trials, timeout=None,
                    ask_ahead=side.endswith("ahead"),
                )  # fmt: skip
            clock.spent["wall"] = time.perf_counter() - started
    finally:
        for owner, name, work in saved:
            setattr(owner, name, work)
    return clock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=1000, help="trials already in the study")
    parser.add_argument("--trials", type=int, default=64, help="trials timed")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--space", default="default")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epoch-steps", type=int, default=4, help="the tiny task's steps an epoch")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    past = history(space, args.history, seed=0)
    sides = ("1", str(args.rows))
    parts = ("ask", "sample", "report", "prune", "tell")
    spent: dict[str, dict[str, list[float]]] = {s: defaultdict(list) for s in sides}
    for _ in range(args.repeats):
        for side in sides:
            clock = measure(side, past, space, args)
            for part in parts:
                spent[side][part].append(1000 * clock.spent[part] / args.trials)
    print(
        f"ms per trial, {args.history} trials already in the study, {args.trials} timed, "
        f"TPE (constant liar), {EPOCHS} epochs, SQLite"
    )
    print("| rows | " + " | ".join(parts) + " | all |")
    print("|---|" + "---|" * (len(parts) + 1))
    for side in sides:
        cells = [statistics.median(spent[side][part]) for part in parts]
        print(f"| {side} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {sum(cells):.1f} |")

    print()
    print(
        f"ms per trial on the training thread, a real search of {args.trials} trials on a "
        f"linear model ({args.epoch_steps} steps an epoch), same study"
    )
    waits = ("ask + sample", "report + prune", "record + tell")
    print("| rows | " + " | ".join(waits) + " | machinery | whole trial |")
    print("|---|" + "---|" * (len(waits) + 2))
    for side in (*sides, f"{args.rows}, asked ahead"):
        clock = critical_path(side, past, space, args)
        cells = [1000 * clock.spent[part] / args.trials for part in waits]
        whole = 1000 * clock.spent["wall"] / args.trials
        print(
            f"| {side} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {sum(cells):.1f} "
            f"| {whole:.1f} |"
        )


if __name__ == "__main__":
    main()
