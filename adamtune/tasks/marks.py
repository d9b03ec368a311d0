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
    """A function of one parameter that builds a Task: marked, or annotated ``-> Task``."""
    if getattr(function, FACTORY_MARK, False):
        return True
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return False
    returns = signature.return_annotation
    name = returns if isinstance(returns, str) else getattr(returns, "__name__", "")
    return bool(signature.parameters) and name.rpartition(".")[2] == "Task"


def is_training_loop(function: Callable[..., Any]) -> bool:
    """Marked, or takes exactly one parameter (a task factory takes none)."""
    if hasattr(function, LOOP_MARK):
        return True
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in parameters
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def loop_settings(function: Callable[..., Any]) -> dict[str, Any]:
    return dict(getattr(function, LOOP_MARK, {"metric_name": "value", "direction": "minimize"}))
