"""The wheel a user installs (`pip install .`, a release) holds the whole package, and a search
runs from it: an editable install hides a module left out of the package list."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("adamtune-*.whl")
    return path


def test_the_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "adamtune").rglob("*")
        if p.suffix in (".py", ".c", ".npz") and "__pycache__" not in p.parts
    }
    spaces = {f"adamtune/search_spaces/{p.name}" for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert source | spaces <= names, sorted((source | spaces) - names)


def test_a_search_runs_from_the_installed_wheel(wheel, tmp_path):
    """Installed into a folder of its own and run from elsewhere, with the source tree (and
    the editable install's finder) out of the way."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "import adamtune\n"
        f"assert adamtune.__file__.startswith({str(target)!r}), adamtune.__file__\n"
        "from adamtune.cli import cli\n"
        "cli.main(['search', '--n-trials', '2', '--epochs', '1', '--space', 'lr-only'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "Trials logged to MLflow" in done.stdout
