"""How a user's function says what it is: ``@training_loop`` marks ``train(trial)``,
``@task_factory`` marks ``make_task(trial) -> Task``; unmarked functions are told apart by their
signature. Plain functions only (no torch), so ``tasks.loader`` can sort them before any trial."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

LOOP_MARK = "__adamtune_training_loop__"


def training_loop(
    metric_name: str = "value", direction: str = "minimize", epochs: int = 1
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark ``train(trial)`` as a training loop whose result is ``metric_name`` (``direction``
    "maximize" or "minimize"); ``epochs`` is how many reports a full run makes (for the
    pruner's warm-up and the progress line)."""

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        setattr(
            function, LOOP_MARK, dict(metric_name=metric_name, direction=direction, epochs=epochs)
        )
        return function

    return mark


FACTORY_MARK = "__adamtune_task_factory__"


def task_factory(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``make_task(trial)`` as a task factory that takes the trial (its values come from
    ``trial.suggest_*``), not a training loop. A return annotation ``-> Task`` says the same."""
    setattr(function, FACTORY_MARK, True)
    return function


def is_task_factory(function: Callable[..., Any]) -> bool:
    """A function that builds a Task from the trial: marked ``@task_factory``, or whose first
    parameter is required and which is annotated ``-> Task`` (or whose first parameter is
    annotated with a trial type). A function with no required parameter is a plain factory,
    called with no argument whatever its annotation: ``def make_task(p: float = 0.1) -> Task``
    is called as ``make_task()``, its default kept."""
    if getattr(function, FACTORY_MARK, False):
        return True
    required = _required(function)
    if required is None or not required:
        return False
    returns = inspect.signature(function).return_annotation
    first = required[0].annotation
    return _named(returns, ("Task",)) or (
        _named(first, TRIAL_TYPES) and not _named(returns, ("float", "int", "dict"))
    )


TRIAL_TYPES = ("Values", "Trial", "FrozenTrial", "LoopTrial")  # a first parameter's annotation


def _named(annotation: Any, names: tuple[str, ...]) -> bool:
    """``annotation`` (a type, or a string under ``from __future__ import annotations``) is one
    of ``names``, module prefixes ignored."""
    if annotation is inspect.Parameter.empty:
        return False
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return name.rpartition(".")[2] in names


def _required(function: Callable[..., Any]) -> list[inspect.Parameter] | None:
    """The positional parameters without a default, or None where there is no signature."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    return [
        p
        for p in parameters
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def ambiguous_reading(function: Callable[..., Any], name: str) -> str | None:
    """The one line for a signature two readings fit: no required parameter but parameters of
    its own and ``-> Task`` (a factory of the trial once read it so). None otherwise."""
    if getattr(function, FACTORY_MARK, False) or hasattr(function, LOOP_MARK):
        return None
    required = _required(function)
    if required is None or required:
        return None
    parameters = inspect.signature(function).parameters
    if not parameters or not _named(inspect.signature(function).return_annotation, ("Task",)):
        return None
    shown = ", ".join(
        f"{p.name}={p.default!r}" for p in parameters.values() if p.default is not p.empty
    )
    return (
        f"Note: {name}({shown}) has no required parameter, so it is called as {name}() with "
        "its defaults; to build a task per trial from the trial's values, mark it "
        "@adamtune.task_factory."
    )


def is_training_loop(function: Callable[..., Any]) -> bool:
    """Marked, or takes exactly one parameter (a task factory takes none)."""
    if hasattr(function, LOOP_MARK):
        return True
    required = _required(function)
    return required is not None and len(required) == 1


def loop_settings(function: Callable[..., Any]) -> dict[str, Any]:
    return dict(getattr(function, LOOP_MARK, {"metric_name": "value", "direction": "minimize"}))
