"""Trials per minute with 1, 2 and 3 worker processes on one PostgreSQL study (this machine).

Each configuration gets a fresh database; the workload is the default task and space with
pruning off, so every trial does the same work. Prints trials/minute and the ratio to one
worker (the baseline, measured in the same run). Needs PostgreSQL on 127.0.0.1:5432.

    python benchmarks/scale_out.py [--n-trials 24] [--workers 1,2,3] [--tracking]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ADAMTUNE = str(Path(sys.executable).with_name("adamtune"))


def run(workers: int, n_trials: int, tracking: bool) -> float:
    name = f"adamtune_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with tempfile.TemporaryDirectory() as tmp:
                command = [
                    ADAMTUNE,
                    "search",
                    "--workers",
                    str(workers),
                    "--n-trials",
                    str(n_trials),
                    "--pruner",
                    "none",
                    "--storage",
                    f"postgresql://postgres@127.0.0.1:5432/{name}",
                ]
                if not tracking:
                    command.append("--no-tracking")
                start = time.perf_counter()
                subprocess.run(command, cwd=tmp, check=True, capture_output=True)
                return time.perf_counter() - start
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=24)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--tracking", action="store_true", help="log to MLflow too")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(
        f"| workers | wall s ({args.n_trials} trials, incl. start-up) | trials/min | vs 1 worker |"
    )
    print("|---|---|---|---|")
    base = None
    for workers in counts:
        wall = run(workers, args.n_trials, args.tracking)
        rate = args.n_trials / wall * 60
        base = base or rate
        print(f"| {workers} | {wall:.1f} | {rate:.0f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
