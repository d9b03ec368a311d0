"""Errors a user can fix. The CLI prints each as one line and exits non-zero.

Every message names where the problem is (file, key, flag or URL), the rule that was broken
and the value that broke it, e.g. ``my.yaml: beta2.high: must be < 1, got 1.5``.
"""

from __future__ import annotations


class AdamtuneError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 1


class ConfigError(AdamtuneError, ValueError):
    """An Adam or schedule value breaks a rule (beta outside [0, 1), negative lr, ...)."""


class SpaceError(AdamtuneError, ValueError):
    """A search-space YAML file is malformed."""


class TaskError(AdamtuneError):
    """A task name or a user task could not be resolved or is malformed."""


class StorageError(AdamtuneError):
    """The Optuna storage is unreachable, malformed or holds an incompatible study."""


class StudyError(AdamtuneError):
    """A study or a trial asked for does not exist or cannot be used as asked."""


class ExportError(AdamtuneError):
    """A configuration cannot be exported exactly in the requested format."""


class DivergedError(AdamtuneError):
    """Training diverged (loss not finite, or exploded); the trial is stopped at that step."""

    def __init__(self, step: int, loss: float, lr: float, why: str = "") -> None:
        self.step = step
        self.loss = loss
        self.lr = lr
        what = f"loss became {loss:.4g}" + (f" ({why})" if why else "")
        super().__init__(f"{what} at step {step} (lr={lr:.3g})")
