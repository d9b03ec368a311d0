"""FusedAdam: a drop-in torch.optim.Adam / AdamW backed by adamtune's own kernels.

Per step, a group's parameters are bucketed by (device, dtype) and each bucket is updated by one
kernel call. The kernels share one signature (see reference.step) and read their
hyperparameters from a coefficient table with one row per (distinct step count, hyperparameter
row), columns reference.COLUMNS. Per-row hyperparameters (a 1-D tensor of length N for lr,
betas, eps or weight_decay) give every row of every parameter of the group its own row of
coefficients: row n trains exactly as an independent optimizer with the n-th values would.

State uses torch's names and layout (step, exp_avg, exp_avg_sq, max_exp_avg_sq), so state
dicts move between FusedAdam and torch.optim.Adam/AdamW in both directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from adamtune.optim import reference

BACKENDS = ("auto", "reference", "cpu", "triton")
Hyper = float | torch.Tensor
Kernel = Callable[..., None]


def _is_rows(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 1


def _check_range(name: str, value: Hyper, ok: Callable[[Any], bool]) -> None:
    values = value.detach().cpu().flatten().tolist() if isinstance(value, torch.Tensor) else [value]
    for v in values:
        if not ok(v):
            raise ValueError(f"Invalid {name}: {v}")


class FusedAdam(torch.optim.Optimizer):
    """Adam (``decoupled_weight_decay=False``, L2 penalty) or AdamW (``True``) in one pass.

    ``backend``: "auto" (cpu kernel for CPU tensors, triton for CUDA tensors, reference where
    neither can run), or force "reference", "cpu" or "triton".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: Hyper = 1e-3,
        betas: tuple[Hyper, Hyper] = (0.9, 0.999),
        eps: Hyper = 1e-8,
        weight_decay: Hyper = 0.0,
        decoupled_weight_decay: bool = False,
        amsgrad: bool = False,
        maximize: bool = False,
        backend: str = "auto",
    ) -> None:
        _check_range("learning rate", lr, lambda v: v >= 0.0)
        _check_range("epsilon value", eps, lambda v: v >= 0.0)
        _check_range("beta parameter at index 0", betas[0], lambda v: 0.0 <= v < 1.0)
        _check_range("beta parameter at index 1", betas[1], lambda v: 0.0 <= v < 1.0)
        _check_range("weight_decay value", weight_decay, lambda v: v >= 0.0)
        if backend not in BACKENDS:
            raise ValueError(f"Invalid backend: {backend!r} (expected one of {BACKENDS})")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            backend=backend,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            _rows(group)  # validates per-row shapes now, not at the first step
            for p in group["params"]:
                if torch.is_complex(p):
                    raise ValueError("FusedAdam does not support complex parameters")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # groups loaded from torch's Adam/AdamW lack these
            group.setdefault("backend", "auto")
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        n_rows = _rows(group)
        amsgrad = group["amsgrad"]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("FusedAdam does not support sparse gradients")
            state = self.state[p]
            if not state or (amsgrad and "max_exp_avg_sq" not in state):
                self._init_state(p, amsgrad)
        states = [self.state[p] for p in params]
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        step_values = torch.stack(steps).tolist()  # float32 holds integer steps exactly to 2**24
        distinct = sorted(set(step_values))
        coef = torch.cat([_coefficients(group, s, n_rows) for s in distinct])
        block_of = {s: k * n_rows for k, s in enumerate(distinct)}
        coef_index = [block_of[s] for s in step_values]

        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            buckets.setdefault((p.device, p.dtype), []).append(i)
        for (device, _), members in buckets.items():
            if len(buckets) > 1:
                picked = [params[i] for i in members], [states[i] for i in members]
                index = [coef_index[i] for i in members]
            else:
                picked, index = (params, states), coef_index
            _run(
                _kernel(group["backend"], device),
                *picked,
                index,
                coef,
                n_rows,
                amsgrad=amsgrad,
                maximize=group["maximize"],
            )

    def _init_state(self, p: torch.Tensor, amsgrad: bool) -> None:
        state = self.state[p]
        if state:
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            return
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _rows(group: dict[str, Any]) -> int:
    """N when any hyperparameter is a 1-D tensor of length N (checked against params), else 1."""
    named = {
        "lr": group["lr"],
        "betas[0]": group["betas"][0],
        "betas[1]": group["betas"][1],
        "eps": group["eps"],
        "weight_decay": group["weight_decay"],
    }
    lengths = {name: len(v) for name, v in named.items() if _is_rows(v)}
    if not lengths:
        return 1
    n = next(iter(lengths.values()))
    if any(length != n for length in lengths.values()):
        raise ValueError(f"per-row hyperparameters must all have the same length, got {lengths}")
    for p in group["params"]:
        if p.dim() == 0 or p.shape[0] != n:
            raise ValueError(
                f"per-row hyperparameters of length {n} need every parameter of "
                f"the group to have leading dimension {n}, got shape "
                f"{tuple(p.shape)}"
            )
    return n


