"""The ``adamtune`` command: a thin skin over the library. Each command parses its options,
calls one library function and prints the result. Every option can also be set from the
environment variable named in ``--help`` (ADAMTUNE_*).

Errors a user can fix (AdamtuneError, bad flags) print one line ``Error: ...`` on stderr and
exit non-zero, without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from adamtune._util.urls import redact, scrub
from adamtune.config.settings import (
    FORMATS,
    MAX_CONFIRM,
    MAX_EPOCHS,
    MAX_HEARTBEAT,
    MAX_PARALLEL,
    MAX_STACK,
    OPTIMIZERS,
    PRECISIONS,
    PRUNERS,
    SAMPLERS,
    SEED_LIMIT,
)
from adamtune.errors import AdamtuneError, describe, one_line

if TYPE_CHECKING:
    import optuna

    from adamtune.config.settings import SearchSettings
    from adamtune.tasks import Task
    from adamtune.tracking import Tracker

DEFAULT_STORAGE = "sqlite:///adamtune.db"


SECRET_ENV = ("ADAMTUNE_STORAGE", "ADAMTUNE_TRACKING_URI", "MLFLOW_TRACKING_URI")


class AdamtuneGroup(click.Group):
    """Prints every error as a single line on stderr, with no password in it, and exits
    non-zero: usage errors, AdamtuneErrors, and (as a last resort) anything unexpected."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, *rest, **kwargs)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code, argv)
        except AdamtuneError as exc:
            _fail(str(exc), exc.exit_code, argv)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:
            if _unwritable_output(exc):
                _fail(f"cannot write the output: {getattr(exc, 'strerror', None) or exc}", 1, argv)
            if os.environ.get("ADAMTUNE_DEBUG"):
                raise
            _fail(
                f"unexpected {describe(exc)} (a bug in adamtune: ADAMTUNE_DEBUG=1 shows where)",
                70,
                argv,
            )
        sys.exit(code if isinstance(code, int) else 0)


def _unwritable_output(exc: BaseException) -> bool:
    """Writing stdout or stderr failed (a full disk, a closed pipe): no file of ours is named."""
    return (
        isinstance(exc, OSError)
        and exc.errno in (errno.ENOSPC, errno.EPIPE, errno.EIO)
        and not exc.filename
    )


def _fail(message: str, code: int, argv: list[str]) -> None:
    """One line on stderr: the message with every password the user gave us scrubbed."""
    urls = [a for a in argv if "://" in a] + [os.environ.get(name, "") for name in SECRET_ENV]
    click.echo(f"Error: {one_line(scrub(message, [u for u in urls if u]))}", err=True)
    sys.exit(code)


class FiniteFloat(click.ParamType):
    """A float > 0 that is a real number of seconds (click's FloatRange lets nan through)."""

    name = "seconds"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"must be a finite number of seconds > 0, got {value!r}", param, ctx)
        return number


