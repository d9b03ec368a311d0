"""Once per study, not once per process: claims taken through the study's storage.

Several processes may run one study: separately started ``adamtune search`` workers on a
shared database, or ``--workers`` children. A few things must happen once per study whichever
process gets there: the baseline is enqueued by the process that created the study, and the
confirmation of a finished study is run by one process. Every Optuna storage (RDB, journal,
gRPC) makes exactly one of several concurrent ``create_study`` calls with one name succeed and
answers DuplicatedStudyError to the rest: RDB through the unique study name, the journal
through the order of its log. A claim is such a creation: an empty marker study whose name says
what it claims (``STUDY.adamtune-claim.WHAT``). The marker stays, so a claim is taken once for
good; ``adamtune studies`` hides markers.
"""

from __future__ import annotations

from typing import Any

import optuna

from adamtune.storage.optuna_private import storage_of

MARK = ".adamtune-claim."


def claim_name(study_name: str, what: str) -> str:
    return f"{study_name}{MARK}{what}"


def is_claim(study_name: str) -> bool:
    return MARK in study_name


def create_or_load(storage: Any, study_name: str, **options: Any) -> tuple[optuna.Study, bool]:
    """The study ``study_name`` and whether this call created it (exactly one of several
    processes starting together does)."""
    try:
        return optuna.create_study(storage=storage, study_name=study_name, **options), True
    except optuna.exceptions.DuplicatedStudyError:
        pruner = options.get("pruner")
        return optuna.load_study(study_name=study_name, storage=storage, pruner=pruner), False


def claim(study: optuna.Study, what: str) -> bool:
    """True for exactly one of the processes that claim ``what`` for ``study``, ever."""
    _, created = create_or_load(storage_of(study), claim_name(study.study_name, what))
    return created
