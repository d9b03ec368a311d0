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
AdamConfig's defaults. Every rule a config obeys (adamtune.config.adam.DOMAINS) is checked here,
when the file loads, not in the middle of a study.
"""

# Over 400 lines: loading (files, shipped names, the grid) and parsing (every parameter's
# rules and their messages) in one module; the parse half is the next to move out
# (space/params.py) when the space gains fields.

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from adamtune._util import yamlfile
from adamtune.config.adam import (
    DOMAINS,
    OPTIONAL_FIELDS,
    SCHEDULE_FIELDS,
    SCHEDULE_KINDS,
    SCHEMA_VERSION,
    AdamConfig,
    ScheduleConfig,
)
from adamtune.config.values import Spec, parse_model_section
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
    "baseline",
    "model",
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
RANGE_KEYS = {"low", "high", "log", "include_zero", "include_none", "points"}
MAX_GRID_POINTS = 10_000  # of one field, and of a whole grid


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
    points: int | None = None  # under --sampler grid: this many values, log-spaced on a log range

    def grid_values(self) -> list[Any]:
        """The values a grid search tries: ``points`` of them from low to high, then the off
        value (0 or None) where the field can be switched off."""
        assert self.points is not None
        values = _spaced(self.low, self.high, self.points, self.log)
        off = [0.0] if self.include_zero else [None] if self.include_none else []
        return [*values, *off]

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
    points: int | None = None  # under --sampler grid

    def grid_values(self) -> list[Any]:
        assert self.points is not None
        values = _spaced(self.low, self.high, self.points, self.log)
        return sorted({int(round(v)) for v in values})

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
    baseline: AdamConfig | None = None  # the space's own ``baseline:``; None: AdamW's defaults
    # ``model:``: values of the user's own, drawn beside Adam's (adamtune.values)
    model: dict[str, Spec] = field(default_factory=dict)

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

    def for_grid(self) -> SearchSpace:
        """This space as ``--sampler grid`` searches it: every searched field a list of values
        (``grid: [...]``, ``choices: [...]``, or a range with ``points: N``); a plain range is
        an error naming the field."""
        params: dict[str, Param] = {}
        for name, param in self.params.items():
            if isinstance(param, (FloatRange, IntRange)):
                if param.points is None:
                    raise SpaceError(
                        f"{self.source}: {name}: a range needs 'points: N' (or write the field "
                        f"as {{grid: [...]}}) under --sampler grid, got low={shown(param.low)}, "
                        f"high={shown(param.high)}"
                    )
                param = Categorical(tuple(param.grid_values()))
            params[name] = param
        grid = replace(self, params=params)
        if grid.grid_size() > MAX_GRID_POINTS:
            raise SpaceError(
                f"{self.source}: the grid has {grid.grid_size()} points, more than "
                f"{MAX_GRID_POINTS}; use fewer points or another --sampler"
            )
        return grid

    def grid(self) -> dict[str, list[Any]]:
        """Optuna parameter name -> the values a grid search tries (after ``for_grid``)."""
        return {
            name: list(p.choices) for name, p in self.params.items() if isinstance(p, Categorical)
        }

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def grid_description(self) -> str:
        """``lr 4 x weight_decay 3 = 12 points``."""
        sizes = " x ".join(f"{name} {len(values)}" for name, values in self.grid().items())
        return f"{sizes or 'no searched field'} = {self.grid_size()} points"


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
        data = _mapping(text)
        if _is_export(data):  # an exported config: every field fixed at the trial's value
            exported = _export_config(data, "")
            params = parse_params(fixed_fields(exported))
            values = data.get("values") or {}
            model = parse_model_section(values) if isinstance(values, dict) else {}
            return SearchSpace(name=name, source=source, text=text, params=params, model=model)
        spec = data.pop("baseline", None)
        model = parse_model_section(data.pop("model", {}))
        params = parse_params(data)
        own = None if spec is None else _baseline(spec, Path(source).parent)
        return SearchSpace(name, source, text, params, own, model)
    except (SpaceError, ConfigError) as exc:
        raise SpaceError(f"{source}: {exc}") from None


def fixed_fields(config: AdamConfig) -> dict[str, Any]:
    """A config as space fields, each one fixed (beta1/beta2 as themselves)."""
    data = config.to_dict()
    data["schedule"] = dict(data["schedule"])
    return data


def _is_export(data: dict[str, Any]) -> bool:
    return "schema_version" in data and "config" in data


def _export_config(data: dict[str, Any], where: str) -> AdamConfig:
    """The AdamConfig of an ``adamtune export --format yaml`` (or json) document."""
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SpaceError(f"{where}schema_version: must be {SCHEMA_VERSION}, got {shown(version)}")
    return AdamConfig.from_dict(data["config"], source=f"{where}config".rstrip("."))


def _baseline(spec: Any, folder: Path) -> AdamConfig:
    """``baseline:`` as a mapping of config fields, an exported document, or the path of an
    exported file (relative to the space's folder)."""
    if isinstance(spec, str):
        path = Path(spec) if Path(spec).is_absolute() else folder / spec
        if not path.is_file():
            raise SpaceError(f"baseline: no such file {shown(str(path))}")
        try:
            return AdamConfig.from_file(path)
        except ConfigError as exc:
            raise SpaceError(f"baseline: {exc}") from None
    if not isinstance(spec, dict):
        raise SpaceError(
            "baseline: must be a mapping of config fields or the path of an exported config, "
            f"got {shown(spec)}"
        )
    if _is_export(spec):
        return _export_config(spec, "baseline.")
    spec = dict(spec)
    for beta in ("beta1", "beta2"):
        if f"one_minus_{beta}" in spec:
            if beta in spec:
                raise SpaceError(f"baseline.{beta}: give either {beta} or one_minus_{beta}")
            value = _number(f"one_minus_{beta}", spec.pop(f"one_minus_{beta}"))
            spec[beta] = 1.0 - value
    for key, value in list(spec.items()):  # YAML 1.1 reads 1e-5 (no dot) as a string
        if isinstance(value, str) and key not in ("schedule",):
            with contextlib.suppress(ValueError):
                spec[key] = float(value)
    return AdamConfig.from_dict(spec, source="baseline")


def _mapping(text: str) -> dict[str, Any]:
    try:
        data = yamlfile.parse(text)
    except ValueError as exc:
        raise SpaceError(str(exc)) from None
    if not isinstance(data, dict):
        raise SpaceError(f"must be a mapping of parameters, got {type(data).__name__}")
    return data


def parse_params(data: dict[str, Any]) -> dict[str, Param]:
    """Validated params from a space's fields (a parsed YAML mapping, no ``baseline``)."""
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
    if "choices" in spec or "grid" in spec:
        key = "grid" if "grid" in spec else "choices"
        _reject_unknown(spec, (key,), f"{name}.")
        choices = _choice_list(f"{name}.{key}", spec[key], named=True)
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
    points = spec.get("points")
    if points is not None and (
        isinstance(points, bool)
        or not isinstance(points, int)
        or not 2 <= points <= MAX_GRID_POINTS
    ):
        raise SpaceError(
            f"{name}.points: must be an integer in [2, {MAX_GRID_POINTS}], got {shown(points)}"
        )
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
        return IntRange(int(low), int(high), log, points)
    return FloatRange(float(low), float(high), log, include_zero, include_none, points)


def _spaced(low: float, high: float, points: int, log: bool) -> list[float]:
    """``points`` values from low to high, evenly spaced (geometrically on a log scale), each
    rounded to 6 significant digits so a grid reads 1e-4, 1e-3, ... rather than 0.0009999."""
    if log:
        ratio = math.log(high / low) / (points - 1)
        raw = [low * math.exp(ratio * i) for i in range(points)]
    else:
        raw = [low + (high - low) * i / (points - 1) for i in range(points)]
    values = [float(f"{v:.6g}") for v in raw[1:-1]]
    return [low, *values, high]


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
        key = "grid" if "grid" in spec else "choices"
        _reject_unknown(spec, (key,), "schedule.kind.")
        kinds = _choice_list(f"schedule.kind.{key}", spec.get(key), named=True)
    else:
        kinds = [spec]
    for kind in kinds:
        if kind not in SCHEDULE_KINDS:
            raise SpaceError(
                f"schedule.kind: must be one of {', '.join(SCHEDULE_KINDS)}, got {shown(kind)}"
            )
    return Categorical(tuple(kinds)) if isinstance(spec, dict) else Fixed(spec)


def _parse_bool(name: str, spec: Any) -> Param:
    if isinstance(spec, dict):
        key = "grid" if "grid" in spec else "choices"
        _reject_unknown(spec, (key,), f"{name}.")
        values = _choice_list(f"{name}.{key}", spec.get(key), named=True)
    else:
        values = [spec]
    for value in values:
        if not isinstance(value, bool):
            raise SpaceError(f"{name}: must be true or false, got {shown(value)}")
    return Categorical(tuple(values)) if isinstance(spec, dict) else Fixed(spec)


def _choice_list(name: str, choices: Any, named: bool = False) -> list[Any]:
    where = name if named else f"{name}.choices"
    if not isinstance(choices, list) or not choices:
        raise SpaceError(f"{where}: must be a non-empty list, got {shown(choices)}")
    seen: list[Any] = []
    for value in choices:  # 1 == 1.0 == True in Python: a repeat is the same value and type
        if any(value == old and type(value) is type(old) for old in seen):
            raise SpaceError(
                f"{where}: lists {shown(value)} more than once; each value is tried once, so "
                "give it once"
            )
        seen.append(value)
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
