"""``adamtune search``: its options come from one table (``cli/options.py``); the command checks
what needs no torch, builds the SearchSettings, and runs one library call under a progress bar."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from adamtune._util.urls import redact
from adamtune.cli.options import resolve_tracking_uri, search_options, settings_from

if TYPE_CHECKING:
    import optuna

    from adamtune.config.settings import SearchSettings
    from adamtune.space.search_space import SearchSpace
    from adamtune.tasks import Task
    from adamtune.tracking import Tracker


@click.command()
@search_options
def search(**options: Any) -> None:
    """Run (or resume) a study: every trial trains the task with one Adam configuration."""
    import time

    started = time.monotonic()  # --timeout is the whole command's budget, from here
    from adamtune.space.search_space import load_space
    from adamtune.tasks.loader import check_spec
    from adamtune.tracking import make_tracker
    from adamtune.tracking.preflight import check_tracking_uri

    # Every check that needs no torch comes first: a mistyped flag answers in a fraction of a
    # second, and nothing is started or written.
    check_spec(options["task"])
    space = load_space(options["space"])  # once: the search reads this object
    if options["sampler"] == "grid":
        space.for_grid()  # a plain range is refused here, before anything starts
    tracking_uri = None if options["no_tracking"] else resolve_tracking_uri(options["tracking_uri"])
    settings = settings_from(options, tracking_uri)
    if settings.strategy == "pbt" and options["n_trials"] is not None:
        click.echo(
            f"Warning: --n-trials {options['n_trials']} does not apply to --strategy pbt: a "
            "population is one run of its members; --population N sets how many.",
            err=True,
        )
    if tracking_uri:
        check_tracking_uri(tracking_uri, settings.storage)
    workers = options["workers"]
    # Then, before torch and the data load: the tracking worker's MLflow import overlaps them.
    # With --workers, each worker process has a tracker of its own.
    tracker = make_tracker(
        tracking_uri if workers == 1 else None, settings.experiment, settings.storage
    )
    with sigterm_as_interrupt():
        try:
            study, task = _search(settings, space, workers, tracker, started)
        finally:
            tracker.close()
    ended = without_a_completed_trial(study)
    if ended is not None:
        message, code = ended
        if code:
            raise click.ClickException(message)
        click.echo(message, err=True)
        return
    from adamtune.results.report import best_trial_summary, gain_report
    from adamtune.results.studies import maximizes

    click.echo(best_trial_summary(study.study_name, study.best_trial, task.metric_name))
    elsewhere = running_elsewhere(study)
    if elsewhere:
        click.echo(
            f"(The study so far: {elsewhere} trial{'s' if elsewhere != 1 else ''} still running "
            "in another process; the last process to finish prints the study's answer.)"
        )
    gains = gain_report(study.user_attrs, study.best_trial, task.metric_name, maximizes(study))
    if gains:
        click.echo("\n" + gains)
    if tracking_uri and getattr(tracker, "errors", None):
        click.echo(
            f"\nMLflow at {redact(tracking_uri)} failed during the study (the warning above): "
            "runs it could not log are missing there, and runs it could not close may show "
            "RUNNING; the Optuna study holds every trial."
        )
    elif tracking_uri:
        click.echo(
            f"\nTrials logged to MLflow at {redact(tracking_uri)}, experiment "
            f"{settings.experiment or study.study_name!r}: `adamtune ui` to review."
        )


def without_a_completed_trial(study: optuna.Study) -> tuple[str, int] | None:
    """When the study has no COMPLETE trial: one line saying why, and the exit code (0 where
    trials of other processes still run and may complete; 1 where none can). None otherwise."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.COMPLETE for t in trials):
        return None
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    named = ", ".join(
        f"{n} {state.name.lower()}"
        for state, n in counts.items()
        if n and state not in (TrialState.COMPLETE, TrialState.RUNNING)
    )
    running = counts[TrialState.RUNNING]
    if running:
        return (
            f"No trial of study {study.study_name!r} has completed yet ({named or 'none finished'}); "
            f"{running} still running in other processes: the last process to finish prints "
            "the answer, or `adamtune show` once they are done.",
            0,
        )
    return (
        f"no trial of study {study.study_name!r} completed ({named or 'none ran'}); the reasons "
        "are above and in `adamtune show`",
        1,
    )


def running_elsewhere(study: optuna.Study) -> int:
    """Trials still RUNNING when this process is done: other processes' (its own are ended)."""
    from optuna.trial import TrialState

    return sum(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def _search(
    settings: SearchSettings, space: SearchSpace, workers: int, tracker: Tracker, started: float
) -> tuple[optuna.Study, Task]:
    """The study part of ``search``: the progress bar around one library call."""
    from adamtune.cli.progress import Progress
    from adamtune.search.launch import search
    from adamtune.tasks import resolve_task

    task = resolve_task(settings.task)
    progress = Progress(settings.n_trials, task.metric_name, maximize=task.direction == "maximize")
    try:
        study = search(
            settings,
            workers=workers,
            task=task,
            space=space,
            tracker=tracker,
            on_trial=progress,
            on_epoch=progress.epoch,
            on_stack=progress.stack,
            on_confirm=progress.confirm_run,
            warn=progress.say,
            started=started,
        )
    except KeyboardInterrupt:
        progress.close()
        click.echo(
            "Interrupted: completed trials are saved; run the same command to resume.", err=True
        )
        sys.exit(130)
    progress.close()
    return study, task


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (schedulers, `docker stop`, `kill`) stops a search the way Ctrl-C does: the
    running trial is recorded as failed, tracked runs are closed, completed trials stay."""

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the clean-up finish
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (an embedding application): leave it alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
