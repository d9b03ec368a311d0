"""Layer 7: the ``adamtune`` command, the only module that imports click."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "DEFAULT_STORAGE": "adamtune.cli.app",
    "SECRET_ENV": "adamtune.cli.app",
    "AdamtuneGroup": "adamtune.cli.app",
    "FiniteFloat": "adamtune.cli.app",
    "StackSize": "adamtune.cli.app",
    "sigterm_as_interrupt": "adamtune.cli.app",
    "env_option": "adamtune.cli.app",
    "storage_option": "adamtune.cli.app",
    "cli": "adamtune.cli.app",
    "search": "adamtune.cli.app",
    "studies": "adamtune.cli.app",
    "show": "adamtune.cli.app",
    "spaces": "adamtune.cli.app",
    "tasks": "adamtune.cli.app",
    "export": "adamtune.cli.app",
    "resolve_tracking_uri": "adamtune.cli.app",
    "ui": "adamtune.cli.app",
    "LINGER_SECONDS": "adamtune.cli.app",
    "main": "adamtune.cli.app",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
