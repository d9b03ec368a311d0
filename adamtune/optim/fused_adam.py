"""FusedAdam: a drop-in torch.optim.Adam / AdamW backed by adamtune's own kernels.

Per step, a group's parameters are bucketed by (device, dtype) and each bucket is updated by one
kernel call. The kernels share one signature (see reference.step) and read their
hyperparameters from a coefficient table with one row per (distinct step count, hyperparameter
row), columns reference.COLUMNS. Per-row hyperparameters (a 1-D tensor of length N for lr,
betas, eps or weight_decay) give every row of every parameter of the group its own row of
coefficients: row n trains exactly as an independent optimizer with the n-th values would.

State uses torch's names and layout (step, exp_avg, exp_avg_sq, max_exp_avg_sq), so state
dicts move between FusedAdam and torch.optim.Adam/AdamW in both directions. One extension: with
per-row hyperparameters, ``state["step"]`` may be a 1-D float32 tensor of length N, one step
count per row, so rows that joined at different times (a stacked search refilling a slot) each
get their own bias correction, as an optimizer started with them would.

Mixed precision: ``state_dtype=torch.float32`` keeps the moments of bf16 and fp16 parameters in
float32 (float32 and float64 parameters keep their own dtype), and ``stochastic_rounding=True``
rounds each new bf16 parameter stochastically instead of to nearest, so updates smaller than
half a bf16 ulp still move the weights on average (seeded by ``rounding_seed``: the same seed
gives the same bits; see reference.round_stochastic).
"""

# Over 400 lines: the optimizer class with torch.optim's whole argument surface (per-row
# tensors, amsgrad, maximize, state dtypes, stochastic rounding) and its checks; the kernels
# live apart (cpu.py, triton_adam.py), and this package imports only torch.

from __future__ import annotations

import array
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch

from adamtune.optim import cpu, reference, triton_adam

# The kernels, by backend name; each module's ``step`` has reference.step's signature.
KERNELS = {"reference": reference, "cpu": cpu, "triton": triton_adam}

BACKENDS = ("auto", "reference", "cpu", "triton")
Hyper = float | torch.Tensor
Kernel = Callable[..., None]


def _check_range(name: str, value: Hyper, ok: Callable[[Any], bool]) -> None:
    values = value.detach().cpu().flatten().tolist() if isinstance(value, torch.Tensor) else [value]
    for v in values:
        if not ok(v):
            raise ValueError(f"Invalid {name}: {v}")


