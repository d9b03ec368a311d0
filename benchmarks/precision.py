"""Mixed precision, side by side: every --precision on the largest built-in tasks (time per
step, peak memory, final metrics), and FusedAdam's step at scale with bf16 weights against the
fp32 baseline. Ratios are against fp32 measured in the same run.

    python benchmarks/precision.py [--tasks digits-mlp,mnist1d-cnn] [--repeats 2]
        [--params 4000000] [--device cpu] [--out FILE]

Each training run is its own process, so its peak resident memory (ru_maxrss, less the RSS
before training) is its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PRECISIONS = ("fp32", "bf16", "fp16", "bf16-pure")

CHILD = r"""
import json, resource, sys, time
import torch
from adamtune.config.adam import AdamConfig
from adamtune.tasks import resolve_task
from adamtune.training.single import train
task_name, precision, device = sys.argv[1:4]
task = resolve_task(task_name)
if task.threads is not None:
    torch.set_num_threads(task.threads)
config = AdamConfig(lr=3e-3, decoupled=True, weight_decay=0.01)
def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
before = rss_kib()
started = time.perf_counter()
result = train(task, config, seed=0, device=device, precision=precision)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "ms_per_step": 1000 * seconds / result.total_steps,
    "peak_mib": (peak - before) / 1024,
    "value": result.value,
    "metric": task.metric_name,
    "test": {k: v for k, v in result.metrics.items() if k.startswith("test_")},
}))
"""


def run_child(task: str, precision: str, device: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, task, precision, device],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def tasks_table(tasks: list[str], repeats: int, device: str) -> list[str]:
    rows = ["| task | precision | ms/step | vs fp32 | peak MiB over start | val metric | test |"]
    rows.append("|---|---|---|---|---|---|---|")
    for task in tasks:
        runs: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
        for _ in range(repeats):  # interleaved: drift on the machine hits every precision
            for precision in PRECISIONS:
                runs[precision].append(run_child(task, precision, device))
        base = statistics.median(r["ms_per_step"] for r in runs["fp32"])
        for precision in PRECISIONS:
            ms = statistics.median(r["ms_per_step"] for r in runs[precision])
            peak = max(r["peak_mib"] for r in runs[precision])
            last = runs[precision][-1]
            test = ", ".join(f"{k} {v:.4f}" for k, v in last["test"].items()) or "-"
            rows.append(
                f"| {task} | {precision} | {ms:.3f} | {ms / base:.2f}x | {peak:.1f} | "
                f"{last['metric']} {last['value']:.4f} | {test} |"
            )
    return rows


def optimizer_table(n: int, steps: int, device: str) -> list[str]:
    """FusedAdam on one n-parameter tensor: fp32, bf16 weights with bf16 state (torch's fused
    layout), bf16 weights with fp32 state, and the same with stochastic rounding."""
    import torch

    from adamtune.optim import FusedAdam

    layouts = {
        "fp32 weights, fp32 state": (torch.float32, {}),
        "bf16 weights, bf16 state": (torch.bfloat16, {}),
        "bf16 weights, fp32 state": (torch.bfloat16, {"state_dtype": torch.float32}),
        "bf16 weights, fp32 state, stochastic rounding": (
            torch.bfloat16,
            {"state_dtype": torch.float32, "stochastic_rounding": True},
        ),
    }
    made = {}
    for name, (dtype, options) in layouts.items():
        p = torch.randn(n, device=device).to(dtype)
        p.grad = torch.randn(n, device=device).to(dtype)
        optimizer = FusedAdam(
            [p], lr=1e-3, weight_decay=0.01, decoupled_weight_decay=True, **options
        )
        optimizer.step()  # state allocated, kernel built
        state = optimizer.state[p]
        size = p.element_size() * 2 + state["exp_avg"].element_size() * 2  # p, g, m, v
        made[name] = (p, optimizer, size)
    times: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(5):
        for name, (_, optimizer, _) in made.items():
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - started) / steps)
    base = statistics.median(times["fp32 weights, fp32 state"])
    rows = [
        f"| FusedAdam step, {n / 1e6:g}M parameters | ms | vs fp32 | bytes/param (p, g, m, v) |"
    ]
    rows.append("|---|---|---|---|")
    for name, (_, _, size) in made.items():
        ms = statistics.median(times[name])
        rows.append(f"| {name} | {1000 * ms:.3f} | {ms / base:.2f}x | {size} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits-mlp,mnist1d-cnn")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--params", type=int, default=4_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = tasks_table(args.tasks.split(","), args.repeats, args.device)
    lines += [""] + optimizer_table(args.params, args.steps, args.device)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
