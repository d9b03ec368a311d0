"""--workers K: K worker processes on this machine sharing one study through its storage.

The study is created here first, so the workers never race to create it; each worker runs its
share of the trials with its own sampler seed (settings.worker), its own tracker, and, with
``--device cuda``, its own GPU (round-robin over the visible GPUs, through
CUDA_VISIBLE_DEVICES). This process shows progress by polling the storage. Ctrl-C reaches every
worker (same process group): each closes its running trial and its runs, then exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.config.settings import SearchSettings
from adamtune.errors import StudyError
from adamtune.search.budget import Budget
from adamtune.search.confirm import RunProgress
from adamtune.search.plan import Plan, WorkerPlan, from_worker_plan, prepare
from adamtune.search.run import around_trials, epochs_since, run_search
from adamtune.search.study import open_or_create, trials_to_run
from adamtune.search.warm import read_warm_start
from adamtune.space.search_space import SearchSpace
from adamtune.tasks import Task
from adamtune.tracking import make_tracker

POLL_SECONDS = 1.0
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def shares(n_trials: int, workers: int) -> list[int]:
    """n_trials split as evenly as possible: 10 over 3 -> [4, 3, 3]."""
    return [n_trials // workers + (i < n_trials % workers) for i in range(workers)]


def gpu_for(worker: int, device: str) -> str | None:
    """The CUDA_VISIBLE_DEVICES value for a worker, or None to leave it alone."""
    if not device.startswith("cuda"):
        return None
    import torch

    count = torch.cuda.device_count()
    return str(worker % count) if count else None


def _interrupt_once(signum: int, frame: object) -> None:
    """Ctrl-C (SIGINT from the terminal) or SIGTERM (from the parent, or a scheduler): stop
    like Ctrl-C, once; a second signal must not cut the clean-up short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker_main(plain: WorkerPlan, gpu: str | None, errors: Any, threads: int) -> None:
    """One worker: its errors go back to the parent, which prints them as one line. It takes
    its share of the cores (``threads``): a stack would otherwise take every core in every
    worker."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt_once)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(threads)
    from adamtune.errors import AdamtuneError, describe

    worker = plain.settings.worker
    try:
        run_search(plain.settings, plan=from_worker_plan(plain))
    except AdamtuneError as exc:
        errors.put(f"worker {worker}: {exc}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        errors.put(f"worker {worker}: unexpected {describe(exc)}")
        raise SystemExit(1) from None


def run_workers(
    settings: SearchSettings,
    workers: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    task: Task | None = None,
    space: SearchSpace | None = None,
    warn: Callable[[str], None] = lambda message: None,
    on_confirm: RunProgress | None = None,
    started: float | None = None,
) -> optuna.Study:
    """Run ``settings.n_trials`` trials over ``workers`` processes; return the study. The plan
    is prepared here, once; each worker receives its plain data (objects do not cross a
    spawn). This process runs what goes around the trials, as run_search does: the baseline
    first and the confirmation at the end (with a tracker of its own: one more parent run in
    MLflow), one at a time while the workers hold the cores."""
    if settings.n_trials is None and settings.timeout is None and settings.sampler != "grid":
        raise StudyError("--workers needs --n-trials or --timeout")
    budget = Budget.starting(settings.timeout, settings.confirm > 0, started)  # the clock
    warm = read_warm_start(settings.warm_start, settings.storage) if settings.warm_start else None
    plan = prepare(settings, task=task, space=space, warn=warn)
    study, created = open_or_create(settings, plan.task, plan.space, say=warn)
    settings = replace(settings, study_name=study.study_name)  # the workers open this one
    plan = replace(plan, settings=settings)
    n_trials = trials_to_run(settings, study, plan.space, warn)
    tracker = make_tracker(settings.tracking_uri, settings.experiment, settings.storage)

    split = budget.split_line()
    if split and n_trials != 0:
        warn(split)

    def trials() -> bool:
        # each worker's search ends where this command's search share does
        timeout = budget.search_seconds_left()
        _run_processes(
            study,
            replace(plan, settings=replace(settings, timeout=timeout)),
            n_trials,
            workers,
            on_trial,
        )
        budget.searched(epochs_since(study, budget.started_wall))
        return True

    try:
        around_trials(plan, study, created, tracker, trials, 1, warn, on_confirm, budget, warm)
    finally:
        tracker.close()
    return study


def _run_processes(
    study: optuna.Study,
    plan: Plan,
    n_trials: int | None,
    workers: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
) -> None:
    settings = plan.settings
    if n_trials == 0:  # a grid with no point left
        return
    seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
    context = multiprocessing.get_context("spawn")  # no forked copies of torch's threads
    errors = context.SimpleQueue()
    counts = shares(n_trials, workers) if n_trials else [None] * workers
    threads = max(1, (os.cpu_count() or 1) // sum(count != 0 for count in counts))
    processes = [
        context.Process(
            target=_worker_main,
            name=f"adamtune-worker-{i}",
            args=(
                plan.for_worker(
                    n_trials=count, worker=i, baseline=False, confirm=0, warm_start=None
                ),
                gpu_for(i, settings.device),
                errors,
                threads,
            ),
        )
        for i, count in enumerate(counts)
        if count != 0
    ]
    for process in processes:
        process.start()
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(POLL_SECONDS)
            _report_new(study, seen, on_trial)
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group); SIGTERM reached only this one.
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join(timeout=60)
        raise
    _report_new(study, seen, on_trial)
    failed = [p.name for p in processes if p.exitcode not in (0, None)]
    if failed:
        reasons = []
        while not errors.empty():
            reasons.append(errors.get())
        first = reasons[0] if reasons else "no message (killed?)"
        raise StudyError(
            f"{len(failed)} of {len(processes)} workers failed; first: {first}. "
            "Completed trials are in the study"
        )


def _report_new(
    study: optuna.Study,
    seen: set[int],
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
) -> None:
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        if trial.number not in seen:
            seen.add(trial.number)
            if on_trial is not None:
                on_trial(study, trial)
