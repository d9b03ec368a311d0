"""Values of the user's own, searched beside Adam's: dropout, width, batch size, label smoothing.

User code asks for them with Optuna's names and arguments, ``trial.suggest_float(name, low,
high, *, step=None, log=False)``, ``suggest_int(name, low, high, *, step=1, log=False)`` and
``suggest_categorical(name, choices)``, in a training loop or in a task factory that takes the
trial. A space's ``model:`` section declares values too (``dropout: {low: 0.0, high: 0.5}``):
they are drawn before the trial trains, and a call for a declared name returns the drawn value
(the file's range wins over the code's, so a space can narrow a search without editing code).

Where the values come from:
- during the search, the Optuna trial (the sampler models them jointly with Adam's);
- when a trial is trained again (confirmation, a check of an export), its stored values;
- for a baseline evaluated apart from the search, each value's default: the middle of its range
  (geometric on a log scale), or the first choice.

Whatever was asked is kept in ``values`` (the trial's user attribute ``values``, shown by
``adamtune show`` and exported beside the optimizer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from adamtune.errors import SpaceError, TaskError, shown

# ("float"|"int", low, high, step, log), ("categorical", choices) or ("fixed", value)
Spec = tuple[Any, ...]

# Optuna parameter names that Adam's values use: a value of the user's own may not take one
ADAM_NAMES = frozenset(
    {
        "lr",
        "beta1",
        "beta2",
        "one_minus_beta1",
        "one_minus_beta2",
        "eps",
        "weight_decay",
        "weight_decay.enabled",
        "decoupled",
        "amsgrad",
        "max_grad_norm",
        "max_grad_norm.enabled",
    }
)


class Values:
    """``suggest_float``/``suggest_int``/``suggest_categorical`` over one source of values (see
    the module doc); ``values`` holds every value asked so far."""

    def __init__(
        self,
        trial: Any = None,
        stored: dict[str, Any] | None = None,
        declared: dict[str, Spec] | None = None,
    ) -> None:
        self._trial = trial  # an optuna.Trial, or None
        self._stored = dict(stored) if stored is not None else None
        self._declared = dict(declared or {})  # a space's model: section
        self.values: dict[str, Any] = {}
        self._kinds: dict[str, str] = {}  # name -> "float", "int" or "categorical" as asked
        for name, spec in self._declared.items():  # drawn before the trial trains
            self._ask(name, f"model: {name}", spec)

    @property
    def params(self) -> dict[str, Any]:
        """Every value asked so far (Optuna's name for a trial's values)."""
        return dict(self.values)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        where = f"trial.suggest_float({name!r})"
        _check_range(where, low, high, log)
        _check_step(where, low, high, step, log)
        return float(self._ask(name, where, ("float", low, high, step, log)))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        where = f"trial.suggest_int({name!r})"
        for label, value in (("low", low), ("high", high), ("step", step)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TaskError(f"{where}: {label} must be an integer, got {shown(value)}")
        _check_range(where, low, high, log)
        if step != 1:
            _check_step(where, low, high, step, log)
        return int(self._ask(name, where, ("int", low, high, step, log)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        where = f"trial.suggest_categorical({name!r})"
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not choices:
            raise TaskError(f"{where}: choices must be a non-empty list, got {shown(choices)}")
        _check_choices(where, choices)
        return self._ask(name, where, ("categorical", list(choices)))

    def _ask(self, name: str, where: str, spec: tuple[Any, ...]) -> Any:
        if not isinstance(name, str) or not name:
            raise TaskError(f"{where}: the name must be a non-empty string")
        if name in ADAM_NAMES or name.startswith("schedule."):
            raise TaskError(
                f"{where}: {name!r} is one of Adam's values in adamtune; use another name"
            )
        if name in self.values:  # drawn from the space's model: section, or asked before
            asked = self._kinds.get(name)
            if asked is not None and name not in self._declared and asked != spec[0]:
                raise TaskError(
                    f"{where}: {name!r} was asked before as {_KIND_WORDS[asked]}; one name "
                    "holds one kind of value: ask it the same way, or use another name"
                )
            return self.values[name]
        self._kinds[name] = spec[0]
        spec = self._declared.get(name, spec)  # the space's range wins over the code's
        if spec[0] == "fixed":
            value = spec[1]
        elif self._trial is not None:
            value = _suggest(self._trial, name, where, spec)
        elif self._stored is not None and name in self._stored:
            value = self._stored[name]
        else:
            value = default(spec)
        self.values[name] = value
        return value


def _suggest(trial: Any, name: str, where: str, spec: tuple[Any, ...]) -> Any:
    try:
        if spec[0] == "float":
            _, low, high, step, log = spec
            return trial.suggest_float(name, low, high, step=step, log=log)
        if spec[0] == "int":
            _, low, high, step, log = spec
            return trial.suggest_int(name, low, high, step=step, log=log)
        return trial.suggest_categorical(name, spec[1])
    except ValueError as exc:  # Optuna's own check (e.g. a step that does not divide the range)
        raise TaskError(f"{where}: {exc}") from None


def default(spec: tuple[Any, ...]) -> Any:
    """A value's default where nothing was drawn: the middle of its range, or its first choice."""
    if spec[0] == "categorical":
        return spec[1][0]
    _, low, high, step, log = spec
    middle = math.sqrt(low * high) if log else (low + high) / 2
    if spec[0] == "int":
        step = step or 1
        return int(low + round((middle - low) / step) * step)
    if step:
        return low + round((middle - low) / step) * step
    return middle


