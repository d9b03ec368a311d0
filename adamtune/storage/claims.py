"""Once per study, not once per process: claims taken through the study's storage.

Several processes may run one study: separately started ``adamtune search`` workers on a
shared database, or ``--workers`` children. A few things must happen once per study whichever
process gets there: the confirmation of a finished study is run by one process, a population
is trained by one. Every Optuna storage (RDB, journal, gRPC) makes exactly one of several
concurrent ``create_study`` calls with one name succeed and answers DuplicatedStudyError to the
rest. A claim is such a creation: an empty marker study named ``.adamtune-claim.<hash>``, the
hash of the study's name and of what is claimed, so the marker's name has a fixed length
whatever the study's (PostgreSQL and MySQL bound study names to 512 characters).

A claim lives as long as its holder: the holder writes a heartbeat (``beat``, wall-clock
seconds) into the marker while it works, marks it ``done`` when the work is finished, and
deletes the marker when the work is interrupted, so a rerun claims it again. A marker whose
heartbeat is older than ``STALE_SECONDS`` (its holder was killed) is taken over.
``adamtune studies`` hides markers.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import optuna

from adamtune.storage.optuna_private import storage_of

MARK = ".adamtune-claim."
BEAT_SECONDS = 5.0  # the holder's heartbeat interval
STALE_SECONDS = 30.0  # a marker silent this long lost its holder
_NEW = re.compile(r"\.adamtune-claim\.[0-9a-f]{32}")
_OLD = re.compile(r"(.+)\.adamtune-claim\.(population|confirm-\d+)")  # adamtune 0.2's markers


def claim_name(study_name: str, what: str) -> str:
    digest = hashlib.sha256(f"{study_name}\0{what}".encode()).hexdigest()[:32]
    return f"{MARK}{digest}"


def is_claim(name: str, names: set[str] | None = None) -> bool:
    """Whether the study ``name`` is a claim marker. An old-style marker (``STUDY.adamtune-
    claim.WHAT``) counts only where ``names`` (the storage's study names) holds its STUDY, so
    a user's own study with ``.adamtune-claim.`` in its name is never hidden."""
    if _NEW.fullmatch(name):
        return True
    old = _OLD.fullmatch(name)
    return old is not None and (names is None or old.group(1) in names)


def create_or_load(storage: Any, study_name: str, **options: Any) -> tuple[optuna.Study, bool]:
    """The study ``study_name`` and whether this call created it (exactly one of several
    processes starting together does)."""
    try:
        return optuna.create_study(storage=storage, study_name=study_name, **options), True
    except optuna.exceptions.DuplicatedStudyError:
        pruner = options.get("pruner")
        return optuna.load_study(study_name=study_name, storage=storage, pruner=pruner), False


class Claim:
    """A claim this process holds: ``beat()`` keeps it, ``finish()`` marks the work done for
    good, ``release()`` gives it back (deletes the marker) so that another process, or a rerun,
    can take it. ``held()`` does all three around a block of work."""

    def __init__(self, marker: optuna.Study, holder: str) -> None:
        self.marker = marker
        self.holder = holder

    def beat(self) -> None:
        self.marker.set_user_attr("beat", time.time())

    def finish(self) -> None:
        self.marker.set_user_attr("done", True)

    def release(self) -> None:
        with contextlib.suppress(Exception):  # a storage already gone keeps a stale marker
            optuna.delete_study(study_name=self.marker.study_name, storage=storage_of(self.marker))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Heartbeats on a thread while the block runs; done after it, released if it raised
        (an interrupt, a lost storage) so the work is not lost for good."""
        stop = threading.Event()

        def beating() -> None:
            while not stop.wait(BEAT_SECONDS):
                with contextlib.suppress(Exception):
                    self.beat()

        thread = threading.Thread(target=beating, name="adamtune-claim", daemon=True)
        thread.start()
        try:
            yield
        except BaseException:
            stop.set()
            thread.join()
            self.release()
            raise
        stop.set()
        thread.join()
        self.finish()


def take(study: optuna.Study, what: str) -> Claim | None:
    """The claim on ``what`` for ``study`` when this process gets it, else None: exactly one of
    several processes claiming together gets it; a claim whose work is done is never given
    again; one whose holder went silent (killed) is taken over."""
    storage = storage_of(study)
    holder = uuid.uuid4().hex
    marker, created = create_or_load(storage, claim_name(study.study_name, what))
    if created:
        marker.set_user_attr("claims", {"study": study.study_name, "what": what})
        marker.set_user_attr("holder", holder)
        marker.set_user_attr("beat", time.time())
        return Claim(marker, holder)
    attrs = marker.user_attrs
    beat = attrs.get("beat")
    if attrs.get("done") or not isinstance(beat, (int, float)):
        return None  # done, or being created this moment (or an old marker: taken for good)
    if time.time() - beat <= STALE_SECONDS:
        return None
    marker.set_user_attr("holder", holder)  # take over a dead holder's claim ...
    marker.set_user_attr("beat", time.time())
    time.sleep(0.2)  # ... and keep it only if no other process took it over at once
    if (
        optuna.load_study(study_name=marker.study_name, storage=storage).user_attrs.get("holder")
        != holder
    ):
        return None
    return Claim(marker, holder)


def claim_state(study: optuna.Study, what: str) -> str:
    """``done``, ``held`` or ``free``: what a process that did not get a claim tells the user."""
    try:
        marker = optuna.load_study(
            study_name=claim_name(study.study_name, what), storage=storage_of(study)
        )
    except KeyError:
        return "free"
    return "done" if marker.user_attrs.get("done") else "held"