def _coefficients(group: dict[str, Any], step: float, n_rows: int) -> torch.Tensor:
    """The [n_rows, 7] coefficient rows (reference.COLUMNS) for one step count, in float64."""
    lr, (beta1, beta2), eps, wd = (group["lr"], group["betas"], group["eps"], group["weight_decay"])
    values = [lr, beta1, beta2, eps, wd]
    if not any(_is_rows(v) for v in values):  # plain floats (or 0-dim tensors): no torch ops
        lr, beta1, beta2, eps, wd = (float(v) for v in values)
        step_size = lr / (1 - beta1**step)
        bc2_sqrt = math.sqrt(1 - beta2**step)
        l2, decay = (0.0, 1 - lr * wd) if group["decoupled_weight_decay"] else (wd, 1.0)
        return torch.tensor(
            [[step_size, bc2_sqrt, beta1, beta2, eps, l2, decay]], dtype=torch.float64
        )
    lr, beta1, beta2, eps, wd = (
        torch.as_tensor(v, dtype=torch.float64).detach().cpu().expand(n_rows) for v in values
    )
    step_size = lr / (1 - beta1**step)
    bc2_sqrt = (1 - beta2**step).sqrt()
    zeros, ones = torch.zeros_like(lr), torch.ones_like(lr)
    l2, decay = (zeros, 1 - lr * wd) if group["decoupled_weight_decay"] else (wd, ones)
    return torch.stack([step_size, bc2_sqrt, beta1, beta2, eps, l2, decay], dim=1)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The one place that picks the backend that updates tensors on ``device`` ("auto" resolved
    to "cpu", "triton" or "reference"), and explains why a forced one cannot run."""
    from adamtune.optim import cpu, triton_adam

    device = torch.device(device)
    if backend == "reference":
        return backend
    if backend == "cpu":
        if device.type != "cpu":
            raise RuntimeError(f"FusedAdam backend 'cpu' cannot update {device.type} tensors")
        try:
            cpu.library()
        except cpu.NativeUnavailable as exc:
            raise RuntimeError(f"FusedAdam backend 'cpu' is unavailable: {exc}") from None
        return backend
    if backend == "triton":
        if not triton_adam.available(device):
            raise RuntimeError(
                "FusedAdam backend 'triton' needs triton and CUDA tensors "
                "(or TRITON_INTERPRET=1 to interpret on CPU); "
                f"got {device.type} tensors"
            )
        return backend
    if device.type == "cpu":
        return "cpu" if cpu.available() else "reference"
    return "triton" if triton_adam.available(device) else "reference"


def _kernel(backend: str, device: torch.device) -> Kernel:
    from adamtune.optim import cpu, triton_adam

    kernels = {"reference": reference.step, "cpu": cpu.step, "triton": triton_adam.step}
    return kernels[resolve_backend(backend, device)]


def _run(
    kernel: Kernel,
    params: list[torch.Tensor],
    states: list[dict[str, Any]],
    coef_index: list[int],
    coef: torch.Tensor,
    n_rows: int,
    *,
    amsgrad: bool,
    maximize: bool,
) -> None:
    """Call ``kernel`` on contiguous buffers; non-contiguous tensors go through copies."""
    columns = [
        params,
        [p.grad for p in params],
        [state["exp_avg"] for state in states],
        [state["exp_avg_sq"] for state in states],
        [state["max_exp_avg_sq"] for state in states] if amsgrad else [None] * len(params),
    ]
    write_back: list[tuple[torch.Tensor, torch.Tensor]] = []
    if not all(t.is_contiguous() for column in columns[: 5 if amsgrad else 4] for t in column):
        columns, write_back = _contiguous(columns)
    row_sizes = [max(1, p.numel() // n_rows) for p in params]
    kernel(*columns, row_sizes, coef_index, coef, amsgrad=amsgrad, maximize=maximize)
    for original, copy in write_back:
        original.copy_(copy)


def _contiguous(columns: list[list[Any]]) -> tuple[list[list[Any]], list[tuple[Any, Any]]]:
    """Contiguous copies of non-contiguous tensors, and the (original, copy) pairs to write back
    after the kernel (all but the gradients, column 1, which are only read)."""
    out: list[list[Any]] = []
    write_back = []
    for k, column in enumerate(columns):
        fixed = []
        for t in column:
            if t is not None and not t.is_contiguous():
                copy = t.contiguous()
                if k != 1:
                    write_back.append((t, copy))
                t = copy
            fixed.append(t)
        out.append(fixed)
    return out, write_back
