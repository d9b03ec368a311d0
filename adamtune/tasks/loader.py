"""Resolve a ``--task`` value: a built-in name, ``package.module:function`` or ``file.py:function``.

A user factory takes no arguments and returns an adamtune.Task. Resolved tasks are cached per
process, so a study builds its data once, not once per trial. check_spec catches a mistyped name
or a missing file without importing torch, so the CLI can answer before its heavy imports.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adamtune.errors import TaskError, describe
from adamtune.tasks.catalog import DESCRIPTIONS

if TYPE_CHECKING:
    from adamtune.tasks.base import Task


def builtin_tasks() -> dict[str, str]:
    """Built-in task name -> one-line description."""
    return dict(DESCRIPTIONS)


def check_spec(spec: str) -> None:
    """Raise the TaskError that resolve_task would raise for a mistyped built-in name, a
    malformed spec or a missing file: the checks that need neither torch nor the user's code."""
    if ":" not in spec:
        if spec not in DESCRIPTIONS:
            close = difflib.get_close_matches(spec, list(DESCRIPTIONS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TaskError(
                f"--task {spec!r}: not a built-in task ({', '.join(DESCRIPTIONS)}) and not "
                f"'module:function' or 'file.py:function'{hint}"
            )
        return
    target, _, func_name = spec.rpartition(":")
    if not target or not func_name.isidentifier():
        raise TaskError(f"--task {spec!r}: expected 'module:function' or 'file.py:function'")
    if target.endswith(".py") and not Path(target).is_file():
        raise TaskError(f"--task {spec!r}: no such file {target!r}")


READINGS: dict[str, str] = {}  # --task spec -> the line that says how its signature was read


def reading_note(spec: str) -> str | None:
    """The line for a task whose signature two readings fit (adamtune.tasks.marks), once it
    is loaded; None for every other task."""
    return READINGS.get(spec)


@functools.lru_cache(maxsize=8)
def resolve_task(spec: str) -> Task:
    """Build the task named by ``spec`` (see module doc); errors are one TaskError line."""

    check_spec(spec)
    if ":" not in spec:
        from adamtune.tasks.builtin import BUILTIN

        return BUILTIN[spec]()
    target, _, func_name = spec.rpartition(":")
    module = _load_file(spec, target) if target.endswith(".py") else _import(spec, target)
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise TaskError(f"--task {spec!r}: {target} has no function {func_name!r}")
    from adamtune.tasks.marks import ambiguous_reading, is_task_factory, is_training_loop

    origin = (
        f"{Path(target).stem if target.endswith('.py') else target.rpartition('.')[2]}-{func_name}"
    )
    takes_trial = is_task_factory(factory)
    note = ambiguous_reading(factory, func_name)
    if note:
        READINGS[spec] = note
    if not takes_trial and is_training_loop(factory):
        return replace(_loop_task(spec, func_name, factory), origin=origin)
    if not takes_trial:
        return replace(_built(spec, func_name, factory, ()), origin=origin)
    from adamtune.config.values import Values

    def per_trial(values: Any) -> Task:
        return replace(_built(spec, func_name, factory, (values,)), origin=origin)

    # the study's own task (name, metric, checks) is the one the values' defaults build
    return replace(per_trial(Values()), per_trial=per_trial)


def _built(spec: str, func_name: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> Task:
    from adamtune.tasks.base import Task

    call = f"{func_name}(trial)" if args else f"{func_name}()"
    try:
        task = factory(*args)
    except TaskError as exc:
        if not args:
            raise
        raise TaskError(f"--task {spec!r}: {exc}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: sys.exit() included)
        raise TaskError(f"--task {spec!r}: {call} raised {describe(exc)}") from None
    if not isinstance(task, Task):
        raise TaskError(
            f"--task {spec!r}: {call} must return adamtune.Task, got {type(task).__name__}"
        )
    return task


def _loop_task(spec: str, name: str, function: Callable[..., Any]) -> Task:
    """A ``train(trial)`` function as a Task that carries it (adamtune.loops)."""
    from adamtune.tasks.base import Task
    from adamtune.tasks.marks import loop_settings

    settings = loop_settings(function)
    try:
        return Task(
            name=name,
            build_model=_no_model,
            train=None,
            validation=None,
            loss=None,
            metric=None,
            metric_name=settings["metric_name"],
            direction=settings["direction"],
            epochs=settings.get("epochs", 1),
            batch_size=1,
            train_loop=function,
        )
    except TaskError as exc:
        raise TaskError(f"--task {spec!r}: {exc}") from None


def _no_model() -> Any:
    raise TaskError("a training loop builds its own model")


def _import(spec: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TaskError(f"--task {spec!r}: cannot import module {module_name!r} ({exc})") from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: sys.exit() included)
        raise TaskError(
            f"--task {spec!r}: importing {module_name} raised {describe(exc)}"
        ) from None


def _load_file(spec: str, path_text: str):
    path = Path(path_text)
    module_name = f"adamtune_user_task_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # lets pickling and dataclasses see the module
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # its neighbours import as they do under `python file.py`
        sys.path.append(folder)
    try:
        module_spec.loader.exec_module(module)
    except KeyboardInterrupt:
        del sys.modules[module_name]
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: sys.exit() included)
        del sys.modules[module_name]
        raise TaskError(f"--task {spec!r}: importing {path_text} raised {describe(exc)}") from None
    return module
