"""The ``adamtune`` command, the only folder that imports click: ``options`` (the one table of
``adamtune search``'s options), ``search_command``, ``app`` (the group and the reading commands),
``progress``."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "cli": "adamtune.cli.app",
    "main": "adamtune.cli.app",
    "AdamtuneGroup": "adamtune.cli.app",
    "SECRET_ENV": "adamtune.cli.app",
    "LINGER_SECONDS": "adamtune.cli.app",
    "studies": "adamtune.cli.app",
    "show": "adamtune.cli.app",
    "spaces": "adamtune.cli.app",
    "tasks": "adamtune.cli.app",
    "export": "adamtune.cli.app",
    "ui": "adamtune.cli.app",
    "search": "adamtune.cli.search_command",
    "sigterm_as_interrupt": "adamtune.cli.search_command",
    "SEARCH_OPTIONS": "adamtune.cli.options",
    "SearchOption": "adamtune.cli.options",
    "DEFAULT_STORAGE": "adamtune.cli.options",
    "FiniteFloat": "adamtune.cli.options",
    "StackSize": "adamtune.cli.options",
    "env_option": "adamtune.cli.options",
    "storage_option": "adamtune.cli.options",
    "search_options": "adamtune.cli.options",
    "settings_from": "adamtune.cli.options",
    "resolve_tracking_uri": "adamtune.cli.options",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
