"""The ``adamtune`` command: a thin skin over the library. Each command parses its options,
calls one library function and prints the result. Every option can also be set from the
environment variable named in ``--help`` (ADAMTUNE_*).

Errors a user can fix (AdamtuneError, bad flags) print one line ``Error: ...`` on stderr and
exit non-zero, without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from adamtune._util.urls import ScrubbedStream, redact, scrub, secrets_in
from adamtune.cli.options import env_option, resolve_tracking_uri, storage_option
from adamtune.cli.search_command import search
from adamtune.config.settings import FORMATS
from adamtune.errors import AdamtuneError, describe, one_line

SECRET_ENV = ("ADAMTUNE_STORAGE", "ADAMTUNE_TRACKING_URI", "MLFLOW_TRACKING_URI")


class AdamtuneGroup(click.Group):
    """Prints every error as a single line on stderr, with no password in it, and exits
    non-zero: usage errors, AdamtuneErrors, and (as a last resort) anything unexpected."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        argv = list(sys.argv[1:] if args is None else args)
        with scrubbed_output(argv), thread_errors_in_one_line():
            self._run(argv, *rest, **kwargs)

    def _run(self, argv: list[str], *rest: Any, **kwargs: Any) -> None:
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


def given_urls(argv: list[str]) -> list[str]:
    """Every URL the user gave this process: on the command line, or in the environment."""
    urls = [a.split("=", 1)[1] if a.startswith("-") else a for a in argv if "://" in a]
    return urls + [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]


@contextlib.contextmanager
def scrubbed_output(argv: list[str]) -> Iterator[None]:
    """stdout and stderr with every password of every URL the user gave scrubbed, for the whole
    command: our lines, library warnings and tracebacks alike."""
    secrets = secrets_in(given_urls(argv))
    if not secrets:
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbedStream(out, secrets), ScrubbedStream(err, secrets)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


@contextlib.contextmanager
def thread_errors_in_one_line() -> Iterator[None]:
    """An exception that ends a background thread (a heartbeat sender on a full disk, a
    user's prefetcher) is one warning line per thread name, not a traceback: the thread's
    work is the command's to report, and it does (a failed trial, a lost storage)."""
    import threading

    said: set[str] = set()

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        if name in said:
            return
        said.add(name)
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"Warning: thread {name!r} stopped: {one_line(describe(args.exc_value))}\n"
            )

    previous = threading.excepthook
    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def _unwritable_output(exc: BaseException) -> bool:
    """Writing stdout or stderr failed (a full disk, a closed pipe): no file of ours is named."""
    return (
        isinstance(exc, OSError)
        and exc.errno in (errno.ENOSPC, errno.EPIPE, errno.EIO)
        and not exc.filename
    )


def _fail(message: str, code: int, argv: list[str]) -> None:
    """One line on stderr: the message with every password the user gave us scrubbed."""
    click.echo(f"Error: {one_line(scrub(message, given_urls(argv)))}", err=True)
    sys.exit(code)


@click.group(cls=AdamtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adamtune")
def cli() -> None:
    """Tune Adam/AdamW hyperparameters and the LR schedule with Optuna."""


cli.add_command(search)


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
    from adamtune.results.importance import importance_report
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
    click.echo("\n" + importance_report(study))


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
    help="Write to this file (or into this directory) instead of standard output.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite an existing output file (never a study storage or an MLflow store).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Rescale for a run of this many epochs (the AdamW timescale rule).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Rescale for this batch size (square-root lr, beta2's half-life in samples).",
)
def export(
    study_name: str,
    storage: str,
    trial: int | None,
    fmt: str,
    output: str | None,
    force: bool,
    epochs: int | None,
    batch_size: int | None,
) -> None:
    """Export the best trial's configuration (or trial N's) as code for your training script."""
    from adamtune.results.export import export_path, render, write_export
    from adamtune.results.studies import load_trial
    from adamtune.results.transfer import transferred
    from adamtune.tracking.base import default_tracking_uri

    chosen = transferred(load_trial(study_name, storage, trial), epochs, batch_size)
    for note in chosen.transfer_notes:
        click.echo(f"Transfer: {note}", err=True)
    text = render(chosen, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output = export_path(output, chosen.study_name, chosen.trial_number, fmt)
        write_export(text, output, force=force, protected=[storage, default_tracking_uri()])
        click.echo(f"Wrote {output}", err=True)
    if chosen.chosen.startswith("the confirmed winner"):
        click.echo(f"Exported trial {chosen.trial_number}, {chosen.chosen}.", err=True)


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
        newest_experiment,
        serve,
        ui_url,
    )

    uri = resolve_tracking_uri(tracking_uri)
    if not is_server(uri):
        check_store(uri)  # a server is only asked when a study's experiment is looked up
    which = ""
    if study_name:
        experiment: str | None = experiment_id(uri, study_name)
    elif is_server(uri):
        experiment = None
    else:  # MLflow 3's home page is about GenAI: open the newest study's runs instead
        newest = newest_experiment(uri)
        experiment = newest[0] if newest else None
        if newest:
            which = f" (study {newest[1]!r}, the newest; `adamtune ui STUDY` opens another)"
    url = ui_url(uri, host, port, experiment)
    if is_server(uri):
        click.echo(f"{redact(uri)} is an MLflow server already: open {redact(url)}")
        return
    check_port_free(host, port)
    click.echo(f"Starting the MLflow UI for {redact(uri)} on {host}:{port} ...", err=True)

    def ready() -> None:
        click.echo(f"MLflow UI for {redact(uri)}: {url}{which}  (Ctrl-C to stop)")

    sys.exit(serve(uri, host, port, on_ready=ready))


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
