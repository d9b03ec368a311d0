"""Tasks: the built-in workloads and loading a user's own ("module:function", "file.py:function")."""

from adamtune.tasks.base import Task, accuracy, mean_squared_error
from adamtune.tasks.loader import builtin_tasks, resolve_task

__all__ = ["Task", "accuracy", "builtin_tasks", "mean_squared_error", "resolve_task"]
