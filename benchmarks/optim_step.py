"""Optimizer step speed: FusedAdam's backends against torch.optim.AdamW, side by side.

For each size (parameters) and layout (one tensor, or ~200 tensors), every implementation
updates the same memory: the same parameters and gradients and, after a warm-up step, the same
exp_avg/exp_avg_sq tensors (the state layouts are the same), so no implementation wins or loses
by where its allocations landed. Runs of --steps steps (after one untimed step) are timed in interleaved rounds so
machine noise hits all of them alike. Prints ms per step (median), effective GB/s at 28 bytes per
parameter (read p, g, m, v; write p, m, v) and the ratio to torch's fused=True (> 1: faster), as
a ratio of medians and as the median of per-round ratios (each round's time against torch
fused's in the same round, which cancels the VM's slow drifts).
Then per-row mode (N rows with different hyperparameters) against uniform mode.

    python benchmarks/optim_step.py                       # CPU, 1M/20M/100M
    python benchmarks/optim_step.py --device cuda         # adds the triton backend
    python benchmarks/optim_step.py --sizes 1e6 --rounds 3 --out benchmarks/results/x.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from adamtune.optim import FusedAdam

BYTES_PER_PARAM = 28


def make_params(n: int, tensors: int, device: str) -> list[torch.Tensor]:
    sizes = [n // tensors] * tensors
    sizes[-1] += n - sum(sizes)
    params = [torch.randn(s, device=device) for s in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def implementations(
    device: str,
) -> dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]]:
    kw = dict(lr=1e-3, weight_decay=0.01)
    impls: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
        "torch for-loop": lambda ps: torch.optim.AdamW(ps, foreach=False, **kw),
        "torch foreach": lambda ps: torch.optim.AdamW(ps, foreach=True, **kw),
        "torch fused": lambda ps: torch.optim.AdamW(ps, fused=True, **kw),
        "adamtune reference": lambda ps: FusedAdam(
            ps, decoupled_weight_decay=True, backend="reference", **kw
        ),
    }
    native = "triton" if device == "cuda" else "cpu"
    impls[f"adamtune {native}"] = lambda ps: FusedAdam(
        ps, decoupled_weight_decay=True, backend=native, **kw
    )
    return impls


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_step(optimizer: torch.optim.Optimizer, device: str, steps: int = 1) -> float:
    """Seconds per step, over ``steps`` consecutive steps after one untimed step, so that each
    implementation meets caches in its own steady state, not as the one before left them."""
    optimizer.step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def settle(optimizer: torch.optim.Optimizer, device: str, seconds: float) -> None:
    """Step for ``seconds`` before timing. On this VM, freshly allocated memory runs up to 1.5x
    slower for its first few dozen passes (the host maps it in as it goes: a 20M step takes
    ~15 ms, then ~10 ms once settled), so a layout timed at once would be timed in a drift that
    training, thousands of steps long, never sees. All implementations share the memory, so
    settling it with one settles it for all."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        optimizer.step()
    sync(device)


def share_state(optimizers: list[torch.optim.Optimizer], params: list[torch.Tensor]) -> None:
    """Point every optimizer's moment buffers at the first one's (step counters stay apart)."""
    first = optimizers[0]
    for opt in optimizers[1:]:
        for p in params:
            for key in ("exp_avg", "exp_avg_sq"):
                opt.state[p][key] = first.state[p][key]


def bench_layout(
    n: int, tensors: int, device: str, rounds: int, steps: int, skip_slow: bool, settle_s: float
) -> list[tuple]:
    params = make_params(n, tensors, device)
    impls = implementations(device)
    if skip_slow and n >= 50_000_000:
        impls.pop("adamtune reference")  # temporaries of ~5x the model; minutes at 100M
    optimizers = {name: make(params) for name, make in impls.items()}
    for opt in optimizers.values():  # state allocation and kernel build/compile out of timing
        opt.step()
    share_state(list(optimizers.values()), params)
    for opt in optimizers.values():
        opt.step()
    settle(optimizers["torch fused"], device, settle_s)
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            times[name].append(time_step(opt, device, steps))
    fused_times = times["torch fused"]
    fused = statistics.median(fused_times)
    rows = []
    for name, ts in times.items():
        t = statistics.median(ts)
        paired = statistics.median(f / x for f, x in zip(fused_times, ts, strict=True))
        rows.append((name, t * 1e3, BYTES_PER_PARAM * n / t / 1e9, fused / t, paired))
    del optimizers, params
    return rows


def bench_per_row(
    n: int, rows: int, device: str, rounds: int, steps: int, settle_s: float
) -> tuple[float, float, float]:
    backend = "triton" if device == "cuda" else "cpu"
    param = torch.randn(rows, n // rows, device=device)
    param.grad = torch.randn_like(param)
    uniform = FusedAdam([param], lr=1e-3, weight_decay=0.01, backend=backend)
    per_row = FusedAdam(
        [param],
        lr=torch.logspace(-4, -2, rows),
        betas=(torch.linspace(0.8, 0.95, rows), torch.linspace(0.99, 0.999, rows)),
        eps=torch.full((rows,), 1e-8),
        weight_decay=torch.linspace(0, 0.1, rows),
        backend=backend,
    )
    for opt in (uniform, per_row):
        opt.step()
    share_state([uniform, per_row], [param])
    settle(uniform, device, settle_s)
    t_u, t_r = [], []
    for _ in range(rounds):
        t_u.append(time_step(uniform, device, steps))
        t_r.append(time_step(per_row, device, steps))
    paired = statistics.median(r / u for u, r in zip(t_u, t_r, strict=True))
    return statistics.median(t_u) * 1e3, statistics.median(t_r) * 1e3, paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="1e6,2e7,1e8", help="comma-separated parameter counts")
    parser.add_argument("--tensors", type=int, default=200, help="tensors in the 'many' layout")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=5, help="consecutive steps timed per round")
    parser.add_argument("--rows", type=int, default=32, help="N for the per-row comparison")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds of steps before timing a layout"
    )
    parser.add_argument("--with-reference-at-100m", action="store_true")
    parser.add_argument("--out", help="also write the tables (markdown) to this file")
    args = parser.parse_args()

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    )
    lines = [
        f"# optim_step: {args.device} ({device_name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds "
        f"of {args.steps} steps, shared memory settled for {args.settle:g} s",
        "",
        "| params | layout | implementation | ms/step | GB/s | vs torch fused | paired |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for n in sizes:
        for tensors, layout in ((1, "1 tensor"), (args.tensors, f"{args.tensors} tensors")):
            for name, ms, gbs, ratio, paired in bench_layout(
                n,
                tensors,
                args.device,
                args.rounds,
                args.steps,
                not args.with_reference_at_100m,
                args.settle,
            ):
                line = (
                    f"| {n / 1e6:g}M | {layout} | {name} | {ms:.2f} | {gbs:.1f} "
                    f"| {ratio:.2f}x | {paired:.2f}x |"
                )
                lines.append(line)
                print(line, flush=True)
    per_row_lines = [
        "",
        f"| params | uniform ms | per-row (N={args.rows}) ms | per-row / uniform | paired |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(per_row_lines), flush=True)
    for n in sizes:
        u, r, paired = bench_per_row(
            n, args.rows, args.device, args.rounds, args.steps, args.settle
        )
        line = f"| {n / 1e6:g}M | {u:.2f} | {r:.2f} | {r / u:.3f} | {paired:.3f} |"
        per_row_lines.append(line)
        print(line, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines + per_row_lines) + "\n")


if __name__ == "__main__":
    main()
