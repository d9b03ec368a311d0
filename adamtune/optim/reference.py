"""The specification of one Adam/AdamW step, in plain torch ops, written for clarity.

Same signature as every kernel (see adamtune.optim.fused_adam for the coefficient table): each
tensor is viewed as ``[rows, row_size]`` and row ``r`` uses coefficient row
``coef_index[i] + r``, columns COLUMNS. Math runs in float32 (float64 for float64 tensors).
The state may have another dtype than the parameters (float32 moments under bf16 weights).

Stochastic rounding (``salts``, one 32-bit salt per tensor; bf16 parameters only): the new
parameter, an fp32 value, gets random bits ``hash32(element index + salt) & 0xFFFF`` added
below the bf16 mantissa and is then truncated, so it rounds up with probability equal to its
distance from the bf16 value below it: unbiased, and seeded by the salt.
"""

from __future__ import annotations

import torch

COLUMNS = ("step_size", "bc2_sqrt", "beta1", "beta2", "eps", "l2", "decay")
MASK32 = 0xFFFFFFFF


def hash32(x: int) -> int:
    """ "lowbias32" (Chris Wellons' integer hash search) on a Python int; hash32_tensor's twin."""
    x &= MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def hash32_tensor(x: torch.Tensor) -> torch.Tensor:
    """hash32 elementwise on an int64 tensor of values below 2**32 (products wrap in int64;
    the low 32 bits, all that is kept, are exact)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def salt(seed: int, group: int, param: int, step: int) -> int:
    """The stochastic-rounding salt of one parameter tensor at one step: every (seed, group,
    parameter, step) draws its own bits."""
    return hash32(hash32(hash32(hash32(seed) ^ group) ^ param) ^ step)


def round_stochastic(value: torch.Tensor, salt: int) -> torch.Tensor:
    """float32 ``value`` to bfloat16, rounded stochastically with the bits of ``salt``."""
    flat = value.reshape(-1)
    index = torch.arange(flat.numel(), dtype=torch.int64, device=flat.device)
    random = hash32_tensor((index + salt) & MASK32) & 0xFFFF
    bits = (flat.view(torch.int32).to(torch.int64) & MASK32) + random
    rounded = ((bits & 0xFFFF0000) - ((bits & 0x80000000) << 1)).to(torch.int32)
    out = rounded.view(torch.float32).to(torch.bfloat16)  # exact: the low bits are zero
    out = torch.where(flat.isnan(), flat.to(torch.bfloat16), out)
    return out.reshape(value.shape)


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
    for i, param in enumerate(params):
        if param.numel() == 0:
            continue
        compute = torch.float64 if param.dtype == torch.float64 else torch.float32
        rows = param.numel() // row_sizes[i]
        table = coef[coef_index[i] : coef_index[i] + rows].to(param.device)
        k = table.to(compute)
        step_size, bc2_sqrt, beta1, beta2, eps, l2, decay = (k[:, j : j + 1] for j in range(7))
        # 1 - beta from the float64 table: in float32, 1 - 0.9999 keeps only ~3 digits, and
        # exp_avg_sq drifts from torch's (which takes 1 - beta in Python doubles) by ~1e-3.
        one_minus_beta1, one_minus_beta2 = ((1 - table[:, j : j + 1]).to(compute) for j in (2, 3))

        shape = (rows, row_sizes[i])
        p, m, v, g = (
            t.reshape(shape).to(compute) for t in (param, exp_avgs[i], exp_avg_sqs[i], grads[i])
        )
        if maximize:
            g = -g
        g = g + l2 * p  # Adam's L2 penalty (l2 = 0 for AdamW)
        p = p * decay  # AdamW's decoupled decay (decay = 1 for Adam)
        m = torch.lerp(m, g, one_minus_beta1)
        v = beta2 * v + one_minus_beta2 * (g * g)
        second = v
        kept = max_exp_avg_sqs[i]
        if amsgrad and kept is not None:
            second = torch.maximum(kept.reshape(shape).to(compute), v)
            kept.copy_(second.reshape(param.shape))
        denom = second.sqrt() / bc2_sqrt + eps
        p = p - step_size * (m / denom)
        if salts is not None and param.dtype == torch.bfloat16:
            p = round_stochastic(p, salts[i])
        param.copy_(p.reshape(param.shape))
        exp_avgs[i].copy_(m.reshape(param.shape))
        exp_avg_sqs[i].copy_(v.reshape(param.shape))
