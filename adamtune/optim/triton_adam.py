"""The GPU kernel: one Triton launch updates every tensor of one dtype.

Tensors are reached through tables of raw addresses (cast to typed pointers inside the kernel),
and the work is cut into BLOCK-element blocks over all tensors, so a model with hundreds of
parameters costs one launch. The math is adam_cpu.c's, element for element. With
``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (that is how CI tests it).
"""

from __future__ import annotations

import functools
import os

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


@functools.lru_cache(maxsize=1)
def _kernel():  # built lazily: importing triton costs seconds and is never needed on CPU
    import triton
    import triton.language as tl

    @triton.jit
    def adam_kernel(p_tab, g_tab, m_tab, v_tab, vmax_tab, numel_tab, row_size_tab, coef_index_tab,
                    block_tensor, block_start, coef, AMSGRAD: tl.constexpr,
                    MAXIMIZE: tl.constexpr, PER_ROW: tl.constexpr, DTYPE: tl.constexpr,
                    COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
        b = tl.program_id(0)
        t = tl.load(block_tensor + b)
        offs = tl.load(block_start + b) + tl.arange(0, BLOCK)
        mask = offs < tl.load(numel_tab + t)
        row = offs * 0  # uniform mode: every lane reads the same (broadcast) coefficient row
        if PER_ROW:
            row = offs // tl.load(row_size_tab + t)
        k = coef + (tl.load(coef_index_tab + t) + row) * 7
        step_size = tl.load(k + 0, mask=mask, other=1.0).to(COMPUTE)
        bc2_sqrt = tl.load(k + 1, mask=mask, other=1.0).to(COMPUTE)
        beta1_64 = tl.load(k + 2, mask=mask, other=0.5)
        beta2_64 = tl.load(k + 3, mask=mask, other=0.5)
        eps = tl.load(k + 4, mask=mask, other=1.0).to(COMPUTE)
        l2 = tl.load(k + 5, mask=mask, other=0.0).to(COMPUTE)
        decay = tl.load(k + 6, mask=mask, other=1.0).to(COMPUTE)
        beta1, beta2 = beta1_64.to(COMPUTE), beta2_64.to(COMPUTE)
        w1, w2 = (1.0 - beta1_64).to(COMPUTE), (1.0 - beta2_64).to(COMPUTE)

        p_ptr = tl.load(p_tab + t).to(tl.pointer_type(DTYPE))
        g_ptr = tl.load(g_tab + t).to(tl.pointer_type(DTYPE))
        m_ptr = tl.load(m_tab + t).to(tl.pointer_type(DTYPE))
        v_ptr = tl.load(v_tab + t).to(tl.pointer_type(DTYPE))
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        if MAXIMIZE:
            g = -g
        g = g + l2 * p
        p = p * decay
        m = tl.where(beta1 > 0.5, m + w1 * (g - m), g - (g - m) * beta1)
        v = beta2 * v + w2 * (g * g)
        second = v
        if AMSGRAD:
            vmax_ptr = tl.load(vmax_tab + t).to(tl.pointer_type(DTYPE))
            second = tl.maximum(tl.load(vmax_ptr + offs, mask=mask, other=0.0).to(COMPUTE), v)
            tl.store(vmax_ptr + offs, second.to(DTYPE), mask=mask)
        denom = tl.sqrt(second) / bc2_sqrt + eps
        p = p - step_size * (m / denom)
        tl.store(p_ptr + offs, p.to(DTYPE), mask=mask)
        tl.store(m_ptr + offs, m.to(DTYPE), mask=mask)
        tl.store(v_ptr + offs, v.to(DTYPE), mask=mask)

    return adam_kernel


@functools.lru_cache(maxsize=4)
def _triton_dtypes():
    import triton.language as tl

    return {torch.float32: (tl.float32, tl.float32), torch.float64: (tl.float64, tl.float64),
            torch.bfloat16: (tl.bfloat16, tl.float32), torch.float16: (tl.float16, tl.float32)}


def _addresses(tensors: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    return torch.tensor([t.data_ptr() if t is not None else 0 for t in tensors],
                        dtype=torch.int64, device=device)


def step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
         exp_avg_sqs: list[torch.Tensor], max_exp_avg_sqs: list[torch.Tensor | None],
         row_sizes: list[int], coef_index: list[int], coef: torch.Tensor, *, amsgrad: bool,
         maximize: bool) -> None:
    """Update contiguous tensors of one dtype on one device in place, in one launch."""
    device = params[0].device
    numels = [p.numel() for p in params]
    block_tensor, block_start = [], []
    for i, n in enumerate(numels):
        starts = range(0, n, BLOCK)
        block_tensor += [i] * len(starts)
        block_start += starts
    if not block_tensor:
        return
    dtype, compute = _triton_dtypes()[params[0].dtype]
    per_row = any(r != n for r, n in zip(row_sizes, numels, strict=True))

    def table(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device)

    _kernel()[(len(block_tensor),)](
        _addresses(params, device), _addresses(grads, device), _addresses(exp_avgs, device),
        _addresses(exp_avg_sqs, device),
        _addresses(max_exp_avg_sqs if amsgrad else [None] * len(params), device),
        table(numels), table(row_sizes), table(coef_index), table(block_tensor),
        table(block_start), coef.to(device=device, dtype=torch.float64).contiguous(),
        AMSGRAD=amsgrad, MAXIMIZE=maximize, PER_ROW=per_row, DTYPE=dtype, COMPUTE=compute,
        BLOCK=BLOCK,
    )
