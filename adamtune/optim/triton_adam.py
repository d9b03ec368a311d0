"""The GPU kernel: one Triton launch updates every tensor of one dtype.

Tensors are reached through tables of raw addresses (cast to typed pointers inside the kernel),
and the work is cut into BLOCK-element blocks over all tensors, so a model with hundreds of
parameters costs one launch. The math is adam_cpu.c's, element for element. With
``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (that is how CI tests it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch

BLOCK = 1024


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Triton importable, and the tensors are CUDA (or the interpreter is on)."""
    if device.type != "cuda" and not interpreting():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel():  # imported lazily: importing triton costs seconds and is never needed on CPU
    from adamtune.optim._triton_kernels import adam_kernel

    return adam_kernel


@functools.lru_cache(maxsize=4)
def _triton_dtypes():
    import triton.language as tl

    return {
        torch.float32: (tl.float32, tl.float32),
        torch.float64: (tl.float64, tl.float64),
        torch.bfloat16: (tl.bfloat16, tl.float32),
        torch.float16: (tl.float16, tl.float32),
    }


def _addresses(tensors: Sequence[torch.Tensor | None]) -> list[int]:
    return [t.data_ptr() if t is not None else 0 for t in tensors]


def _to_device(
    tables: list[list[int]], coef: torch.Tensor, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every int64 table and the float64 coefficients in one host buffer, moved in one
    transfer. On CUDA the buffer is pinned and the copy non-blocking: a copy from pageable
    memory would make the host wait for the stream, once per table, at every step."""
    coef = coef.to(dtype=torch.float64).contiguous()
    # (coefficients already on the device go on their own)
    coef_bits = None if coef.device.type != "cpu" else coef.reshape(-1).view(torch.int64)
    sizes = [len(t) for t in tables]
    flat = torch.tensor([v for t in tables for v in t], dtype=torch.int64)
    host = torch.cat([flat, coef_bits]) if coef_bits is not None else flat
    if device.type == "cuda":
        moved = host.pin_memory().to(device, non_blocking=True)
    else:
        moved = host.to(device)
    parts = list(moved.split([*sizes, host.numel() - sum(sizes)]))
    on_device = coef.to(device) if coef_bits is None else parts[-1].view(torch.float64)
    return parts[:-1], on_device.view(coef.shape)


def step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor | None],
    row_sizes: list[int],
    coef_index: list[int],
    coef: torch.Tensor,
    *,
    amsgrad: bool,
    maximize: bool,
    salts: list[int] | None = None,
) -> None:
    """Update contiguous tensors of one dtype (state of one dtype) on one device in place, in
    one launch; ``salts`` (one per tensor) rounds bf16 parameters stochastically."""
    device = params[0].device
    numels = [p.numel() for p in params]
    block_tensor: list[int] = []
    block_start: list[int] = []
    for i, n in enumerate(numels):
        starts = range(0, n, BLOCK)
        block_tensor += [i] * len(starts)
        block_start += starts
    if not block_tensor:
        return
    dtype, compute = _triton_dtypes()[params[0].dtype]
    state_dtype = _triton_dtypes()[exp_avgs[0].dtype][0]
    stochastic = salts is not None
    if stochastic and params[0].dtype != torch.bfloat16:
        raise RuntimeError(f"stochastic rounding needs bfloat16 parameters, got {params[0].dtype}")
    per_row = any(r != n for r, n in zip(row_sizes, numels, strict=True))

    tables, coefficients = _to_device(
        [
            _addresses(params),
            _addresses(grads),
            _addresses(exp_avgs),
            _addresses(exp_avg_sqs),
            _addresses(max_exp_avg_sqs if amsgrad else [None] * len(params)),
            numels,
            list(row_sizes),
            list(coef_index),
            list(salts) if salts is not None else [0],
            block_tensor,
            block_start,
        ],
        coef,
        device,
    )
    _kernel()[(len(block_tensor),)](
        *tables,
        coefficients,
        AMSGRAD=amsgrad,
        MAXIMIZE=maximize,
        PER_ROW=per_row,
        DTYPE=dtype,
        STATE_DTYPE=state_dtype,
        STOCHASTIC=stochastic,
        COMPUTE=compute,
        BLOCK=BLOCK,
    )
