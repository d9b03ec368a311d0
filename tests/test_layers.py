"""The one-way house: no import cycle among adamtune's modules, the inner layers free of the
outer tools, and the reading commands free of torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adamtune"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every adamtune module ``path`` imports, wherever the import stands (function bodies and
    TYPE_CHECKING blocks included: a lazy import is still an arrow)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
MODULES = set(GRAPH)
EDGES = {m: {t for t in targets if t in MODULES and t != m} for m, targets in GRAPH.items()}


def test_no_import_cycle_among_adamtune_modules():
    # Package __init__ modules re-export lazily (a table of names), so they are left out.
    edges = {
        m: {t for t in ts if not PACKAGE.joinpath(*t.split(".")[1:], "__init__.py").exists()}
        for m, ts in EDGES.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(target) is None:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if state.get(node) is None:
            visit(node)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("adamtune.optim", ("optuna", "mlflow", "click", "adamtune.")),
        ("adamtune.train", ("optuna", "mlflow", "click")),
        ("adamtune.config", ("optuna", "mlflow", "click", "torch")),
        ("adamtune.schedules", ("optuna", "mlflow", "click", "torch", "adamtune.")),
        ("adamtune.tracking", ("adamtune.study", "adamtune.objective", "adamtune.train", "click")),
        ("adamtune.export", ("optuna", "torch", "click", "adamtune.study")),
    ],
)
def test_inner_layers_do_not_import_outer_tools(layer, forbidden):
    for module, targets in GRAPH.items():
        if module != layer and not module.startswith(layer + "."):
            continue
        for target in targets:
            own = target == layer or target.startswith(layer + ".")
            bad = [f for f in forbidden if target == f.rstrip(".") or target.startswith(f)]
            assert own or not bad, f"{module} imports {target}"


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["search", "--help"],
        ["tasks"],
        ["spaces"],
        ["spaces", "algoperf"],
        ["studies"],
        ["show", "s"],
        ["export", "s"],
        ["export", "s", "--format", "yaml"],
    ],
    ids=" ".join,
)
def test_reading_commands_never_import_torch(tmp_path, args):
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'adamtune.db'}", study_name="s")
    trial = study.ask()
    trial.set_user_attr("config", {"lr": 0.01})
    trial.set_user_attr("total_steps", 10)
    study.tell(trial, 0.5)
    code = (
        "import sys\n"
        "from adamtune.cli import cli\n"
        "try:\n"
        f"    cli.main({args!r})\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.stderr.strip().endswith("exit 0 False"), done.stderr
