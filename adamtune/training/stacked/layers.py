"""Layers whose stacked forward pass needs a row of its own: randomness (dropout) and
cumulative running statistics (BatchNorm with ``momentum=None``).

A stacked model runs under ``vmap``, where torch's random layers would draw one tensor of noise
for the whole stack: a row's dropout masks would then depend on how many rows share its stack
and where it sits. Here each row's noise is a counter-based hash of its own key (its seed and
its step, ``row_keys``) and of where in the forward pass it is drawn, so a row draws the same
masks in any stack, of any width, at any position. The masks are not the ones torch's global
generator gives the same trial alone (``--stack 1``): stacked and alone agree in distribution,
not bit for bit.

BatchNorm with a momentum runs as torch's own (vmap batches its running statistics per row);
``momentum=None`` (a cumulative average, which torch computes with a Python float of the batch
count) runs as the same arithmetic in tensors. Layers with no per-row version are named by
``why_not_layer``.
"""

from __future__ import annotations

import copy
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_CHANNEL_DROPOUTS = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
# splitmix64's constants as signed 64-bit integers (torch has no unsigned 64-bit arithmetic)
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def why_not_layer(model: nn.Module) -> str | None:
    """Why a layer of ``model`` cannot run per row in a stack, or None."""
    for name, module in model.named_modules():
        where = name or "the model"
        if isinstance(module, nn.SyncBatchNorm):
            return (
                f"its model has SyncBatchNorm ({where}), whose statistics are shared across "
                "processes, not kept per row"
            )
        if isinstance(module, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
            return f"its model has {type(module).__name__} ({where}), which has no per-row noise"
        if isinstance(module, nn.modules.lazy.LazyModuleMixin):
            return f"its model has {type(module).__name__} ({where}), whose shapes are not set yet"
    return _why_not_shared(model)


def _why_not_shared(model: nn.Module) -> str | None:
    """Tied weights (one Parameter under two names, e.g. an embedding tied to the output
    layer): a stack's rows would each get their own copy under each name, and the tie, which
    is the model, would be lost."""
    first: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            return (
                f"its model ties weights ({name} is {first[id(parameter)]}), and a stack "
                "cannot keep the tie per row yet"
            )
        first[id(parameter)] = name
    return None


def has_random_layers(model: nn.Module) -> bool:
    return any(isinstance(m, _DROPOUTS) and m.p > 0 for m in model.modules())


def per_row(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose dropout draws each row's own noise and whose cumulative
    BatchNorm runs in tensors; parameter and buffer names are unchanged."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, _DROPOUTS):
            module.forward = types.MethodType(_dropout, module)  # type: ignore[method-assign]
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None:
            module.forward = types.MethodType(_cumulative_norm, module)  # type: ignore[method-assign]
    return model


class _Noise(threading.local):
    key: torch.Tensor | None = None  # this row's key (batched under vmap)
    draws: int = 0  # noise draws so far in this forward pass: where each layer's noise comes from


_NOISE = _Noise()


@contextmanager
def row_noise(key: torch.Tensor) -> Iterator[None]:
    """Within the block, per-row layers draw their noise from ``key`` (one row's, or [rows, 1, ...]
    for a stack computed outside vmap)."""
    saved = _NOISE.key, _NOISE.draws
    _NOISE.key, _NOISE.draws = key, 0
    try:
        yield
    finally:
        _NOISE.key, _NOISE.draws = saved


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """[rows] int64: each row's key at a step, from its seed and its step count."""
    return seeds.to(torch.int64) * (2**32) + steps.to(torch.int64)


def uniform(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Noise in [0, 1) of ``shape`` for the current row(s): a hash of the row's key, of the
    draw's place in the forward pass and of each element's index (splitmix64's finaliser).
    With a key per row outside vmap ([rows]), ``shape`` starts with the rows, and each row
    gets what its own key gives it under vmap."""
    key = _NOISE.key
    if key is None:
        raise RuntimeError("a per-row random layer ran outside a stacked step")
    _NOISE.draws += 1
    inner = shape[key.dim() :]
    count = 1
    for size in inner:
        count *= size
    key = key.to(device).reshape(*key.shape, *([1] * len(inner)))
    h = torch.arange(count, device=device, dtype=torch.int64).view(inner)
    h = h * _GOLDEN + (key * 4096 + _NOISE.draws) * _MIX2
    h = (h ^ ((h >> 30) & (2**34 - 1))) * _MIX1
    h = (h ^ ((h >> 27) & (2**37 - 1))) * _MIX2
    h = h ^ ((h >> 31) & (2**33 - 1))
    return ((h >> 40) & (2**24 - 1)).to(torch.float32) * 2.0**-24


def _dropout(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    p = float(self.p)  # type: ignore[arg-type]
    if not self.training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    shape = tuple(x.shape)
    if isinstance(self, _CHANNEL_DROPOUTS):  # whole channels: one draw per (example, channel)
        shape = shape[:2] + (1,) * (len(shape) - 2)
    keep = uniform(shape, x.device) >= p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


def _cumulative_norm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm with ``momentum=None`` (running statistics are the mean over every batch so
    far), as torch computes it, in tensor arithmetic that vmap can batch per row."""
    if not (self.training and self.track_running_stats):
        return nn.modules.batchnorm._BatchNorm.forward(self, x)
    assert self.num_batches_tracked is not None
    assert self.running_mean is not None and self.running_var is not None
    self.num_batches_tracked.add_(1)
    factor = 1.0 / self.num_batches_tracked.to(torch.float32)
    dims = [0, *range(2, x.dim())]
    with torch.no_grad():
        count = x.numel() // x.shape[1]
        mean = x.detach().float().mean(dims)
        var = x.detach().float().var(dims, correction=1 if count > 1 else 0)
        self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
        self.running_var.mul_(1 - factor).add_(factor * var.to(self.running_var.dtype))
    return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
