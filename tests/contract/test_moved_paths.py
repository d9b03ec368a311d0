"""The 0.1 import paths still work for one release: each is the new module itself, it warns,
and a file exported by 0.1 (before the move into subpackages) still runs."""

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import adamtune
from adamtune._util.moved import MOVED

EXPORTED_BY_0_1 = Path(__file__).with_name("exported_by_0_1.py")


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_is_the_new_module_and_warns(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_an_unknown_path_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("adamtune.no_such_module")


@pytest.mark.parametrize(
    ("package", "names"),
    [
        ("adamtune.config", ["AdamConfig", "ScheduleConfig", "SCHEMA_VERSION"]),
        ("adamtune.space", ["SearchSpace", "load_space", "shipped_spaces"]),
        ("adamtune.storage", ["open_storage", "describe_host"]),
        ("adamtune.search", ["search", "run_search", "default_study_name"]),
        ("adamtune.cli", ["cli", "main"]),
    ],
)
def test_a_module_that_became_a_package_offers_its_old_names(package, names):
    module = importlib.import_module(package)
    for name in names:
        assert getattr(module, name) is not None, f"{package}.{name}"


@pytest.mark.parametrize(
    "package",
    [
        "adamtune",
        "adamtune.config",
        "adamtune.space",
        "adamtune.storage",
        "adamtune.search",
        "adamtune.results",
        "adamtune.training",
        "adamtune.training.stacked",
        "adamtune.cli",
        "adamtune.tasks",
        "adamtune.tracking",
        "adamtune.optim",
    ],
)
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the public face never uses an old path
        missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing


def test_a_file_exported_by_0_1_still_runs(tmp_path):
    assert "from adamtune.builders import" in EXPORTED_BY_0_1.read_text()
    code = (
        "import torch, exported_by_0_1 as exported\n"
        "model = torch.nn.Linear(3, 1)\n"
        "optimizer = exported.build_optimizer(model.parameters())\n"
        "scheduler = exported.build_scheduler(optimizer, 200)\n"
        "model(torch.ones(2, 3)).sum().backward()\n"
        "exported.clip_gradients(model.parameters())\n"
        "optimizer.step(); scheduler.step()\n"
        "print(type(optimizer).__name__, optimizer.param_groups[0]['lr'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default::DeprecationWarning", "-c", code],
        cwd=EXPORTED_BY_0_1.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("FusedAdam ")
    assert "adamtune.builders moved to adamtune.training.builders" in done.stderr


def test_the_package_version_says_the_layout_moved():
    assert adamtune.__version__ == "0.2.0"


def test_no_public_name_is_shadowed_by_a_submodule():
    # Once ``adamtune.search.confirm`` is imported, ``adamtune.search.confirm`` is the module:
    # a lazy name equal to a submodule's would change meaning with import order.
    import pkgutil

    for init in Path(adamtune.__file__).parent.rglob("__init__.py"):
        package = ".".join(init.parent.relative_to(Path(adamtune.__file__).parents[1]).parts)
        module = importlib.import_module(package)
        submodules = {info.name for info in pkgutil.iter_modules([str(init.parent)])}
        assert not set(getattr(module, "_EXPORTS", {})) & submodules, package
