"""Errors a user can fix, and the helpers that keep every message to one short line.

The CLI prints each AdamtuneError as one line and exits non-zero. Every message names where the
problem is (file, key, flag or URL), the rule that was broken and the value that broke it,
e.g. ``my.yaml: beta2.high: must be < 1, got 1.5``. Values echoed back go through ``shown`` (a
hostile YAML alias can expand to megabytes), and text that came from outside (a user's
exception, a driver's message) through ``safe_str`` and ``one_line``.
"""

from __future__ import annotations

import os
import re
import reprlib
from typing import Any

MAX_LINE = 400  # characters of a message line; the rest is cut with an ellipsis
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 2


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
    """A configuration cannot be exported exactly in the requested format, or not written."""


class TrackingError(AdamtuneError):
    """The MLflow tracking store is unreachable, malformed or belongs to another tool."""


class DivergedError(AdamtuneError):
    """Training diverged (loss not finite, or exploded); the trial is stopped at that step."""

    def __init__(self, step: int, loss: float, lr: float, why: str = "") -> None:
        self.step = step
        self.loss = loss
        self.lr = lr
        what = f"loss became {loss:.4g}" + (f" ({why})" if why else "")
        super().__init__(f"{what} at step {step} (lr={lr:.3g})")


def shown(value: Any) -> str:
    """``repr(value)``, cut short: safe to echo whatever a user's file held."""
    return _SHORT.repr(value)


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, even when the exception's own ``__str__`` raises."""
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001  (a user's __str__ may raise anything)
        return f"<{type(exc).__name__} whose message cannot be printed>"


def describe(exc: BaseException) -> str:
    """``TypeName: message`` on one line, for a trial's fail reason or a one-line error. An
    error re-raised from a DataLoader worker process is described as the worker's own (its
    type, message and the line of the user's code that raised it), not as the whole
    traceback torch puts into the message."""
    text = safe_str(exc)
    if "Original Traceback (most recent call last):" in text:
        return _worker_error(text)
    text = one_line(text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _worker_error(text: str) -> str:
    """``Type: message (file.py, line N)`` from the traceback text of a DataLoader worker."""
    lines = text.split("Original Traceback (most recent call last):", 1)[1].strip().splitlines()
    files = [line.strip() for line in lines if line.strip().startswith('File "')]
    last = next((line for line in reversed(lines) if line and not line.startswith(" ")), "")
    where = ""
    if files:
        match = re.match(r'File "([^"]+)", line (\d+)', files[-1])
        if match:
            where = f" ({os.path.basename(match.group(1))}, line {match.group(2)}, in a DataLoader worker)"
    return one_line(last.strip()) + where


def user_location(exc: BaseException) -> str:
    """`` (file.py, line N)``: where the user's code raised ``exc`` (the innermost frame
    outside adamtune, torch and the standard library), or '' where none is the user's."""
    import traceback

    skip = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(os.__file__))
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        name = os.path.abspath(frame.filename)
        if not name.startswith(skip) and "site-packages" not in name and "<" not in name:
            return f" ({os.path.basename(name)}, line {frame.lineno})"
    return ""


def did_you_mean(word: str, options: Any) -> str:
    """``; did you mean 'x'?`` for the option closest to ``word``, or ''."""
    import difflib

    close = difflib.get_close_matches(word, [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key(data: dict[Any, Any], known: Any, prefix: str = "") -> str | None:
    """The message for the first key of ``data`` not in ``known`` (the rule for every mapping
    a user writes), or None when every key is known."""
    for key in data:
        if key not in known:
            name = one_line(str(key), 60)
            return (
                f"{prefix}{name}: unknown key{did_you_mean(name, known)} "
                f"(known: {', '.join(known)})"
            )
    return None


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` with its lines joined by ' | ', whitespace collapsed, and cut to ``limit``."""
    parts = [" ".join(line.split()) for line in str(text).splitlines()]
    joined = " | ".join(part for part in parts if part)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"
