"""The one table of ``adamtune search``'s options. Each row names the ``SearchSettings`` field it
sets, and its default is that field's default, so the command, the library and ``--help`` say
the same thing; the three rows whose default differs on the command line say why beside them.
Every option can also be set from ADAMTUNE_<FLAG> (shown in ``--help``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from adamtune.config.settings import (
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
    STRATEGIES,
    SearchSettings,
)

SETTINGS_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SearchSettings)}
DEFAULT_STORAGE = str(SETTINGS_DEFAULTS["storage"])
DEFAULT_N_TRIALS: int = SearchSettings.n_trials or 0  # 20


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


STORAGE_HELP = (
    "Optuna storage URL: sqlite:///FILE, postgresql://..., mysql+pymysql://..., journal:FILE "
    "or grpc://HOST:PORT."
)


def env_option(flag: str, *decls: str, **kwargs: Any) -> Any:
    """A click option that can also be set from ADAMTUNE_<FLAG> (shown in --help)."""
    envvar = "ADAMTUNE_" + flag.lstrip("-").replace("-", "_").upper()
    return click.option(flag, *decls, envvar=envvar, show_envvar=True, **kwargs)


def storage_option(func: Any) -> Any:
    return env_option(
        "--storage",
        default=DEFAULT_STORAGE,
        show_default=True,
        help=STORAGE_HELP,
    )(func)


FROM_SETTINGS: Any = object()  # the row's default is its SearchSettings field's


@dataclass(frozen=True)
class SearchOption:
    """One row: the flag, the SearchSettings field it sets (None: not a setting), how it reads."""

    flag: str
    field: str | None
    help: str | None = None
    type: Any = None
    default: Any = FROM_SETTINGS
    is_flag: bool = False
    # A setting the flag turns off (--no-baseline sets baseline=False).
    negates: bool = False

    @property
    def param(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def resolved_default(self) -> Any:
        if self.is_flag:
            return False
        return SETTINGS_DEFAULTS[str(self.field)] if self.default is FROM_SETTINGS else self.default

    def decorator(self) -> Callable[[Any], Any]:
        default = self.resolved_default()
        if self.is_flag:
            return env_option(self.flag, is_flag=True, help=self.help)
        return env_option(
            self.flag,
            type=self.type,
            default=default,
            show_default=default is not None,
            help=self.help,
        )


SEARCH_OPTIONS: tuple[SearchOption, ...] = (
    SearchOption(
        "--task",
        "task",
        "Built-in task (see `adamtune tasks`), module:function or file.py:function.",
    ),
    SearchOption("--space", "space", "Shipped space name (see `adamtune spaces`) or a YAML path."),
    SearchOption(
        "--n-trials",
        "n_trials",
        "New trials to run in this invocation (the first of a new study is the baseline, "
        "where it lies in the space); 0 runs none and confirms the study as it stands.  "
        f"[default: {DEFAULT_N_TRIALS}; the rest of the grid with --sampler grid]",
        type=click.IntRange(min=0),
        default=None,  # unset: SearchSettings' 20, or the rest of the grid (settings_from)
    ),
    SearchOption(
        "--timeout",
        "timeout",
        "The whole command's budget in seconds: the search its first 75% (then running "
        "trials are pruned), confirmation the rest (the top trials and seeds that fit).",
        type=FiniteFloat(),
    ),
    SearchOption("--study-name", "study_name", "Study to create or resume.  [default: TASK-SPACE]"),
    SearchOption("--storage", "storage", STORAGE_HELP),
    SearchOption("--sampler", "sampler", type=click.Choice(SAMPLERS)),
    SearchOption("--pruner", "pruner", type=click.Choice(PRUNERS)),
    SearchOption(
        "--seed",
        "seed",
        "Seeds the sampler, the weights and the batch order.",
        type=click.IntRange(0, SEED_LIMIT - 1),
    ),
    SearchOption("--device", "device", "auto, cpu, cuda or cuda:N."),
    SearchOption(
        "--epochs",
        "epochs",
        "Epochs per trial.  [default: the task's]",
        type=click.IntRange(1, MAX_EPOCHS),
    ),
    SearchOption(
        "--n-jobs",
        "n_jobs",
        "Parallel trials (threads) in this process.",
        type=click.IntRange(1, MAX_PARALLEL),
    ),
    SearchOption(
        "--optimizer",
        "optimizer",
        "fused: adamtune.optim.FusedAdam; torch: torch.optim.Adam/AdamW.",
        type=click.Choice(OPTIMIZERS),
    ),
    SearchOption(
        "--precision",
        "precision",
        "bf16/fp16: autocast forward and loss (fp16 with a loss scaler), fp32 weights and "
        "Adam state; bf16-pure: bf16 weights, fp32 Adam state, stochastic rounding.",
        type=click.Choice(PRECISIONS),
    ),
    SearchOption(
        "--tracking-uri",
        "tracking_uri",
        "MLflow tracking URI (a local store or http://server).  "
        "[default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]",
        # SearchSettings' None is "tracking off"; on the command line that is --no-tracking
    ),
    SearchOption("--no-tracking", None, "Do not log to MLflow.", is_flag=True),
    SearchOption("--experiment", "experiment", "MLflow experiment.  [default: the study name]"),
    SearchOption(
        "--stack",
        "stack",
        "Trials trained at once as one stacked model: N, or auto (16 on CPU, 64 on CUDA, "
        "within the free memory; one at a time for a model that cannot stack, --optimizer "
        "other than fused, or --n-jobs).",
        type=StackSize(),
    ),
    SearchOption(
        "--workers",
        None,  # not a setting of one process: adamtune.search.launch.search(workers=...)
        "Worker processes on this machine sharing the study (use PostgreSQL or journal:).",
        type=click.IntRange(1, MAX_PARALLEL),
        default=1,
    ),
    SearchOption(
        "--heartbeat",
        "heartbeat",
        "Seconds between a trial's heartbeats; a trial silent for 3 of them is failed "
        "and retried (RDB storages; 0: off).",
        type=click.IntRange(0, MAX_HEARTBEAT),
    ),
    SearchOption(
        "--patience",
        "patience",
        "Early stopping: end a trial after this many evaluations (epochs) without a better "
        "validation metric; its value is then its best.  [default: the task's, else off]",
        type=click.IntRange(min=1),
    ),
    SearchOption(
        "--warm-start",
        "warm_start",
        "Train these first: the best configurations of other studies (NAME, or NAME@STORAGE) "
        "or exported yaml/json files, comma-separated, clipped to the space.",
    ),
    SearchOption(
        "--resume-changed",
        "resume_changed",
        "Resume the study although its data, split sizes, epochs, batch size or metric "
        "changed since it was made (refused otherwise); the study records that it did.",
        is_flag=True,
    ),
    SearchOption(
        "--no-baseline",
        "baseline",
        "Do not evaluate the baseline (AdamW's defaults, or the space's baseline:) first in "
        "a new study.",
        is_flag=True,
        negates=True,
    ),
    SearchOption(
        "--confirm",
        "confirm",
        "After the search, retrain the top trials and the baseline under this many further "
        "seeds and rank them by their mean (0: off).",
        type=click.IntRange(0, MAX_CONFIRM),
        default=3,  # on the command line confirmation is on; a library caller asks for it
    ),
    SearchOption(
        "--confirm-top",
        "confirm_top",
        "How many of the top trials --confirm retrains.  [default: 5, fewer where they "
        "would cost more than half of what the search trained]",
        type=click.IntRange(1, MAX_CONFIRM),
    ),
    SearchOption(
        "--strategy",
        "strategy",
        "search: Optuna trials, one configuration each; pbt: one population trained as one "
        "stack, whose weak members copy strong ones and perturb their values (Population "
        "Based Training): it finds a schedule, exported as code.",
        type=click.Choice(STRATEGIES),
    ),
    SearchOption(
        "--population",
        "population",
        "--strategy pbt: members, all trained at once.  [default: the stack's width]",
        type=click.IntRange(2, MAX_STACK),
    ),
    SearchOption(
        "--pbt-interval",
        "pbt_interval",
        "--strategy pbt: evaluations (epochs) between exploits.  [default: about 10 a run]",
        type=click.IntRange(1, MAX_EPOCHS),
    ),
    SearchOption(
        "--anchors",
        "anchors",
        "--strategy pbt: share of the members never exploited, which keep the population "
        "diverse and are its fixed configurations to compare with.",
        type=click.FloatRange(0.0, 0.5),
    ),
    SearchOption(
        "--max-failures",
        "max_consecutive_failures",
        "Stop after this many failed trials in a row (0: never).",
        type=click.IntRange(min=0),
    ),
)


def search_options(func: Any) -> Any:
    """Every row of SEARCH_OPTIONS as a click option, in the table's order in ``--help``."""
    for option in reversed(SEARCH_OPTIONS):
        func = option.decorator()(func)
    return func


def settings_from(options: dict[str, Any], tracking_uri: str | None) -> SearchSettings:
    """The SearchSettings that parsed ``options`` say (``tracking_uri``: resolved, or None when
    tracking is off)."""
    values: dict[str, Any] = {}
    for option in SEARCH_OPTIONS:
        if option.field is not None:
            value = options[option.param]
            values[option.field] = not value if option.negates else value
    if values["n_trials"] is None and values["sampler"] != "grid":
        values["n_trials"] = DEFAULT_N_TRIALS
    values["tracking_uri"] = tracking_uri
    return SearchSettings(**values)


def resolve_tracking_uri(given: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the local store."""
    from adamtune.tracking import default_tracking_uri

    return given or default_tracking_uri()
