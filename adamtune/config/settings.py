"""The rules for a search's settings, in one table the library and the CLI both read.

No torch, no Optuna: the CLI checks every flag here before its heavy imports, and
SearchSettings checks the same rules when built from Python.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from adamtune._util.urls import redact
from adamtune.errors import ConfigError, StudyError, shown

SAMPLERS = ("tpe", "gp", "cmaes", "random", "qmc", "grid")
PRUNERS = ("median", "hyperband", "sha", "none")
STRATEGIES = ("search", "pbt")  # Optuna trials, or one population trained with PBT
OPTIMIZERS = ("fused", "torch")
PRECISIONS = ("fp32", "bf16", "fp16", "bf16-pure")  # adamtune.precision says what each does
FORMATS = (
    "torch",
    "adamtune",
    "hf",
    "lightning",
    "yaml",
    "json",
)  # of `adamtune export`  # adamtune.optim.FusedAdam, or torch.optim.Adam/AdamW
SEED_LIMIT = 2**32  # numpy's samplers take seeds in [0, 2**32)
MAX_EPOCHS = 1_000_000
MAX_PARALLEL = 256  # --workers and --n-jobs: processes and threads on one machine
MAX_STACK = 1024  # --stack: trials trained as one model
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
MAX_STUDY_NAME = 512  # Optuna's study_name column
MAX_CONFIRM = 100  # --confirm seeds and --confirm-top trials
# Optuna sleeps between heartbeats with Event.wait, which overflows past threading.TIMEOUT_MAX
# (~9.2e9 s); a day is longer than any heartbeat could usefully be.
MAX_HEARTBEAT = 86_400


def check_study_name(name: Any) -> None:
    """Refuse a study name Optuna's storages cannot hold."""
    if name is None:
        return
    if not isinstance(name, str) or not name.strip():
        raise StudyError("--study-name: must not be empty")
    if len(name) > MAX_STUDY_NAME:
        raise StudyError(
            f"--study-name: must be at most {MAX_STUDY_NAME} characters, got {len(name)}"
        )