class StackSize(click.ParamType):
    """--stack: a number of rows from 1 to MAX_STACK, or auto."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) or str(value).strip().lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            rows = int(str(value))
        except ValueError:
            self.fail(f"must be a whole number or auto, got {value!r}", param, ctx)
        if not 1 <= rows <= MAX_STACK:
            self.fail(f"must be in [1, {MAX_STACK}] or auto, got {value!r}", param, ctx)
        return rows


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


def env_option(flag: str, *decls: str, **kwargs: Any) -> Any:
    """A click option that can also be set from ADAMTUNE_<FLAG> (shown in --help)."""
    envvar = "ADAMTUNE_" + flag.lstrip("-").replace("-", "_").upper()
    return click.option(flag, *decls, envvar=envvar, show_envvar=True, **kwargs)


def storage_option(func: Any) -> Any:
    return env_option(
        "--storage",
        default=DEFAULT_STORAGE,
        show_default=True,
        help="Optuna storage URL: sqlite:///FILE, postgresql://..., "
        "mysql+pymysql://..., journal:FILE or grpc://HOST:PORT.",
    )(func)


@click.group(cls=AdamtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adamtune")
def cli() -> None:
    """Tune Adam/AdamW hyperparameters and the LR schedule with Optuna."""


@cli.command()
@env_option(
    "--task",
    default="mnist1d-mlp",
    show_default=True,
    help="Built-in task (see `adamtune tasks`), module:function or file.py:function.",
)
@env_option(
    "--space",
    default="default",
    show_default=True,
    help="Shipped space name (see `adamtune spaces`) or a YAML path.",
)
@env_option(
    "--n-trials",
    type=click.IntRange(min=1),
    default=None,
    help="New trials to run in this invocation (the first of a new study is the baseline, "
    "where it lies in the space).  [default: 20; the rest of the grid with --sampler grid]",
)
@env_option(
    "--timeout",
    type=FiniteFloat(),
    default=None,
    help="Stop starting new trials after this many seconds.",
)
@env_option(
    "--study-name",
    default=None,
    help="Study to create or resume.  [default: TASK-SPACE]",
)
@storage_option
@env_option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default="tpe",
    show_default=True,
)
@env_option(
    "--pruner",
    type=click.Choice(PRUNERS),
    default="median",
    show_default=True,
)
@env_option(
    "--seed",
    type=click.IntRange(0, SEED_LIMIT - 1),
    default=0,
    show_default=True,
    help="Seeds the sampler, the weights and the batch order.",
)
@env_option(
    "--device",
    default="auto",
    show_default=True,
    help="auto, cpu, cuda or cuda:N.",
)
@env_option(
    "--epochs",
    type=click.IntRange(1, MAX_EPOCHS),
    default=None,
    help="Epochs per trial.  [default: the task's]",
)
@env_option(
    "--n-jobs",
    type=click.IntRange(1, MAX_PARALLEL),
    default=1,
    show_default=True,
    help="Parallel trials (threads) in this process.",
)
@env_option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS),
    default="fused",
    show_default=True,
    help="fused: adamtune.optim.FusedAdam; torch: torch.optim.Adam/AdamW.",
)
@env_option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="bf16/fp16: autocast forward and loss (fp16 with a loss scaler), fp32 weights and "
    "Adam state; bf16-pure: bf16 weights, fp32 Adam state, stochastic rounding.",
)
@env_option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (a local store or http://server).  "
    "[default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]",
)
@env_option(
    "--no-tracking",
    is_flag=True,
    help="Do not log to MLflow.",
)
@env_option(
    "--experiment",
    default=None,
    help="MLflow experiment.  [default: the study name]",
)
@env_option(
    "--stack",
    type=StackSize(),
    default="auto",
    show_default=True,
    help="Trials trained at once as one stacked model: N, or auto (16 on CPU, 64 on CUDA, "
    "within the free memory; one at a time for a model that cannot stack, --optimizer other "
    "than fused, or --n-jobs).",
)
@env_option(
    "--workers",
    type=click.IntRange(1, MAX_PARALLEL),
    default=1,
    show_default=True,
    help="Worker processes on this machine sharing the study (use PostgreSQL or journal:).",
)
@env_option(
    "--heartbeat",
    type=click.IntRange(0, MAX_HEARTBEAT),
    default=10,
    show_default=True,
    help="Seconds between a trial's heartbeats; a trial silent for 3 of them is failed "
    "and retried (RDB storages; 0: off).",
)
@env_option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Early stopping: end a trial after this many evaluations (epochs) without a better "
    "validation metric; its value is then its best.  [default: the task's, else off]",
)
@env_option(
    "--no-baseline",
    is_flag=True,
    help="Do not evaluate the baseline (AdamW's defaults, or the space's baseline:) first in "
    "a new study.",
)
@env_option(
    "--confirm",
    type=click.IntRange(0, MAX_CONFIRM),
    default=3,
    show_default=True,
    help="After the search, retrain the top trials and the baseline under this many further "
    "seeds and rank them by their mean (0: off).",
)
@env_option(
    "--confirm-top",
    type=click.IntRange(1, MAX_CONFIRM),
    default=None,
    help="How many of the top trials --confirm retrains.  [default: 5, fewer where they "
    "would cost more than half of what the search trained]",
)
@env_option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Stop after this many failed trials in a row (0: never).",
)
def search(**options: Any) -> None:
    """Run (or resume) a study: every trial trains the task with one Adam configuration."""
    from adamtune.config.settings import SearchSettings
    from adamtune.space.search_space import load_space
    from adamtune.tasks.loader import check_spec
    from adamtune.tracking import make_tracker
    from adamtune.tracking.preflight import check_tracking_uri

    # Every check that needs no torch comes first: a mistyped flag answers in a fraction of a
    # second, and nothing is started or written.
    check_spec(options["task"])
    space = load_space(options["space"])
    if options["sampler"] == "grid":
        space.for_grid()  # a plain range is refused here, before anything starts
    n_trials = options["n_trials"]
    if n_trials is None and options["sampler"] != "grid":
        n_trials = 20
    tracking_uri = None if options["no_tracking"] else resolve_tracking_uri(options["tracking_uri"])
    settings = SearchSettings(
        task=options["task"],
        space=options["space"],
        n_trials=n_trials,
        timeout=options["timeout"],
        study_name=options["study_name"],
        storage=options["storage"],
        sampler=options["sampler"],
        pruner=options["pruner"],
        seed=options["seed"],
        device=options["device"],
        epochs=options["epochs"],
        n_jobs=options["n_jobs"],
        optimizer=options["optimizer"],
        max_consecutive_failures=options["max_failures"],
        patience=options["patience"],
        precision=options["precision"],
        tracking_uri=tracking_uri,
        experiment=options["experiment"],
        heartbeat=options["heartbeat"],
        stack=options["stack"],
        baseline=not options["no_baseline"],
        confirm=options["confirm"],
        confirm_top=options["confirm_top"],
    )
    if tracking_uri:
        check_tracking_uri(tracking_uri, settings.storage)
    workers = options["workers"]
    # Then, before torch and the data load: the tracking worker's MLflow import overlaps them.
    # With --workers, each worker process has a tracker of its own.
    tracker = make_tracker(
        tracking_uri if workers == 1 else None, options["experiment"], options["storage"]
    )
    with sigterm_as_interrupt():
        try:
            study, task = _search(settings, workers, tracker)
        finally:
            tracker.close()
    if not any(t.value is not None for t in study.trials):
        raise click.ClickException("no trial completed; see the reasons above")
    from adamtune.results.report import best_trial_summary, gain_report
    from adamtune.results.studies import maximizes

    click.echo(best_trial_summary(study.study_name, study.best_trial, task.metric_name))
    gains = gain_report(study.user_attrs, study.best_trial, task.metric_name, maximizes(study))
    if gains:
        click.echo("\n" + gains)
    if tracking_uri:
        click.echo(
            f"\nTrials logged to MLflow at {redact(tracking_uri)}, experiment "
            f"{options['experiment'] or study.study_name!r}: `adamtune ui` to review."
        )


def _search(settings: SearchSettings, workers: int, tracker: Tracker) -> tuple[optuna.Study, Task]:
    """The study part of ``search``: the progress bar around one library call."""
    from adamtune.cli.progress import Progress
    from adamtune.search.launch import search
    from adamtune.space.search_space import load_space
    from adamtune.tasks import resolve_task

    task, space = resolve_task(settings.task), load_space(settings.space)
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
        )
    except KeyboardInterrupt:
        progress.close()
        click.echo(
            "Interrupted: completed trials are saved; run the same command to resume.", err=True
        )
        sys.exit(130)
    progress.close()
    return study, task


@cli.command()
@storage_option
def studies(storage: str) -> None:
    """List the studies in a storage with trial counts and best values."""
    import optuna

    from adamtune.results.report import format_table, gain_cell
    from adamtune.results.studies import list_studies

    rows = []
    for s in list_studies(storage):
        best = s.best_trial
        maximize = s.direction == optuna.study.StudyDirection.MAXIMIZE
        metric = str(s.user_attrs.get("metric", "value"))
        rows.append(
            [
                s.study_name,
                s.user_attrs.get("task", ""),
                s.n_trials,
                s.direction.name.lower(),
                best.value if best else None,
                best.number if best else None,
                gain_cell(s.user_attrs, best.value if best else None, metric, maximize),
            ]
        )
    if not rows:
        click.echo(f"No studies in {redact(storage)}.")
        return
    click.echo(
        format_table(
            ["study", "task", "trials", "direction", "best value", "best trial", "gain"], rows
        )
    )


@cli.command()
@click.argument("study_name")
@storage_option
@click.option(
    "--top",
    "-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many of the best trials to list.",
)
def show(study_name: str, storage: str, top: int) -> None:
    """Show a study's best trial and its top trials."""
    from adamtune.results.report import best_trial_summary, gain_report, top_trials_table
    from adamtune.results.studies import load_study, maximizes, top_trials

    study = load_study(study_name, storage)
    best = top_trials(study, top)
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    summary = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    click.echo(f"Study {study_name!r}: {len(study.trials)} trials ({summary or 'none'})")
    if not best:
        click.echo("No completed trial yet.")
        return
    metric = study.user_attrs.get("metric", "value")
    click.echo(best_trial_summary(study_name, best[0], metric))
    gains = gain_report(study.user_attrs, best[0], metric, maximizes(study))
    if gains:
        click.echo("\n" + gains)
    click.echo(f"\nTop {len(best)} trials by {metric}:")
    click.echo(top_trials_table(best))


