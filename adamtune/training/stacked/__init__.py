"""Stacked trials: N configurations trained as rows of one batched model."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "OnEpoch": "adamtune.training.stacked.loop",
    "OnResult": "adamtune.training.stacked.loop",
    "Source": "adamtune.training.stacked.loop",
    "train_stacked": "adamtune.training.stacked.loop",
    "train_stack": "adamtune.training.stacked.loop",
    "why_not_stackable": "adamtune.training.stacked.model",
    "ELEMENTWISE": "adamtune.training.stacked.model",
    "StackedModel": "adamtune.training.stacked.model",
    "RowLosses": "adamtune.training.stacked.model",
    "Feed": "adamtune.training.stacked.feed",
    "AUTO_ROWS": "adamtune.training.stacked.sizing",
    "MEMORY_SHARE": "adamtune.training.stacked.sizing",
    "stack_rows": "adamtune.training.stacked.sizing",
    "confirmation_rows": "adamtune.training.stacked.sizing",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
