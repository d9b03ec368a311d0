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

from adamtune.errors import StudyError
from adamtune.search.confirm import RunProgress
from adamtune.search.run import (
    SearchSettings,
    check_values_reach,
    confirm,
    open_or_create,
    run_search,
    start_baseline,
    trials_to_run,
)
from adamtune.space.search_space import SearchSpace, load_space
from adamtune.tasks import Task, resolve_task
from adamtune.tracking import make_tracker
from adamtune.training.first_batch import check_one_batch
from adamtune.training.runner import Runner
from adamtune.training.single import resolve_device, run_precision

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


def _worker_main(settings: SearchSettings, gpu: str | None, errors: Any, threads: int) -> None:
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

    try:
        run_search(settings)
    except AdamtuneError as exc:
        errors.put(f"worker {settings.worker}: {exc}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        errors.put(f"worker {settings.worker}: unexpected {describe(exc)}")
        raise SystemExit(1) from None


def run_workers(
    settings: SearchSettings,
    workers: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    task: Task | None = None,
    space: SearchSpace | None = None,
    warn: Callable[[str], None] = lambda message: None,
    on_confirm: RunProgress | None = None,
) -> optuna.Study:
    """Run ``settings.n_trials`` trials over ``workers`` processes; return the study. Each
    process resolves the task and the space again: objects do not cross a spawn. This process
    evaluates a new study's baseline first and confirms the top trials at the end (with a
    tracker of its own: one more parent run in MLflow)."""
    if settings.n_trials is None and settings.timeout is None and settings.sampler != "grid":
        raise StudyError("--workers needs --n-trials or --timeout")
    task = task or resolve_task(settings.task)
    space = space or load_space(settings.space)
    if settings.sampler == "grid":
        space = space.for_grid()
    study, created = open_or_create(settings, task, space)
    settings = replace(settings, study_name=study.study_name)  # the workers open this one
    n_trials = trials_to_run(settings, study, space, warn)
    # The baseline and the confirmation run here, once, around the workers' trials.
    device = resolve_device(settings.device)
    check_values_reach(task, space)
    check_one_batch(task, device, run_precision(settings.precision, device))
    runner = Runner(
        task,
        settings.epochs,
        device,
        settings.optimizer,
        settings.patience,
        precision=settings.precision,
        declared=space.model,
    )
    tracker = make_tracker(settings.tracking_uri, settings.experiment, settings.storage)
    tracker.start_study(study.study_name, settings.redacted(), space.text)
    finished = False
    try:
        if settings.baseline:
            start_baseline(study, space, settings, runner, tracker, warn, created)
        _run_processes(study, replace(settings, n_trials=n_trials), workers, on_trial)
        if settings.confirm:
            confirm(study, runner, settings, tracker, warn, on_confirm)
        finished = True
    finally:
        tracker.end_study(study.study_name, interrupted=not finished)
        tracker.close()
    return study


def _run_processes(
    study: optuna.Study,
    settings: SearchSettings,
    workers: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
) -> None:
    if settings.n_trials == 0:  # a grid with no point left
        return
    seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
    context = multiprocessing.get_context("spawn")  # no forked copies of torch's threads
    errors = context.SimpleQueue()
    counts = shares(settings.n_trials, workers) if settings.n_trials else [None] * workers
    threads = max(1, (os.cpu_count() or 1) // sum(count != 0 for count in counts))
    processes = [
        context.Process(
            target=_worker_main,
            name=f"adamtune-worker-{i}",
            args=(
                replace(settings, n_trials=count, worker=i, baseline=False, confirm=0),
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