def check_device(device: Any) -> None:
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise ConfigError(f"--device: must be auto, cpu, cuda, cuda:N or mps, got {shown(device)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(flag: str, value: Any, low: int, high: float = math.inf) -> None:
    if not _is_int(value) or not low <= value <= high:
        bound = f"in [{low}, {high:.0f}]" if high != math.inf else f">= {low}"
        raise ConfigError(f"{flag}: must be an integer {bound}, got {shown(value)}")


def _choice(flag: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag}: must be one of {', '.join(choices)}, got {shown(value)}")


def check_settings(s: Any) -> None:
    """Raise ConfigError naming the flag, the rule and the value of the first bad setting."""
    if s.n_trials is not None:
        _check_int("--n-trials", s.n_trials, 0)
    if s.timeout is not None and (
        isinstance(s.timeout, bool)
        or not isinstance(s.timeout, (int, float))
        or not math.isfinite(s.timeout)
        or s.timeout <= 0
    ):
        raise ConfigError(
            f"--timeout: must be a finite number of seconds > 0, got {shown(s.timeout)}"
        )
    _check_int("--seed", s.seed, 0, SEED_LIMIT - 1)
    if s.epochs is not None:
        _check_int("--epochs", s.epochs, 1, MAX_EPOCHS)
    _check_int("--n-jobs", s.n_jobs, 1, MAX_PARALLEL)
    _check_int("--max-failures", s.max_consecutive_failures, 0)
    _check_int("--heartbeat", s.heartbeat, 0, MAX_HEARTBEAT)
    if s.patience is not None:
        _check_int("--patience", s.patience, 1)
    _check_int("max_retries", s.max_retries, 0)
    _check_int("--confirm", s.confirm, 0, MAX_CONFIRM)
    if s.confirm_top is not None:
        _check_int("--confirm-top", s.confirm_top, 1, MAX_CONFIRM)
    if not isinstance(s.baseline, bool):
        raise ConfigError(f"baseline: must be true or false, got {shown(s.baseline)}")
    _check_int("worker", s.worker, 0)
    _choice("--sampler", s.sampler, SAMPLERS)
    _choice("--pruner", s.pruner, PRUNERS)
    _choice("--optimizer", s.optimizer, OPTIMIZERS)
    _choice("--precision", s.precision, PRECISIONS)
    if s.precision == "bf16-pure" and s.optimizer != "fused":
        raise ConfigError(
            "--precision: 'bf16-pure' needs --optimizer fused (float32 moments and stochastic "
            f"rounding are FusedAdam's), got --optimizer {s.optimizer}"
        )
    check_device(s.device)
    if s.stack != "auto":  # auto trains one at a time where a stack cannot be
        _check_int("--stack", s.stack, 1, MAX_STACK)
        if s.stack != 1 and s.optimizer != "fused":
            raise ConfigError(
                f"--stack {s.stack}: stacked trials train with --optimizer fused, got "
                f"--optimizer {s.optimizer}"
            )
        if s.stack != 1 and s.precision == "fp16":
            raise ConfigError(
                f"--stack {s.stack}: fp16 trials cannot be stacked (the loss scaler is one "
                "model's); use --stack 1, or --precision bf16"
            )
        if s.stack != 1 and s.n_jobs != 1:
            raise ConfigError(
                f"--stack {s.stack}: stacked trials and --n-jobs threads do not mix; use one"
            )
    _check_strategy(s)
    check_study_name(s.study_name)
    if s.experiment is not None and (not isinstance(s.experiment, str) or not s.experiment.strip()):
        raise ConfigError(f"--experiment: must be a non-empty name, got {shown(s.experiment)}")
    for flag, value in (("--task", s.task), ("--space", s.space), ("--storage", s.storage)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{flag}: must be a non-empty string, got {shown(value)}")


def _check_strategy(s: Any) -> None:
    """--strategy and the population's own flags; what a population cannot be, in one line."""
    _choice("--strategy", s.strategy, STRATEGIES)
    if s.population is not None:
        _check_int("--population", s.population, 2, MAX_STACK)
    if s.pbt_interval is not None:
        _check_int("--pbt-interval", s.pbt_interval, 1, MAX_EPOCHS)
    anchors = s.anchors
    if (
        isinstance(anchors, bool)
        or not isinstance(anchors, (int, float))
        or not 0 <= anchors <= 0.5
    ):
        raise ConfigError(f"--anchors: must be a share in [0, 0.5], got {shown(anchors)}")
    if s.strategy != "pbt":
        return
    why = {
        "--stack 1": s.stack == 1,
        "--optimizer torch": s.optimizer != "fused",
        "--sampler grid": s.sampler == "grid",
        f"--n-jobs {s.n_jobs}": s.n_jobs != 1,
        "--precision fp16": s.precision == "fp16",
    }
    for flag, refused in why.items():
        if refused:
            raise ConfigError(
                f"--strategy pbt: a population trains as one stack with FusedAdam's per-row "
                f"values, and {flag} cannot be one: {POPULATION_NEEDS[flag.split()[0]]}"
            )


POPULATION_NEEDS = {
    "--stack": "use --stack auto or N >= 2 (the population's size), or --population N",
    "--optimizer": "use --optimizer fused (the default)",
    "--sampler": "a grid has a fixed number of points and PBT moves off them; use tpe or random",
    "--n-jobs": "a population is one process and one stack; leave --n-jobs at 1",
    "--precision": "fp16's loss scaler is one model's; use --precision bf16",
}


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``adamtune search`` takes; the defaults are the CLI's defaults, except
    ``confirm`` (off here, 3 on the command line). Validated on construction, so a bad value is
    refused before any storage or study is touched."""

    task: str = "mnist1d-mlp"
    space: str = "default"
    n_trials: int | None = 20
    timeout: float | None = None
    study_name: str | None = None
    storage: str = "sqlite:///adamtune.db"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    device: str = "auto"
    epochs: int | None = None
    n_jobs: int = 1
    optimizer: str = "fused"
    max_consecutive_failures: int = 5
    tracking_uri: str | None = None  # MLflow; None: tracking off
    experiment: str | None = None  # MLflow experiment; None: the study name
    heartbeat: int = 10  # seconds between a running trial's heartbeats; 0: off
    max_retries: int = 2  # times a trial whose worker died is re-queued with its parameters
    worker: int = 0  # this process's index among --workers; keeps their samplers apart
    stack: int | str = "auto"  # trials trained at once as one stacked model; "auto" picks
    patience: int | None = None  # early stopping within a trial; None: the task's (off)
    precision: str = "fp32"  # one of PRECISIONS (adamtune.precision)
    baseline: bool = True  # a new study first evaluates the baseline (adamtune.baseline)
    # After the search, retrain the top trials under this many seeds; 0: off. The CLI's
    # --confirm defaults to 3; a library caller asks for it.
    confirm: int = 0
    # How many of the top trials confirmation retrains; None: up to DEFAULT_CONFIRM_TOP, fewer
    # where they would cost more than half of what the search trained (adamtune.confirm).
    confirm_top: int | None = None
    strategy: str = "search"  # one of STRATEGIES
    population: int | None = None  # --strategy pbt: members; None: the stack's width
    pbt_interval: int | None = None  # evaluations between exploits; None: about 10 a run
    anchors: float = 0.25  # share of the population never exploited (against collapse)
    # Resume a study although its data or recipe changed (adamtune.tasks.record): on purpose,
    # and said on the study.
    resume_changed: bool = False
    # Sources whose best configurations train first (adamtune.search.warm): study names,
    # NAME@STORAGE_URL, or exported yaml/json files, comma-separated
    warm_start: str | None = None

    def __post_init__(self) -> None:
        check_settings(self)

    def redacted(self) -> dict[str, object]:
        """The settings as a dict that is safe to print or track (no password in any URL)."""
        tracking = redact(self.tracking_uri) if self.tracking_uri else None
        return {**asdict(self), "storage": redact(self.storage), "tracking_uri": tracking}
