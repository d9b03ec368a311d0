"""Old import paths, kept for one release (0.1 -> 0.2) so files exported before the move into
subpackages, and user code written against the flat layout, keep running.

An old path is an alias of the new module, the very same object (so ``monkeypatch`` and
``isinstance`` see one thing), and importing it warns once with where the name lives now.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "adamtune.baseline": "adamtune.space.baseline",
    "adamtune.batches": "adamtune.training.batches",
    "adamtune.builders": "adamtune.training.builders",
    "adamtune.claims": "adamtune.storage.claims",
    "adamtune.confirm": "adamtune.search.confirm",
    "adamtune.evaluations": "adamtune.training.runner",
    "adamtune.export": "adamtune.results.export",
    "adamtune.first_batch": "adamtune.training.first_batch",
    "adamtune.gain": "adamtune.results.gain",
    "adamtune.journal": "adamtune.storage.journal",
    "adamtune.loops": "adamtune.training.user_loop",
    "adamtune.objective": "adamtune.search.objective",
    "adamtune.precision": "adamtune.training.precision",
    "adamtune.processes": "adamtune.search.workers",
    "adamtune.progress": "adamtune.cli.progress",
    "adamtune.readback": "adamtune.training.readback",
    "adamtune.report": "adamtune.results.report",
    "adamtune.samplers": "adamtune.search.samplers",
    "adamtune.schedules": "adamtune.config.schedules",
    "adamtune.settings": "adamtune.config.settings",
    "adamtune.stack_model": "adamtune.training.stacked.model",
    "adamtune.stack_search": "adamtune.search.stacked",
    "adamtune.stacked": "adamtune.training.stacked.loop",
    "adamtune.studies": "adamtune.results.studies",
    "adamtune.study": "adamtune.search",  # its names now live in several search modules
    "adamtune.train": "adamtune.training.single",
    "adamtune.trial_reads": "adamtune.storage.reads",
    "adamtune.trial_writes": "adamtune.storage.writes",
    "adamtune.urls": "adamtune._util.urls",
    "adamtune.values": "adamtune.config.values",
    "adamtune.yamlfile": "adamtune._util.yamlfile",
}
"""Old module -> new module. ``adamtune.config``, ``.space``, ``.storage``, ``.search`` and
``.cli`` kept their names: each is now a package whose ``__init__`` offers the old names."""


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new} in adamtune 0.2; import public names from "
            "adamtune or adamtune.optim (the old path goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The new module ran already; the alias only names it."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        name: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
        /,
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(name)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(name, _Alias(new))


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
