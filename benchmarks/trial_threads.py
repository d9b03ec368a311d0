"""One default-config trial of each built-in task on 1 thread and on all threads, interleaved:
why the built-in tasks ask for one thread (Task.threads). Prints seconds and the ratio.

    python benchmarks/trial_threads.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from adamtune.config.adam import AdamConfig
from adamtune.tasks import resolve_task
from adamtune.training.single import train

TASKS = ("digits-mlp", "mnist1d-mlp", "mnist1d-cnn")


def seconds(task_name: str, threads: int) -> float:
    torch.set_num_threads(threads)
    task = resolve_task(task_name)
    started = time.perf_counter()
    train(task, AdamConfig(), seed=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    most = torch.get_num_threads()
    print(f"torch {torch.__version__}, {most} threads available")
    print(f"| task | 1 thread (s) | {most} threads (s) | {most}/1 |")
    print("|---|---|---|---|")
    for name in TASKS:
        seconds(name, 1)  # warm: data, kernels
        one, many = [], []
        for _ in range(args.repeats):
            one.append(seconds(name, 1))
            many.append(seconds(name, most))
        a, b = statistics.median(one), statistics.median(many)
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
