"""The resolved configuration of one trial: Adam/AdamW values and the LR schedule.

Both classes are frozen and validated on construction, so a config that exists is a config
that trains. Pure data: building an optimizer or a scheduler from a config is
adamtune.builders' job, and a schedule's learning rates adamtune.schedules'. ``DOMAINS`` holds the rule for every numeric field; the search-space loader uses
the same table, so a YAML file and a config object are held to identical rules.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from adamtune.errors import ConfigError, shown, unknown_key

SCHEDULE_KINDS = ("constant", "linear", "cosine", "step", "exponential")
# Which ScheduleConfig fields each kind reads, beside warmup_fraction (which every kind reads):
# the one table that the space, the reports, the exports and the plots consult.
SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "linear": ("final_lr_fraction",),
    "cosine": ("final_lr_fraction",),
    "exponential": ("final_lr_fraction",),
    "step": ("gamma", "decays"),
}
SCHEMA_VERSION = 1  # of exported yaml/json configs


@dataclass(frozen=True)
class Domain:
    """An interval rule for a numeric field, e.g. ``[0, 1)`` for a beta."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def violation(self, value: Any) -> str | None:
        """The rule ``value`` breaks, as text, or None when it is valid."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        try:
            number = float(value)
        except OverflowError:
            return "must be a finite number"
        if math.isnan(number):
            return "must not be NaN"
        if math.isinf(number):
            return "must be a finite number"
        if self.integer and not number.is_integer():
            return "must be an integer"
        value = number
        too_low = value <= self.low if self.low_open else value < self.low
        too_high = value >= self.high if self.high_open else value > self.high
        if too_low or too_high:
            return f"must be {self.describe()}"
        return None

    def describe(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


UNIT_OPEN = Domain(0.0, 1.0, high_open=True)
# 1 - beta below this rounds beta to exactly 1.0 in float64 (no averaging at all)
MIN_ONE_MINUS_BETA = 1e-15
DOMAINS: dict[str, Domain] = {
    "lr": Domain(0.0, low_open=True),
    "beta1": UNIT_OPEN,
    "beta2": UNIT_OPEN,
    "one_minus_beta1": Domain(MIN_ONE_MINUS_BETA, 1.0),
    "one_minus_beta2": Domain(MIN_ONE_MINUS_BETA, 1.0),
    "eps": Domain(0.0),
    "weight_decay": Domain(0.0),
    "schedule.warmup_fraction": UNIT_OPEN,
    "schedule.final_lr_fraction": Domain(0.0, 1.0),
    "schedule.gamma": Domain(0.0, 1.0, low_open=True),
    "schedule.decays": Domain(1.0, integer=True),
    "max_grad_norm": Domain(0.0, low_open=True),
}
OPTIONAL_FIELDS = ("max_grad_norm",)  # None (YAML null) switches them off


def check(name: str, value: Any) -> None:
    """Raise ConfigError naming ``name`` if ``value`` breaks its domain."""
    rule = DOMAINS[name].violation(value)
    if rule:
        raise ConfigError(f"{name}: {rule}, got {shown(value)}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule; see adamtune.schedules for the exact formulas."""

    kind: str = "constant"
    warmup_fraction: float = 0.0
    final_lr_fraction: float = 0.0
    gamma: float = 0.1
    decays: int = 1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(
                f"schedule.kind: must be one of {', '.join(SCHEDULE_KINDS)}, got {shown(self.kind)}"
            )
        for f in fields(self):
            if f.name != "kind":
                check(f"schedule.{f.name}", getattr(self, f.name))
        if self.kind == "exponential" and self.final_lr_fraction <= 0:
            raise ConfigError(
                "schedule.final_lr_fraction: must be > 0 for an exponential schedule, "
                f"got {self.final_lr_fraction!r}"
            )


