"""The one-way house: no import cycle among adamtune's modules, the inner layers free of the
outer tools, and the reading commands free of torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "adamtune"


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


# The house, bottom floor first. A module imports only from floors below its own or from its
# own room (folder); rooms on one floor do not import each other. Every module lives in a room.
LAYERS: list[tuple[str, ...]] = [
    ("adamtune.errors",),
    ("adamtune._util",),  # lazy exports, URLs, YAML files, the 0.1 paths
    ("adamtune.optim",),  # FusedAdam and its kernels: torch only
    ("adamtune.config",),  # AdamConfig, schedules, settings, the user's values: no torch
    ("adamtune.space", "adamtune.tasks", "adamtune.storage"),
    ("adamtune.training", "adamtune.results"),  # training: no optuna; results: no torch
    ("adamtune.tracking",),  # MLflow behind the Tracker protocol
    ("adamtune.search",),  # a study around the trials
    ("adamtune.cli",),  # the only click
    ("adamtune",),  # the package face: a table of names
]


def room_of(module: str) -> tuple[int, str]:
    """(floor, room) of ``module``: the longest room name that is the module or a folder above it."""
    found = [
        (floor, room)
        for floor, rooms in enumerate(LAYERS)
        for room in rooms
        if module == room or module.startswith(room + ".")
    ]
    assert found, f"{module} is in no room of LAYERS: add its folder to the list"
    return max(found, key=lambda pair: len(pair[1]))


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(edges.items()):
        floor, room = room_of(module)
        for target in sorted(targets):
            to_floor, to_room = room_of(target)
            if to_room != room and to_floor >= floor:
                bad.append(f"{module} (floor {floor}) imports {target} (floor {to_floor})")
    return bad


def test_every_import_goes_down_the_layers_or_stays_in_its_room():
    assert upward_imports(EDGES) == []


def test_the_layer_check_catches_an_upward_import():
    edges = {**EDGES, "adamtune.optim.cpu": {"adamtune.search.run"}}
    assert upward_imports(edges) == [
        "adamtune.optim.cpu (floor 2) imports adamtune.search.run (floor 7)"
    ]
    sideways = {**EDGES, "adamtune.results.gain": {"adamtune.training.single"}}
    assert len(upward_imports(sideways)) == 1


def test_every_module_is_in_a_room():
    for module in MODULES:
        room_of(module)


THIRD_PARTY = {
    "adamtune.optim": ("optuna", "mlflow", "click", "sklearn"),
    "adamtune.config": ("optuna", "mlflow", "click", "torch"),
    "adamtune.training": ("optuna", "mlflow", "click"),
    "adamtune.results": ("torch", "mlflow", "click"),
    "adamtune.space": ("torch", "mlflow", "click"),
    "adamtune.storage": ("torch", "mlflow", "click"),
    "adamtune.tasks": ("optuna", "mlflow", "click"),
    "adamtune.tracking": ("click",),
    "adamtune.search": ("click",),
}


def third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("room", "forbidden"), sorted(THIRD_PARTY.items()))
def test_inner_layers_do_not_import_outer_tools(room, forbidden):
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        if module == room or module.startswith(room + "."):
            bad = third_party_imports(path) & set(forbidden)
            assert not bad, f"{module} imports {sorted(bad)}"


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