_KIND_WORDS = {
    "float": "a float (suggest_float)",
    "int": "an integer (suggest_int)",
    "categorical": "a choice (suggest_categorical)",
    "fixed": "a fixed value",
}


def _check_choices(where: str, choices: Sequence[Any]) -> None:
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise TaskError(
                f"{where}: each choice must be None, a bool, number or string, got {shown(choice)}"
            )
        if isinstance(choice, float) and not math.isfinite(choice):
            raise TaskError(f"{where}: each choice must be finite, got {shown(choice)}")


def _check_step(where: str, low: float, high: float, step: Any, log: bool) -> None:
    """Optuna's rules for a step, as one line instead of its warnings: a finite number > 0,
    not with log, and one that divides the range (else Optuna moves ``high`` silently)."""
    if step is None:
        return
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
        raise TaskError(f"{where}: step must be a finite number > 0, got {shown(step)}")
    if step <= 0:
        raise TaskError(f"{where}: step must be > 0, got {step!r}")
    if log:
        raise TaskError(f"{where}: step and log=True cannot be combined (Optuna's rule)")
    count = (high - low) / step
    if abs(count - round(count)) > 1e-8 * max(1.0, abs(count)):
        raise TaskError(
            f"{where}: step must divide high - low, got low={low!r}, high={high!r}, step={step!r}"
        )


def _check_range(where: str, low: Any, high: Any, log: bool) -> None:
    for label, value in (("low", low), ("high", high)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise TaskError(f"{where}: {label} must be a finite number, got {shown(value)}")
    if low > high:
        raise TaskError(f"{where}: low must be <= high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise TaskError(f"{where}: a log scale needs low > 0, got low={low!r}")


def parse_model_section(section: Any) -> dict[str, Spec]:
    """A space's ``model:`` mapping, validated: each name a fixed value, ``{choices: [...]}``,
    or ``{low, high}`` with ``log`` and ``step`` (integers both ends: an integer range)."""
    if not isinstance(section, dict):
        raise SpaceError(f"model: must be a mapping of value names, got {shown(section)}")
    out: dict[str, Spec] = {}
    for name, spec in section.items():
        where = f"model.{name}"
        if not isinstance(name, str) or not name:
            raise SpaceError(f"model: names must be non-empty strings, got {shown(name)}")
        if name in ADAM_NAMES or name.startswith("schedule."):
            raise SpaceError(f"{where}: {name!r} is one of Adam's values; use another name")
        try:
            out[name] = _model_spec(where, spec)
        except TaskError as exc:
            raise SpaceError(str(exc).replace(f"trial.suggest_float({name!r})", where)) from None
    return out


def _model_spec(where: str, spec: Any) -> Spec:
    if not isinstance(spec, dict):
        if spec is not None and not isinstance(spec, (bool, int, float, str)):
            raise SpaceError(
                f"{where}: must be a value, {{choices: [...]}} or {{low, high}}, got {shown(spec)}"
            )
        return ("fixed", spec)
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise SpaceError(f"{where}: {extra[0]!r} is not allowed beside choices")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}.choices: must be a non-empty list, got {shown(choices)}")
        if len({repr(c) for c in choices}) != len(choices):
            raise SpaceError(f"{where}.choices: holds a value twice: {shown(choices)}")
        try:
            _check_choices(f"{where}.choices", choices)
        except TaskError as exc:
            raise SpaceError(str(exc)) from None
        return ("categorical", choices)
    unknown = sorted(set(spec) - {"low", "high", "log", "step"})
    if unknown:
        raise SpaceError(
            f"{where}: unknown key {unknown[0]!r}; expected low, high, log, step, or choices"
        )
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where}: a range needs low and high, got {shown(spec)}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise SpaceError(f"{where}.log: must be true or false, got {shown(log)}")
    integer = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) and (
        step is None or (isinstance(step, int) and not isinstance(step, bool))
    )
    try:
        _check_range(where, low, high, log)
    except TaskError as exc:
        raise SpaceError(str(exc)) from None
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
    ):
        raise SpaceError(f"{where}.step: must be a number > 0, got {shown(step)}")
    if step is not None and log:
        raise SpaceError(f"{where}: step and log: true cannot be combined (Optuna's rule)")
    try:
        _check_step(f"{where}.step", low, high, step, log)
    except TaskError as exc:
        raise SpaceError(str(exc)) from None
    if integer:
        return ("int", low, high, step or 1, log)
    return ("float", float(low), float(high), step, log)