@dataclass(frozen=True)
class AdamConfig:
    """One Adam/AdamW configuration. ``decoupled=True`` is AdamW, False is Adam with L2."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = True
    amsgrad: bool = False
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Clip the global gradient norm to this before each step (torch.nn.utils.clip_grad_norm_);
    # None: no clipping.
    max_grad_norm: float | None = None
    # A schedule of hyperparameters (what a population found, --strategy pbt): from each
    # phase's start (a fraction of training) on, its config's values and its LR schedule rule;
    # the fields above are the first phase's. Empty: one configuration for the whole run.
    phases: tuple[Phase, ...] = ()

    def __post_init__(self) -> None:
        for name in ("lr", "beta1", "beta2", "eps", "weight_decay"):
            check(name, getattr(self, name))
        if self.max_grad_norm is not None:
            check("max_grad_norm", self.max_grad_norm)
        for name in ("decoupled", "amsgrad"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name}: must be true or false, got {shown(getattr(self, name))}"
                )
        if not isinstance(self.schedule, ScheduleConfig):
            raise ConfigError(f"schedule: must be a ScheduleConfig, got {shown(self.schedule)}")
        _check_phases(self)

    @property
    def fixed(self) -> AdamConfig:
        """The first phase alone: these values for the whole run."""
        return replace(self, phases=()) if self.phases else self

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict; ``from_dict`` is its inverse. ``phases`` only where there
        are some, so a fixed configuration reads as it always has."""
        data = asdict(self)
        if not self.phases:
            del data["phases"]
        else:
            data["phases"] = [phase for phase in data["phases"]]
            for phase in data["phases"]:
                del phase["config"]["phases"]
        return data

    @classmethod
    def from_file(cls, path: str | Path) -> AdamConfig:
        """Load a config exported with ``adamtune export --format yaml`` (or json)."""
        from adamtune._util import yamlfile

        source = str(path)
        try:
            text = yamlfile.read_text(Path(path))
            try:  # JSON first: YAML 1.1 reads JSON's 1e-08 as a string
                data = json.loads(text)
            except ValueError:
                data = yamlfile.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise ConfigError(f"{source}: config: missing; expected an adamtune export")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{source}: schema_version: must be {SCHEMA_VERSION}, got {shown(version)}"
            )
        return cls.from_dict(data["config"], source=source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> AdamConfig:
        """Build from ``to_dict`` output; unknown keys are an error, missing ones default."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: config: must be a mapping, got {shown(data)}")
        data = dict(data)
        phases = _phases_from(data.pop("phases", None) or [], source)
        schedule_data = data.pop("schedule", {}) or {}
        if not isinstance(schedule_data, dict):
            raise ConfigError(f"{source}: schedule: must be a mapping, got {shown(schedule_data)}")
        _reject_unknown(data, {f.name for f in fields(cls)} - {"schedule", "phases"}, source)
        _reject_unknown(
            schedule_data, {f.name for f in fields(ScheduleConfig)}, source, "schedule."
        )
        try:
            return cls(schedule=ScheduleConfig(**schedule_data), phases=phases, **data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


@dataclass(frozen=True)
class Phase:
    """From ``start`` (a fraction of training in (0, 1)) on, train with ``config``'s values; its
    LR is ``config.lr`` times its schedule's multiplier at the step (adamtune.config.phases)."""

    start: float
    config: AdamConfig


def _check_phases(config: AdamConfig) -> None:
    if not isinstance(config.phases, tuple):
        raise ConfigError(f"phases: must be a tuple of Phase, got {shown(config.phases)}")
    last = 0.0
    for i, phase in enumerate(config.phases):
        where = f"phases[{i}]"
        if not isinstance(phase, Phase) or not isinstance(phase.config, AdamConfig):
            raise ConfigError(f"{where}: must be a Phase(start, config), got {shown(phase)}")
        start = phase.start
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not last < start < 1:
            raise ConfigError(
                f"{where}.start: must be a fraction of training in ({last:g}, 1), later than "
                f"the phase before, got {shown(start)}"
            )
        if phase.config.phases:
            raise ConfigError(f"{where}.config: a phase has no phases of its own")
        own = (phase.config.decoupled, phase.config.amsgrad)
        if own != (config.decoupled, config.amsgrad):
            raise ConfigError(
                f"{where}.config: decoupled and amsgrad stay as the first phase's "
                f"({config.decoupled}, {config.amsgrad}), got {own}"
            )
        last = float(start)


def _phases_from(data: Any, source: str) -> tuple[Phase, ...]:
    if not isinstance(data, list):
        raise ConfigError(f"{source}: phases: must be a list, got {shown(data)}")
    phases = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"start", "config"}:
            raise ConfigError(
                f"{source}: phases[{i}]: must be a mapping with start and config, got {shown(item)}"
            )
        config = AdamConfig.from_dict(item["config"], source=f"{source}: phases[{i}]")
        phases.append(Phase(item["start"], config))
    return tuple(phases)


def _reject_unknown(data: dict[str, Any], known: set[str], source: str, prefix: str = "") -> None:
    problem = unknown_key(data, sorted(known), prefix)
    if problem:
        raise ConfigError(f"{source}: {problem}")
