"""The one place a training loop reads per-step values back from the device: once an epoch.

On CUDA a read (``.item()``, ``.tolist()``) waits for every kernel queued before it; one per step
would cap a stack of trials at the host's launch speed. So the loops keep each step's loss and
gradient norm on the device and read an epoch's worth in one call, here, at the epoch's end
(the divergence guard then checks those values, step by step). The tests count these calls.
"""

from __future__ import annotations

from typing import Any

import torch


def read_back(tensors: list[torch.Tensor]) -> list[Any]:
    """``tensors`` (same shape each, on one device) as nested floats, in one transfer."""
    if not tensors:
        return []
    return torch.stack([t.detach().float() for t in tensors]).tolist()
