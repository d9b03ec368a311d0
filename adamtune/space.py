"""Search spaces: YAML in, validated ``SearchSpace`` out, ``AdamConfig`` per Optuna trial.

A space file maps each field to a fixed value, a range or a list of choices::

    lr: {low: 1.0e-5, high: 1.0e-1}                  # log scale is the default for lr
    one_minus_beta2: {low: 1.0e-4, high: 1.0e-1}     # beta2 = 1 - value, log scale
    weight_decay: {low: 1.0e-5, high: 1.0, include_zero: true}
    amsgrad: false
    schedule:
      kind: {choices: [constant, cosine]}
      warmup_fraction: {low: 0.0, high: 0.1}

``max_grad_norm`` clips the global gradient norm before each step: a number, ``null`` (off,
the default), or a range with ``include_none: true`` to let the search switch it off.
Scale parameters (lr, eps, weight_decay, one_minus_beta*, max_grad_norm) are searched on a log
scale unless ``log: false``; fractions on a linear scale unless ``log: true``. Fields left out keep
AdamConfig's defaults. Every rule a config obeys (adamtune.config.DOMAINS) is checked here,
when the file loads, not in the middle of a study.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from adamtune import yamlfile
from adamtune.config import (
    DOMAINS,
    OPTIONAL_FIELDS,
    SCHEDULE_FIELDS,
    SCHEDULE_KINDS,
    AdamConfig,
    ScheduleConfig,
)
from adamtune.errors import ConfigError, SpaceError, did_you_mean, shown, unknown_key

TOP_LEVEL = (
    "lr",
    "beta1",
    "one_minus_beta1",
    "beta2",
    "one_minus_beta2",
    "eps",
    "weight_decay",
    "decoupled",
    "amsgrad",
    "schedule",
    "max_grad_norm",
)
SCHEDULE_KEYS = ("kind", "warmup_fraction", "final_lr_fraction", "gamma", "decays")
LOG_BY_DEFAULT = {
    "lr",
    "eps",
    "weight_decay",
    "one_minus_beta1",
    "one_minus_beta2",
    "max_grad_norm",
}
BOOL_FIELDS = {"decoupled", "amsgrad"}
RANGE_KEYS = {"low", "high", "log", "include_zero", "include_none"}


class TrialLike(Protocol):
    """The part of optuna.Trial a space needs (optuna.trial.FixedTrial fits too)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Fixed:
    value: Any

    def sample(self, trial: TrialLike, name: str) -> Any:
        return self.value

    def values(self) -> list[Any]:
        return [self.value]

    def distributions(self, name: str) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]

    def sample(self, trial: TrialLike, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def values(self) -> list[Any]:
        return list(self.choices)

    def distributions(self, name: str) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        return {name: CategoricalDistribution(list(self.choices))}


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool
    include_zero: bool = False  # the value may also be 0 (off), e.g. weight_decay
    include_none: bool = False  # the value may also be None (off), e.g. max_grad_norm

    def sample(self, trial: TrialLike, name: str) -> float | None:
        switchable = self.include_zero or self.include_none
        if switchable and not trial.suggest_categorical(f"{name}.enabled", [True, False]):
            return 0.0 if self.include_zero else None
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def values(self) -> list[Any]:
        off = [0.0] if self.include_zero else [None] if self.include_none else []
        return [self.low, self.high, *off]

    def distributions(self, name: str) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        out: dict[str, Any] = {name: FloatDistribution(self.low, self.high, log=self.log)}
        if self.include_zero or self.include_none:
            out[f"{name}.enabled"] = CategoricalDistribution([True, False])
        return out


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool

    def sample(self, trial: TrialLike, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def values(self) -> list[Any]:
        return [self.low, self.high]

    def distributions(self, name: str) -> dict[str, Any]:
        from optuna.distributions import IntDistribution

        return {name: IntDistribution(self.low, self.high, log=self.log)}


Param = Fixed | Categorical | FloatRange | IntRange


@dataclass(frozen=True)
class SearchSpace:
    """A validated space. ``params`` keys are Optuna parameter names (``schedule.kind``...)."""

    name: str
    source: str
    text: str
    params: dict[str, Param]

    def sample(self, trial: TrialLike) -> AdamConfig:
        """Suggest every searched value on ``trial`` and return the resolved config."""
        values = {
            name: self._draw(trial, name)
            for name in self.params
            if not name.startswith("schedule.")
        }
        kind = self._draw(trial, "schedule.kind")
        schedule = {"kind": kind, "warmup_fraction": self._draw(trial, "schedule.warmup_fraction")}
        for name in SCHEDULE_FIELDS[kind]:  # only what this kind reads is drawn
            schedule[name] = self._draw(trial, f"schedule.{name}")
        for beta in ("beta1", "beta2"):
            if f"one_minus_{beta}" in values:
                values[beta] = 1.0 - values.pop(f"one_minus_{beta}")
        return AdamConfig(schedule=ScheduleConfig(**schedule), **values)

    def _draw(self, trial: TrialLike, name: str) -> Any:
        param = self.params.get(name)
        if param is None:
            field = name.removeprefix("schedule.")
            return getattr(ScheduleConfig() if name != field else AdamConfig(), field)
        return param.sample(trial, name)

    def distributions(self) -> dict[str, Any]:
        """Optuna parameter name -> the distribution this space samples it from."""
        out: dict[str, Any] = {}
        for name, param in self.params.items():
            out.update(param.distributions(name))
        return out

    @property
    def searched(self) -> list[str]:
        """Names of the parameters that are not fixed."""
        return [name for name, p in self.params.items() if not isinstance(p, Fixed)]


def shipped_spaces() -> dict[str, str]:
    """Name -> one-line description of every space shipped with adamtune."""
    folder = resources.files("adamtune.search_spaces")
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            out[entry.name.removesuffix(".yaml")] = _first_comment(entry.read_text())
    return out


def space_text(name_or_path: str) -> tuple[str, str]:
    """(source, YAML text) of a shipped space name or a path to a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise SpaceError(f"{name_or_path}: no such file")
        try:
            return str(path), yamlfile.read_text(path)
        except ValueError as exc:
            raise SpaceError(f"{name_or_path}: {exc}") from None
    shipped = shipped_spaces()
    if name_or_path not in shipped:
        hint = did_you_mean(name_or_path, shipped)
        raise SpaceError(
            f"space {shown(name_or_path)}: not a shipped space ({', '.join(shipped)}) "
            f"nor a .yaml path{hint}"
        )
    entry = resources.files("adamtune.search_spaces").joinpath(f"{name_or_path}.yaml")
    return f"search_spaces/{name_or_path}.yaml", entry.read_text()


def load_space(name_or_path: str) -> SearchSpace:
    """Load and validate a space; any problem raises SpaceError naming file, key and value."""
    source, text = space_text(name_or_path)
    name = Path(source).stem
    try:
        return SearchSpace(name=name, source=source, text=text, params=parse_space(text))
    except (SpaceError, ConfigError) as exc:
        raise SpaceError(f"{source}: {exc}") from None


def parse_space(text: str) -> dict[str, Param]:
    """Parse YAML text into validated params (errors carry the key, not the file)."""
    try:
        data = yamlfile.parse(text)
    except ValueError as exc:
        raise SpaceError(str(exc)) from None
    if not isinstance(data, dict):
        raise SpaceError(f"must be a mapping of parameters, got {type(data).__name__}")
    schedule = data.get("schedule", {})
    if not isinstance(schedule, dict):
        raise SpaceError(f"schedule: must be a mapping, got {shown(schedule)}")
    _reject_unknown(data, TOP_LEVEL, "")
    _reject_unknown(schedule, SCHEDULE_KEYS, "schedule.")
    for beta in ("beta1", "beta2"):
        if beta in data and f"one_minus_{beta}" in data:
            raise SpaceError(f"{beta}: give either {beta} or one_minus_{beta}, not both")

    entries = [(k, v) for k, v in data.items() if k != "schedule"]
    entries += [(f"schedule.{k}", v) for k, v in schedule.items()]
    params = {name: _parse_param(name, spec) for name, spec in entries}
    _check_exponential(params)
    return params


def _parse_param(name: str, spec: Any) -> Param:
    if name == "schedule.kind":
        return _parse_kind(spec)
    if name in BOOL_FIELDS:
        return _parse_bool(name, spec)
    optional = name in OPTIONAL_FIELDS
    if not isinstance(spec, dict):
        return Fixed(None if optional and spec is None else _number(name, spec))
    if "choices" in spec:
        _reject_unknown(spec, ("choices",), f"{name}.")
        choices = _choice_list(name, spec["choices"])
        return Categorical(
            tuple(None if optional and v is None else _number(name, v) for v in choices)
        )
    _reject_unknown(spec, sorted(RANGE_KEYS), f"{name}.")
    for bound in ("low", "high"):
        if bound not in spec:
            raise SpaceError(f"{name}: a range needs 'low' and 'high', '{bound}' is missing")
    low, high = _number(f"{name}.low", spec["low"]), _number(f"{name}.high", spec["high"])
    log = spec.get("log", name in LOG_BY_DEFAULT)
    include_zero = spec.get("include_zero", False)
    include_none = spec.get("include_none", False)
    for flag, value in (
        ("log", log),
        ("include_zero", include_zero),
        ("include_none", include_none),
    ):
        if not isinstance(value, bool):
            raise SpaceError(f"{name}.{flag}: must be true or false, got {shown(value)}")
    if include_none and not optional:
        raise SpaceError(
            f"{name}.include_none: only {', '.join(OPTIONAL_FIELDS)} can be off (null); "
            f"use include_zero for {name}"
        )
    if low >= high:
        raise SpaceError(
            f"{name}: 'low' must be < 'high', got low={shown(low)}, high={shown(high)}"
        )
    if log and low <= 0:
        raise SpaceError(f"{name}.low: must be > 0 on a log scale, got {shown(low)}")
    if include_zero and DOMAINS[name].violation(0.0):
        raise SpaceError(f"{name}.include_zero: 0 is not a valid {name}")
    if DOMAINS[name].integer:
        return IntRange(int(low), int(high), log)
    return FloatRange(float(low), float(high), log, include_zero, include_none)


def _number(name: str, value: Any) -> float | int:
    """A number for field ``name`` (the key's base name picks the rule), validated."""
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    field = name.rsplit(".", 1)[0] if name.endswith((".low", ".high")) else name
    rule = DOMAINS[field].violation(value)
    if rule:
        raise SpaceError(f"{name}: {rule}, got {shown(value)}")
    return value


def _parse_kind(spec: Any) -> Param:
    if isinstance(spec, dict):
        _reject_unknown(spec, ("choices",), "schedule.kind.")
        kinds = _choice_list("schedule.kind", spec.get("choices"))
    else:
        kinds = [spec]
    for kind in kinds:
        if kind not in SCHEDULE_KINDS:
            raise SpaceError(
                f"schedule.kind: must be one of {', '.join(SCHEDULE_KINDS)}, got {shown(kind)}"
            )
    return Categorical(tuple(kinds)) if isinstance(spec, dict) else Fixed(spec)


def _parse_bool(name: str, spec: Any) -> Param:
    values = _choice_list(name, spec.get("choices")) if isinstance(spec, dict) else [spec]
    for value in values:
        if not isinstance(value, bool):
            raise SpaceError(f"{name}: must be true or false, got {shown(value)}")
    return Categorical(tuple(values)) if isinstance(spec, dict) else Fixed(spec)


def _choice_list(name: str, choices: Any) -> list[Any]:
    if not isinstance(choices, list) or not choices:
        raise SpaceError(f"{name}.choices: must be a non-empty list, got {shown(choices)}")
    return choices


def _check_exponential(params: dict[str, Param]) -> None:
    kind = params.get("schedule.kind", Fixed("constant"))
    if "exponential" not in kind.values():
        return
    final = params.get("schedule.final_lr_fraction", Fixed(0.0))
    if min(final.values()) <= 0:
        raise SpaceError(
            "schedule.final_lr_fraction: must be > 0 when schedule.kind can be exponential, "
            f"got {shown(min(final.values()))}"
        )


def _reject_unknown(data: dict[str, Any], known: Any, prefix: str) -> None:
    problem = unknown_key(data, known, prefix)
    if problem:
        raise SpaceError(problem)


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
