"""Tasks: the built-in workloads and loading a user's own ("module:function", "file.py:function").

Names load lazily, so listing the tasks and checking a --task name (loader.check_spec) need no
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Task": "adamtune.tasks.base",
    "accuracy": "adamtune.tasks.base",
    "mean_squared_error": "adamtune.tasks.base",
    "builtin_tasks": "adamtune.tasks.loader",
    "resolve_task": "adamtune.tasks.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adamtune.tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
