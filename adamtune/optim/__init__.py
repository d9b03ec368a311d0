"""adamtune's fused Adam/AdamW: ``from adamtune.optim import FusedAdam``.

Needs only torch; the native CPU kernel is compiled on first use and Triton is imported only
when a CUDA (or interpreted) step runs.
"""

from adamtune.optim.fused_adam import BACKENDS, FusedAdam, resolve_backend

__all__ = ["BACKENDS", "FusedAdam", "resolve_backend"]
