"""Tasks: the built-in workloads and loading a user's own ("module:function", "file.py:function").

Names load lazily, so listing the tasks and checking a --task name (loader.check_spec) need no
torch.
"""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "Task": "adamtune.tasks.base",
    "accuracy": "adamtune.tasks.base",
    "mean_squared_error": "adamtune.tasks.base",
    "mse": "adamtune.tasks.base",
    "rmse": "adamtune.tasks.base",
    "mae": "adamtune.tasks.base",
    "builtin_tasks": "adamtune.tasks.loader",
    "resolve_task": "adamtune.tasks.loader",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
