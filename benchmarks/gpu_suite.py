"""Everything a lent GPU should prove, in one run: kernel parity, step speed, stacked search,
a transformer in bf16, the default command, and host syncs of the stacked loop.

    python benchmarks/gpu_suite.py               # on a CUDA machine: under 8 minutes on an H200
    python benchmarks/gpu_suite.py --dry-run     # the same script on CPU, tiny sizes, < 60 s

Sections (each one's failure is reported and the rest still run):
1. parity: FusedAdam's Triton kernel against the plain reference, for every kernel variant
   (fp32, bf16 and fp16 weights with fp32 state, stochastic rounding, AMSGrad, per-row
   hyperparameters), every state entry, fresh random inputs; a NaN never passes.
2. step time: FusedAdam against torch.optim.AdamW(fused=True) at 1M, 16M and 128M parameters,
   in 1 tensor and in 200: ms a step, GB/s at 28 bytes a parameter (read p, g, m, v; write p,
   m, v), and the share of the copy bandwidth measured in the same run.
3. stacked search: 64 trials of mnist1d-mlp with --stack 1 and --stack auto (no tracking, no
   baseline, no confirmation): the trial-phase ratio and trials per minute.
4. one charlm-transformer trial in bf16.
5. the default `adamtune search` end to end, its wall time.
6. host syncs of the stacked step loop, counted with torch.cuda.set_sync_debug_mode, per epoch.

It prints a table last and writes benchmarks/results/gpu_<device>.md (--dry-run: a temporary
file, unless --out says where).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Suite:
    """What every section needs: the device, the sizes, and the lines it reports."""

    def __init__(self, dry_run: bool) -> None:
        import torch

        self.torch = torch
        self.dry = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.lines: list[tuple[str, str, str]] = []  # (section, what, result)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def say(self, section: str, what: str, result: str) -> None:
        self.lines.append((section, what, result))
        print(f"  {what}: {result}", flush=True)


# --- 1. parity -------------------------------------------------------------------------------


def variants(torch: Any) -> dict[str, dict[str, Any]]:
    return {
        "fp32": dict(dtype=torch.float32),
        "fp32 amsgrad": dict(dtype=torch.float32, amsgrad=True),
        "bf16 weights, fp32 state": dict(dtype=torch.bfloat16, state_dtype=torch.float32),
        "fp16 weights, fp32 state": dict(dtype=torch.float16, state_dtype=torch.float32),
        "bf16 stochastic rounding": dict(
            dtype=torch.bfloat16, state_dtype=torch.float32, stochastic_rounding=True
        ),
        "per-row hyperparameters": dict(dtype=torch.float32, rows=True),
    }


def parity(suite: Suite) -> None:
    from adamtune.optim import FusedAdam

    torch = suite.torch
    tolerance = {
        torch.float32: dict(rtol=1e-5, atol=1e-6),
        torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
        torch.float16: dict(rtol=1e-3, atol=1e-3),
    }
    n_rows, steps = 6, 5
    for name, spec in variants(torch).items():
        spec = dict(spec)
        dtype, per_row = spec.pop("dtype"), spec.pop("rows", False)
        g = torch.Generator(device=suite.device).manual_seed(len(name))
        shapes = [(n_rows, 33, 7), (n_rows, 1000)] if per_row else [(257, 3), (4099,)]
        start = [torch.randn(s, generator=g, device=suite.device).to(dtype) for s in shapes]
        hyper: dict[str, Any] = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
        if per_row:
            hyper = dict(
                lr=torch.logspace(-4, -1, n_rows, device=suite.device),
                betas=(
                    torch.linspace(0.5, 0.95, n_rows, device=suite.device),
                    torch.linspace(0.9, 0.999, n_rows, device=suite.device),
                ),
                eps=torch.logspace(-10, -6, n_rows, device=suite.device),
                weight_decay=torch.linspace(0.0, 0.2, n_rows, device=suite.device),
            )
        pairs = {}
        for backend in ("triton", "reference"):
            params = [p.clone() for p in start]
            optimizer = FusedAdam(
                params, **hyper, decoupled_weight_decay=True, backend=backend, **spec
            )
            pairs[backend] = (params, optimizer)
        for _ in range(steps):
            grads = [torch.randn(s, generator=g, device=suite.device).to(dtype) for s in shapes]
            for backend in pairs:
                for p, grad in zip(pairs[backend][0], grads, strict=True):
                    p.grad = grad.clone()
                pairs[backend][1].step()
        ours, theirs = pairs["triton"], pairs["reference"]
        entries = 0
        for mine, reference in zip(ours[0], theirs[0], strict=True):
            assert torch.isfinite(mine.float()).all(), f"{name}: a parameter is not finite"
            torch.testing.assert_close(mine, reference, **tolerance[dtype])  # NaN never passes
            for key, value in theirs[1].state[reference].items():
                if not isinstance(value, torch.Tensor):
                    continue
                mine_value = ours[1].state[mine][key]
                torch.testing.assert_close(mine_value, value, **tolerance[value.dtype])
                entries += 1
        suite.say(
            "parity", name, f"equal to the reference ({entries} state entries, {steps} steps)"
        )


# --- 2. step time ----------------------------------------------------------------------------


def step_time(suite: Suite) -> None:
    from adamtune.optim import FusedAdam

    torch = suite.torch
    sizes = [10_000, 100_000] if suite.dry else [1_000_000, 16_000_000, 128_000_000]
    repeats = 3 if suite.dry else 20
    copy = copy_bandwidth(suite, max(sizes))
    suite.say("step time", "copy bandwidth", f"{copy:.3g} GB/s")
    for n in sizes:
        for tensors in (1, 200):
            times = {}
            for name in ("FusedAdam", "AdamW(fused=True)"):
                params = [
                    torch.zeros(n // tensors, device=suite.device, requires_grad=True)
                    for _ in range(tensors)
                ]
                for p in params:
                    p.grad = torch.randn_like(p)
                optimizer = (
                    FusedAdam(params, lr=1e-3, decoupled_weight_decay=True)
                    if name == "FusedAdam"
                    else torch.optim.AdamW(params, lr=1e-3, fused=True)
                )
                times[name] = timed(suite, optimizer.step, repeats)
            ours, theirs = times["FusedAdam"], times["AdamW(fused=True)"]
            rate = 28 * n / ours / 1e9
            suite.say(
                "step time",
                f"{n / 1e6:g}M params in {tensors} tensor(s)",
                f"FusedAdam {ours * 1e3:.3f} ms ({rate:.3g} GB/s, {100 * rate / copy:.0f}% of copy), "
                f"AdamW(fused=True) {theirs * 1e3:.3f} ms: {theirs / ours:.2f}x",
            )


def copy_bandwidth(suite: Suite, n: int) -> float:
    torch = suite.torch
    source = torch.randn(7 * n, device=suite.device)  # 28 bytes a parameter, as Adam's step
    target = torch.empty_like(source)
    seconds = timed(suite, lambda: target.copy_(source), 3 if suite.dry else 20)
    return 2 * source.numel() * 4 / seconds / 1e9


def timed(suite: Suite, call: Callable[[], Any], repeats: int) -> float:
    for _ in range(2):
        call()
    suite.sync()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    suite.sync()
    return (time.perf_counter() - started) / repeats


# --- 3. stacked search -----------------------------------------------------------------------


def stacked_search(suite: Suite) -> None:
    from adamtune.config.settings import SearchSettings
    from adamtune.search.run import run_search

    trials = 4 if suite.dry else 64
    seconds = {}
    for stack in (1, "auto"):
        with tempfile.TemporaryDirectory() as folder:
            settings = SearchSettings(
                task="mnist1d-mlp",
                n_trials=trials,
                epochs=1 if suite.dry else None,
                stack=stack,
                device=suite.device.type,
                storage=f"sqlite:///{Path(folder) / 'study.db'}",
                study_name="gpu-suite",
                baseline=False,
                confirm=0,
            )
            started = time.perf_counter()
            study = run_search(settings)
            seconds[stack] = time.perf_counter() - started
            states = {t.state.name for t in study.trials}
        suite.say(
            "stacked search",
            f"{trials} trials, --stack {stack}",
            f"{seconds[stack]:.1f} s, {60 * trials / seconds[stack]:.0f} trials/min ({', '.join(sorted(states))})",
        )
    suite.say(
        "stacked search", "trial phase, --stack auto vs 1", f"{seconds[1] / seconds['auto']:.2f}x"
    )


# --- 4. the transformer ----------------------------------------------------------------------


def transformer(suite: Suite) -> None:
    from adamtune.config.adam import AdamConfig
    from adamtune.tasks import resolve_task
    from adamtune.training.single import train

    precision = "fp32" if suite.dry else "bf16"
    task = resolve_task("charlm-transformer")
    started = time.perf_counter()
    result = train(
        task,
        AdamConfig(lr=3e-3, decoupled=True, weight_decay=0.01),
        epochs=1,
        device=suite.device,
        precision=precision,
    )
    seconds = time.perf_counter() - started
    value = result.metrics[task.metric_name]
    suite.say(
        "transformer",
        f"charlm-transformer, 1 epoch, {precision}",
        f"{task.metric_name} {value:.4g} in {seconds:.1f} s",
    )


# --- 5. the default command ------------------------------------------------------------------


def default_command(suite: Suite) -> None:
    adamtune = str(Path(sys.executable).with_name("adamtune"))
    extra = ["--n-trials", "3", "--epochs", "1", "--confirm", "1"] if suite.dry else []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        done = subprocess.run(
            [adamtune, "search", "--device", suite.device.type, *extra],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    best = re.search(r"^Best trial of study .*$", done.stdout, flags=re.M)
    suite.say(
        "default command",
        f"adamtune search --device {suite.device.type} {' '.join(extra)}".strip(),
        f"{seconds:.1f} s wall; {best.group(0) if best else 'no best line'}",
    )


# --- 6. host syncs ---------------------------------------------------------------------------


def host_syncs(suite: Suite) -> None:
    """Syncs a stacked epoch makes: CUDA's sync debug mode warns at each one."""
    from adamtune.config.adam import AdamConfig
    from adamtune.tasks import resolve_task
    from adamtune.training.stacked.loop import train_stacked

    torch = suite.torch
    task = resolve_task("mnist1d-mlp")
    configs = [AdamConfig(lr=lr, decoupled=True) for lr in (1e-3, 3e-3, 1e-2, 3e-2)]
    epochs = 2
    if suite.device.type != "cuda":
        suite.say("host syncs", "stacked loop", "n/a on CPU (no host-device sync to count)")
        return
    train_stacked(task, configs, epochs=1, device=suite.device)  # warm: kernels compiled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_stacked(task, configs, epochs=epochs, device=suite.device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    steps = task.steps_per_epoch()
    places = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})
    suite.say(
        "host syncs",
        f"stacked loop, {len(configs)} rows, {steps} steps an epoch",
        f"{len(syncs) / epochs:.0f} per epoch ({len(syncs) / epochs / steps:.2f} per step) at "
        f"{', '.join(places[:6]) or 'nowhere'}",
    )


