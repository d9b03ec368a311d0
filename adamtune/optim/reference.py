"""The specification of one Adam/AdamW step, in plain torch ops, written for clarity.

Same signature as every kernel (see adamtune.optim.fused_adam for the coefficient table): each
tensor is viewed as ``[rows, row_size]`` and row ``r`` uses coefficient row
``coef_index[i] + r``, columns COLUMNS. Math runs in float32 (float64 for float64 tensors).
"""

from __future__ import annotations

import torch

COLUMNS = ("step_size", "bc2_sqrt", "beta1", "beta2", "eps", "l2", "decay")


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
        param.copy_(p.reshape(param.shape))
        exp_avgs[i].copy_(m.reshape(param.shape))
        exp_avg_sqs[i].copy_(v.reshape(param.shape))
