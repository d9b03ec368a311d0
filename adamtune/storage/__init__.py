"""Layer 3: the Optuna storage: open, journal files, claims, and the live-storage reads and writes."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "EXAMPLES": "adamtune.storage.store",
    "DRIVERS": "adamtune.storage.store",
    "OPTUNA_TABLES": "adamtune.storage.store",
    "MLFLOW_TABLES": "adamtune.storage.store",
    "SCHEMA_RACE_TRIES": "adamtune.storage.store",
    "describe_host": "adamtune.storage.store",
    "read_only_uri": "adamtune.storage.store",
    "sqlite_tables": "adamtune.storage.store",
    "open_storage": "adamtune.storage.store",
    "write_ahead_log": "adamtune.storage.store",
    "MARK": "adamtune.storage.claims",
    "claim_name": "adamtune.storage.claims",
    "is_claim": "adamtune.storage.claims",
    "create_or_load": "adamtune.storage.claims",
    "Claim": "adamtune.storage.claims",
    "take": "adamtune.storage.claims",
    "claim_state": "adamtune.storage.claims",
    "HEARTBEAT_ATTR": "adamtune.storage.journal",
    "BLOCK": "adamtune.storage.journal",
    "StaleCallback": "adamtune.storage.journal",
    "mend_torn_tail": "adamtune.storage.journal",
    "open_journal": "adamtune.storage.journal",
    "one_read_of_trials": "adamtune.storage.reads",
    "Write": "adamtune.storage.writes",
    "report_all": "adamtune.storage.writes",
    "set_user_attrs": "adamtune.storage.writes",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