def _without_dynamo_import(name: str) -> Callable[..., Any]:
    """torch.optim.Optimizer's method ``name`` without its ``torch._disable_dynamo`` wrapper
    while torch._dynamo is not loaded. That wrapper imports torch._dynamo on its first call
    (more than a trial of the default study; figures in the README's optimizer section) only
    to tell the compiler to skip the method; when the compiler was never imported there is
    nothing to tell, so the plain method does the same. Once torch._dynamo is loaded (torch.compile in use) the wrapper runs as in
    torch."""
    wrapped = getattr(torch.optim.Optimizer, name)
    plain = getattr(wrapped, "__wrapped__", wrapped)

    def method(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        chosen = wrapped if "torch._dynamo" in sys.modules else plain
        return chosen(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = wrapped.__doc__
    return method


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
        state_dtype: torch.dtype | None = None,
        stochastic_rounding: bool = False,
        rounding_seed: int = 0,
    ) -> None:
        _check_range("learning rate", lr, lambda v: v >= 0.0)
        _check_range("epsilon value", eps, lambda v: v >= 0.0)
        _check_range("beta parameter at index 0", betas[0], lambda v: 0.0 <= v < 1.0)
        _check_range("beta parameter at index 1", betas[1], lambda v: 0.0 <= v < 1.0)
        _check_range("weight_decay value", weight_decay, lambda v: v >= 0.0)
        if backend not in BACKENDS:
            raise ValueError(f"Invalid backend: {backend!r} (expected one of {BACKENDS})")
        if state_dtype not in STATE_DTYPES:
            raise ValueError(
                f"Invalid state_dtype: {state_dtype} (expected None, the parameters' own "
                "dtype, or torch.float32)"
            )
        if isinstance(rounding_seed, bool) or not isinstance(rounding_seed, int):
            raise ValueError(f"Invalid rounding_seed: {rounding_seed!r} (expected an int)")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            backend=backend,
            state_dtype=state_dtype,
            stochastic_rounding=bool(stochastic_rounding),
            rounding_seed=rounding_seed,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            _rows(group)  # validates per-row shapes now, not at the first step
            for p in group["params"]:
                if torch.is_complex(p):
                    raise ValueError("FusedAdam does not support complex parameters")

    add_param_group = _without_dynamo_import("add_param_group")
    zero_grad = _without_dynamo_import("zero_grad")
    state_dict = _without_dynamo_import("state_dict")
    _load_state_dict = _without_dynamo_import("load_state_dict")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load, which casts every state tensor to its parameter's dtype, then float32
        moments of half-precision parameters put back uncast (rounding them to bf16 would lose
        what float32 state is for)."""
        self._load_state_dict(state_dict)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        ours = [p for group in self.param_groups for p in group["params"]]
        for param_id, p in zip(saved_ids, ours, strict=True):
            saved = state_dict["state"].get(param_id, {})
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                value = saved.get(key)
                if (
                    isinstance(value, torch.Tensor)
                    and value.dtype == torch.float32
                    and p.dtype in HALF_DTYPES
                ):
                    self.state[p][key] = value.to(device=p.device, copy=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # groups loaded from torch's Adam/AdamW lack these
            group.setdefault("backend", "auto")
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("state_dtype", None)
            group.setdefault("stochastic_rounding", False)
            group.setdefault("rounding_seed", 0)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            self._step_group(index, group)
        return loss

    def _step_group(self, group_index: int, group: dict[str, Any]) -> None:
        positions = [k for k, p in enumerate(group["params"]) if p.grad is not None]
        if not positions:
            return
        params = [group["params"][k] for k in positions]
        n_rows = _rows(group)
        amsgrad = group["amsgrad"]
        states = []
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("FusedAdam does not support sparse gradients")
            state = self.state[p]
            if not state or (amsgrad and "max_exp_avg_sq" not in state):
                self._init_state(p, amsgrad, group["state_dtype"])
            states.append(state)
        buckets: dict[tuple[torch.device, torch.dtype, torch.dtype], list[int]] = {}
        for i, (p, state) in enumerate(zip(params, states, strict=True)):
            buckets.setdefault((p.device, p.dtype, state["exp_avg"].dtype), []).append(i)
        kernels = [self._kernel(group["backend"], device) for device, _, _ in buckets]

        step_values = _advance_steps([state["step"] for state in states], n_rows)
        salts = None
        if group["stochastic_rounding"]:
            seed = group["rounding_seed"]
            salts = [
                reference.salt(seed, group_index, k, int(max(_as_tuple(t))))
                for k, t in zip(positions, step_values, strict=True)
            ]
        distinct = list(dict.fromkeys(step_values))
        coef = _coefficients(group, distinct, n_rows)
        block_of = {s: k * n_rows for k, s in enumerate(distinct)}
        coef_index = [block_of[s] for s in step_values]

        for kernel, members in zip(kernels, buckets.values(), strict=True):
            if len(buckets) > 1:
                picked = [params[i] for i in members], [states[i] for i in members]
                index = [coef_index[i] for i in members]
                picked_salts = [salts[i] for i in members] if salts is not None else None
            else:
                picked, index, picked_salts = (params, states), coef_index, salts
            _run(
                kernel,
                *picked,
                index,
                coef,
                n_rows,
                amsgrad=amsgrad,
                maximize=group["maximize"],
                salts=picked_salts if picked[0][0].dtype == torch.bfloat16 else None,
            )

    def _kernel(self, backend: str, device: torch.device) -> Kernel:
        """The kernel for ``backend`` on ``device``, resolved once per optimizer (a step must not
        pay for the availability checks), looked up by name so that it can be patched."""
        resolved = self.__dict__.setdefault("_resolved_backends", {})
        name = resolved.get((backend, device))
        if name is None:
            name = resolved[backend, device] = resolve_backend(backend, device)
        return KERNELS[name].step

    def _init_state(self, p: torch.Tensor, amsgrad: bool, state_dtype: torch.dtype | None) -> None:
        state = self.state[p]
        dtype = state_dtype if state_dtype is not None and p.dtype in HALF_DTYPES else p.dtype
        if state:
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(state["exp_avg_sq"])
            return
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        for key in (
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")
        ):
            state[key] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)


HYPER_NAMES = ("lr", "betas[0]", "betas[1]", "eps", "weight_decay")
HALF_DTYPES = (torch.bfloat16, torch.float16)
STATE_DTYPES = (None, torch.float32)  # None: the parameter's dtype


def _as_tuple(steps: Steps) -> tuple[float, ...]:
    return steps if isinstance(steps, tuple) else (steps,)


def _hypers(group: dict[str, Any]) -> list[Hyper]:
    """The group's hyperparameters in HYPER_NAMES order (the coefficient table's inputs)."""
    return [group["lr"], *group["betas"], group["eps"], group["weight_decay"]]


def _rows(group: dict[str, Any]) -> int:
    """N when any hyperparameter is a 1-D tensor of length N (checked against params), else 1."""
    hypers = _hypers(group)
    rows = [v for v in hypers if isinstance(v, torch.Tensor) and v.dim() == 1]
    lengths = {v.shape[0] for v in rows}
    if not lengths:
        return 1
    if len(lengths) > 1:
        named = {
            name: v.shape[0]
            for name, v in zip(HYPER_NAMES, hypers, strict=True)
            if isinstance(v, torch.Tensor) and v.dim() == 1
        }
        raise ValueError(f"per-row hyperparameters must all have the same length, got {named}")
    n = lengths.pop()
    for p in group["params"]:
        if p.dim() == 0 or p.shape[0] != n:
            raise ValueError(
                f"per-row hyperparameters of length {n} need every parameter of "
                f"the group to have leading dimension {n}, got shape "
                f"{tuple(p.shape)}"
            )
    return n


Steps = float | tuple[float, ...]  # one count for every row, or one count per row


def _advance_steps(steps: list[torch.Tensor], n_rows: int) -> list[Steps]:
    """Add 1 to every ``state["step"]`` and return the new counts: in one native call when the
    CPU kernel is loaded and every counter is a float32 CPU scalar (as FusedAdam and torch make
    them), else with torch ops (a foreach add costs microseconds per parameter). A per-row
    counter (1-D, length N) comes back as a tuple of N counts."""
    f32 = torch.float32
    if cpu.loaded() and all(s.is_cpu and s.dtype is f32 and s.dim() == 0 for s in steps):
        return list(cpu.advance_steps(steps))
    for s in steps:
        if s.dim() == 1 and s.shape[0] != n_rows:
            raise ValueError(f"a per-row step count needs {n_rows} rows, got {s.shape[0]}")
    torch._foreach_add_(steps, 1)
    if all(s.dim() == 0 for s in steps):
        return torch.stack(steps).tolist()  # float32 holds integer steps exactly to 2**24
    return [tuple(s.tolist()) if s.dim() == 1 else float(s) for s in steps]


def _coefficients(group: dict[str, Any], steps: list[Steps], n_rows: int) -> torch.Tensor:
    """The [len(steps) * n_rows, 7] coefficient table (reference.COLUMNS) in float64: for each
    step count, one row per hyperparameter row. Built natively when the CPU kernel is loaded and
    can read the hyperparameters where they lie, else in Python floats (IEEE doubles: the same
    numbers; for the tens of rows a group has they cost a fraction of what torch ops would)."""
    hypers = _hypers(group)
    decoupled = group["decoupled_weight_decay"]
    shared = [step for step in steps if not isinstance(step, tuple)]  # not per-row counts
    if len(shared) == len(steps) and cpu.loaded() and all(map(cpu.reads_hyperparameter, hypers)):
        return cpu.coefficients(shared, hypers, n_rows, decoupled)
    return _python_coefficients(hypers, steps, n_rows, decoupled)


def _python_coefficients(
    hypers: list[Hyper], steps: list[Steps], n_rows: int, decoupled: bool
) -> torch.Tensor:
    lr, beta1, beta2, eps, wd = (_per_row(value, n_rows) for value in hypers)
    if decoupled:
        l2, decay = [0.0] * n_rows, [1 - lr_r * wd_r for lr_r, wd_r in zip(lr, wd, strict=True)]
    else:
        l2, decay = wd, [1.0] * n_rows
    blocks = []
    for step in steps:  # column-major: list concatenation runs in C, one transpose fixes it
        counts = step if isinstance(step, tuple) else (step,) * n_rows
        step_size = [
            lr_r / (1 - beta1_r**t) for lr_r, beta1_r, t in zip(lr, beta1, counts, strict=True)
        ]
        bc2_sqrt = [math.sqrt(1 - beta2_r**t) for beta2_r, t in zip(beta2, counts, strict=True)]
        columns = array.array("d", step_size + bc2_sqrt + beta1 + beta2 + eps + l2 + decay)
        blocks.append(torch.frombuffer(columns, dtype=torch.float64).view(-1, n_rows).T)
    return torch.cat(blocks) if len(blocks) > 1 else blocks[0].contiguous()


def _per_row(value: Hyper, n_rows: int) -> list[float]:
    """A hyperparameter as one float per row."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return [float(v) for v in value.tolist()]
    return [float(value)] * n_rows


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The one place that picks the backend that updates tensors on ``device`` ("auto" resolved
    to "cpu", "triton" or "reference"), and explains why a forced one cannot run."""
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
    salts: list[int] | None,
) -> None:
    """Call ``kernel`` on contiguous buffers; non-contiguous tensors go through copies."""
    columns: list[list[Any]] = [
        params,
        [p.grad for p in params],
        [state["exp_avg"] for state in states],
        [state["exp_avg_sq"] for state in states],
        [state["max_exp_avg_sq"] for state in states] if amsgrad else [None] * len(params),
    ]
    write_back: list[tuple[torch.Tensor, torch.Tensor]] = []
    checked = columns[0] + columns[1] + columns[2] + columns[3] + (columns[4] if amsgrad else [])
    if not all(map(torch.Tensor.is_contiguous, checked)):
        columns, write_back = _contiguous(columns)
    row_sizes = [max(1, p.numel() // n_rows) for p in params]
    if salts is None:  # kernels written to the plain signature (tests patch some) still fit
        kernel(*columns, row_sizes, coef_index, coef, amsgrad=amsgrad, maximize=maximize)
    else:
        kernel(
            *columns, row_sizes, coef_index, coef, amsgrad=amsgrad, maximize=maximize, salts=salts
        )
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
