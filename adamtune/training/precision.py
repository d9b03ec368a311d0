"""Training precision: what ``--precision`` changes in a training step, in one place.

- ``fp32``: everything in float32.
- ``bf16``: the forward pass and the loss under ``torch.autocast`` in bfloat16; weights,
  gradients and Adam's state stay float32.
- ``fp16``: autocast in float16 with a gradient scaler (torch.amp.GradScaler: the loss is
  scaled before backward, gradients are unscaled before clipping, and a step whose gradients
  overflowed is skipped, FusedAdam left untouched).
- ``bf16-pure``: the weights themselves in bfloat16 (half the memory of weights and
  gradients), Adam's moments in float32, and each weight update rounded stochastically
  (FusedAdam's ``stochastic_rounding``, seeded with the trial's seed), so updates smaller than
  bf16 can hold still move the weights on average. Needs ``--optimizer fused``.

Losses and metrics are computed on float32 outputs in every mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from adamtune.config.settings import PRECISIONS

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionUnavailable(ValueError):
    """The device cannot train in the precision asked for; the message says why."""


def check_device_supports(precision: str, device: torch.device) -> None:
    """Raise PrecisionUnavailable when ``device`` cannot run ``precision``'s dtype natively."""
    bf16 = precision in ("bf16", "bf16-pure")
    if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported(False):
        name = torch.cuda.get_device_name(device)
        raise PrecisionUnavailable(
            f"--precision: {precision!r} needs bfloat16 support, and {device} ({name}) has "
            "none; use fp16 or fp32"
        )


@dataclass
class Precision:
    """One run's precision: how its weights are stored, its forward pass cast, its backward
    scaled and its optimizer set up. Make one per run (the fp16 scaler keeps state)."""

    name: str = "fp32"
    device: torch.device = torch.device("cpu")
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def for_run(cls, name: str, device: torch.device) -> Precision:
        if name not in PRECISIONS:
            raise PrecisionUnavailable(
                f"--precision: must be one of {', '.join(PRECISIONS)}, got {name!r}"
            )
        check_device_supports(name, device)
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        return cls(name, device, scaler)

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on its device, its weights in this precision's dtype."""
        if self.name == "bf16-pure":
            return model.to(device=self.device, dtype=torch.bfloat16)
        return model.to(self.device)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Floating inputs in the weights' dtype (bf16-pure); anything else as it is."""
        if self.name == "bf16-pure" and x.is_floating_point():
            return x.to(torch.bfloat16)
        return x

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """The context of a forward pass and its loss."""
        dtype = AUTOCAST.get(self.name)
        if dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients back to their true scale (before clipping or measuring them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def optimizer(self, optimizer: torch.optim.Optimizer, seed: int) -> torch.optim.Optimizer:
        """bf16-pure: float32 moments and seeded stochastic rounding on every group (FusedAdam
        reads them at its first step); other precisions leave the optimizer as it is."""
        if self.name != "bf16-pure":
            return optimizer
        for group in optimizer.param_groups:
            if "stochastic_rounding" not in group:
                raise PrecisionUnavailable(
                    "--precision: 'bf16-pure' needs --optimizer fused (FusedAdam's float32 "
                    f"state and stochastic rounding), got {type(optimizer).__name__}"
                )
            group.update(state_dtype=torch.float32, stochastic_rounding=True, rounding_seed=seed)
        return optimizer


def as_float(outputs: Any) -> Any:
    """Floating outputs as float32, so every precision's loss and metric are float32 math."""
    if isinstance(outputs, torch.Tensor) and outputs.is_floating_point():
        return outputs.float()
    return outputs
