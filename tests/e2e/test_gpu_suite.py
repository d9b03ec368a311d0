"""benchmarks/gpu_suite.py cannot rot: its --dry-run (CPU, tiny sizes, Triton's interpreter)
runs every section and writes its report."""

import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"
SECTIONS = ("parity", "step time", "stacked search", "transformer", "default command", "host syncs")


@pytest.mark.slow
def test_the_gpu_suite_dry_run_runs_every_section(tmp_path):
    out = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, str(SUITE), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    assert "FAILED" not in report
    for section in SECTIONS:
        assert f"| {section} |" in report, section
    assert report.count("equal to the reference") == 6  # every kernel variant