@cli.command()
@click.argument("name", required=False)
def spaces(name: str | None) -> None:
    """List the shipped search spaces, or print one (NAME or a path)."""
    from adamtune.results.report import format_table
    from adamtune.space.search_space import load_space, shipped_spaces

    if name is None:
        click.echo(format_table(["space", "description"], sorted(shipped_spaces().items())))
        return
    click.echo(load_space(name).text.rstrip())


@cli.command()
def tasks() -> None:
    """List the built-in tasks."""
    from adamtune.results.report import format_table
    from adamtune.tasks import builtin_tasks

    click.echo(format_table(["task", "description"], list(builtin_tasks().items())))
    click.echo("\nYour own: --task my_pkg.tasks:make_task or --task path/to/file.py:make_task")


@cli.command()
@click.argument("study_name")
@storage_option
@click.option(
    "--trial",
    type=click.IntRange(min=0),
    default=None,
    help="Trial number to export.  [default: the best trial]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="torch",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    default=None,
    help="Write to this file instead of standard output.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite an existing output file (never a study storage or an MLflow store).",
)
def export(
    study_name: str, storage: str, trial: int | None, fmt: str, output: str | None, force: bool
) -> None:
    """Export the best trial's configuration (or trial N's) as code for your training script."""
    from adamtune.results.export import render, write_export
    from adamtune.results.studies import load_trial
    from adamtune.tracking.base import default_tracking_uri

    chosen = load_trial(study_name, storage, trial)
    text = render(chosen, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_export(text, output, force=force, protected=[storage, default_tracking_uri()])
        click.echo(f"Wrote {output}", err=True)
    if chosen.chosen.startswith("the confirmed winner"):
        click.echo(f"Exported trial {chosen.trial_number}, {chosen.chosen}.", err=True)


def resolve_tracking_uri(given: str | None) -> str:
    from adamtune.tracking import default_tracking_uri

    return given or default_tracking_uri()


@cli.command()
@click.argument("study_name", required=False)
@env_option(
    "--tracking-uri",
    default=None,
    help="[default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def ui(study_name: str | None, tracking_uri: str | None, host: str, port: int) -> None:
    """Serve the MLflow UI for the tracking store; with STUDY_NAME, print its experiment URL."""
    from adamtune.tracking.ui import (
        check_port_free,
        check_store,
        experiment_id,
        is_server,
        serve,
        ui_url,
    )

    uri = resolve_tracking_uri(tracking_uri)
    if not is_server(uri):
        check_store(uri)  # a server is only asked when a study's experiment is looked up
    experiment = experiment_id(uri, study_name) if study_name else None
    url = ui_url(uri, host, port, experiment)
    if is_server(uri):
        click.echo(f"{redact(uri)} is an MLflow server already: open {redact(url)}")
        return
    check_port_free(host, port)
    click.echo(f"MLflow UI for {redact(uri)}: {url}  (Ctrl-C to stop)", err=True)
    sys.exit(serve(uri, host, port))


LINGER_SECONDS = 2.0  # a thread the task left running gets this long to end on its own


def main() -> None:
    """The console entry point: the CLI, then an exit that no leftover thread can hold up."""
    try:
        cli()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    _leave(code if isinstance(code, int) else 1)


def _leave(code: int) -> None:
    """Exit with ``code``. Output that cannot be written (a full disk, a closed pipe) is one
    line; a non-daemon thread that user code started and never ended (a task's logger, a
    loop's prefetcher) would keep the interpreter alive after the summary, so it is named and
    left behind."""
    import threading

    try:
        sys.stdout.flush()
    except OSError as exc:
        with contextlib.suppress(OSError):
            sys.stderr.write(f"Error: cannot write the output: {exc.strerror or exc}\n")
        os._exit(1)
    main_thread = threading.main_thread()
    lingering = [t for t in threading.enumerate() if t is not main_thread and not t.daemon]
    for thread in lingering:
        thread.join(LINGER_SECONDS / len(lingering))
    alive = [t.name for t in lingering if t.is_alive()]
    if not alive:
        sys.exit(code)
    with contextlib.suppress(OSError):
        sys.stderr.write(
            f"Warning: exiting although thread{'s' if len(alive) > 1 else ''} "
            f"{', '.join(map(repr, alive))} (started by the task, not daemon) still run"
            f"{'s' if len(alive) == 1 else ''}; end {'them' if len(alive) > 1 else 'it'} in "
            f"the task, or make {'them daemon threads' if len(alive) > 1 else 'it a daemon thread'}.\n"
        )
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