SECTIONS = [
    ("parity", parity),
    ("step time", step_time),
    ("stacked search", stacked_search),
    ("transformer", transformer),
    ("default command", default_command),
    ("host syncs", host_syncs),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes, TRITON_INTERPRET=1"
    )
    parser.add_argument("--out", type=Path, help="where to write the markdown report")
    parser.add_argument("--only", help="comma-separated section names, to rerun a few")
    args = parser.parse_args()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    suite = Suite(args.dry_run)
    torch = suite.torch
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_suite: torch sees no CUDA device; use --dry-run on CPU")
    name = "cpu-dry-run" if args.dry_run else torch.cuda.get_device_name().replace(" ", "-")
    wanted = set(args.only.split(",")) if args.only else None
    status = {}
    started = time.perf_counter()
    for title, section in SECTIONS:
        if wanted and title not in wanted:
            continue
        print(f"== {title}", flush=True)
        began = time.perf_counter()
        try:
            section(suite)
            status[title] = f"ok, {time.perf_counter() - began:.0f} s"
        except Exception as exc:  # noqa: BLE001  (one section's failure must not hide the rest)
            traceback.print_exc()
            suite.say(title, "FAILED", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            status[title] = "FAILED"
    total = time.perf_counter() - started
    table = ["| section | what | result |", "|---|---|---|"]
    table += [f"| {s} | {w} | {r} |" for s, w, r in suite.lines]
    report = "\n".join(
        [
            f"# GPU suite on {name}",
            "",
            f"`python benchmarks/gpu_suite.py{' --dry-run' if args.dry_run else ''}`, "
            f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {total:.0f} s in all.",
            "",
            *table,
            "",
        ]
    )
    out = args.out
    if out is None:
        out = (
            Path(tempfile.gettempdir()) / f"gpu_{name}.md"
            if args.dry_run
            else ROOT / "benchmarks" / "results" / f"gpu_{name}.md"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print()
    print("\n".join(f"{title:<16} {state}" for title, state in status.items()))
    print(report)
    print(f"written to {out}")
    if any(state == "FAILED" for state in status.values()):
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
