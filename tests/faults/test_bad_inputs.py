"""A corpus of bad inputs: each is one line on stderr, a non-zero exit, no traceback, no
password, and the study that was already in storage is left exactly as it was."""

import sqlite3

import optuna
import pytest
from click.testing import CliRunner

from adamtune.cli.app import cli

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

BAD_SPACES = {
    "yaml-syntax.yaml": "lr: [1e-3\n",
    "unknown-key.yaml": "lr: 1e-3\nmomentum: 0.9\n",
    "missing-bound.yaml": "lr: {low: 1e-4}\n",
    "low-above-high.yaml": "lr: {low: 1e-2, high: 1e-3}\n",
    "log-low-zero.yaml": "eps: {low: 0, high: 1e-3, log: true}\n",
    "beta-above-one.yaml": "beta2: {low: 0.9, high: 1.5}\n",
    "negative-lr.yaml": "lr: -0.1\n",
    "negative-weight-decay.yaml": "weight_decay: -1\n",
    "unknown-schedule.yaml": "schedule:\n  kind: polynomial\n",
    "infinite-lr.yaml": "lr: .inf\n",
    "overflowing-lr.yaml": "lr: 1e400\n",
    "infinite-eps.yaml": "eps: .inf\n",
    "infinite-weight-decay.yaml": "weight_decay: 1.0e400\n",
    "infinite-high.yaml": "lr: {low: 1.0e-4, high: .inf}\n",
    "huge-int-high.yaml": "lr: {low: 1, high: " + "9" * 400 + "}\n",
    "beta2-rounds-to-one.yaml": "one_minus_beta2: 1.0e-20\n",
    "beta2-range-rounds-to-one.yaml": "one_minus_beta2: {low: 1.0e-20, high: 1.0e-3}\n",
    "duplicate-key.yaml": "lr: 1.0e-3\nlr: 10.0\n",
    "duplicate-schedule-key.yaml": "schedule:\n  kind: cosine\n  kind: linear\n",
    "nan-lr.yaml": "lr: .nan\n",
    "list-at-top.yaml": "- lr\n",
    "alias-bomb.yaml": BOMB + "lr: *i\n",
    "alias-bomb-key.yaml": BOMB + "schedule: *i\n",
    "string-bound.yaml": "lr: {low: small, high: 1.0e-2}\n",
    "bool-lr.yaml": "lr: true\n",
    "decays-fraction.yaml": "schedule:\n  kind: step\n  decays: 1.5\n",
    "multiline-error.yaml": "lr: {low: 1.0e-4,\n  high: [\n",
    "grid-one-point.yaml": "lr: {low: 1.0e-4, high: 1.0e-1, points: 1}\n",
    "grid-empty.yaml": "lr: {grid: []}\n",
    "grid-bad-value.yaml": "lr: {grid: [0.001, -1]}\n",
    "grid-and-choices.yaml": "lr: {grid: [0.001], choices: [0.01]}\n",
    "grid-duplicates.yaml": "lr: {grid: [0.001, 0.001, 0.01]}\n",
    "choices-duplicates.yaml": "schedule:\n  kind: {choices: [cosine, linear, cosine]}\n",
    "baseline-not-mapping.yaml": "lr: {low: 1.0e-4, high: 1.0e-1}\nbaseline: 7\n",
    "baseline-bad-beta.yaml": "lr: {low: 1.0e-4, high: 1.0e-1}\nbaseline: {beta2: 1.5}\n",
    "baseline-missing-file.yaml": "lr: {low: 1.0e-4, high: 1.0e-1}\nbaseline: nowhere.yaml\n",
    "export-wrong-version.yaml": "schema_version: 9\nconfig: {lr: 0.01}\n",
    "export-bad-config.yaml": "schema_version: 1\nconfig: {lr: 0}\n",
}
FITS_NO_STUDY = {"lr-choices.yaml": "lr: {choices: [0.001, 0.01]}\n"}  # 'existing' searched a range
BINARY_SPACES = {
    "latin1.yaml": "# café\nlr: 1.0e-3\n".encode("latin-1"),
    "utf16.yaml": "lr: 1.0e-3\n".encode("utf-16"),
}
BAD_TASKS = {
    "not_a_task.py": "def make_task():\n    return 42\n",
    "raises.py": "def make_task():\n    raise RuntimeError('no data')\n",
    "syntax_error.py": "def make_task(:\n",
    "exits_on_import.py": "import sys\nsys.exit(3)\n",
    "exits_in_factory.py": "import sys\ndef make_task():\n    sys.exit()\n",
    "exits_zero_in_factory.py": "def make_task():\n    raise SystemExit(0)\n",
    "unprintable.py": (
        "class Weird(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
        "def make_task():\n    raise Weird()\n"
    ),
    "multiline.py": "def make_task():\n    raise ValueError('line one\\nline two\\nline three')\n",
    "huge_message.py": "def make_task():\n    raise ValueError('x' * 10_000_000)\n",
}
CASES = [
    *[["search", "--space", name] for name in BAD_SPACES],
    ["search", "--space", "no-such-space"],
    ["search", "--space", "missing/file.yaml"],
    ["search", "--n-trials", "0"],
    ["search", "--n-trials", "many"],
    ["search", "--sampler", "bayes"],
    ["search", "--pruner", "patient"],
    ["search", "--epochs", "-1"],
    ["search", "--timeout", "-5"],
    ["search", "--workers", "0"],
    ["search", "--device", "tpu"],
    ["search", "--no-such-flag"],
    ["search", "--task", "not_a_task.py:make_task"],
    ["search", "--task", "raises.py:make_task"],
    ["search", "--task", "syntax_error.py:make_task"],
    ["search", "--task", "missing.py:make_task"],
    ["search", "--task", "no_such_module:make_task"],
    ["search", "--task", "not_a_task.py:other"],
    ["search", "--task", "digits"],
    ["search", "--confirm", "-1"],
    ["search", "--confirm", "101"],
    ["search", "--confirm-top", "0"],
    ["search", "--sampler", "grid"],  # the default space has plain ranges
    ["search", "--task", "digits-mlp", "--study-name", "existing"],  # created for wine-mlp
    ["search", "--storage", "nosuchdb://host/db"],
    ["search", "--storage", "not a url"],
    ["search", "--storage", "journal:"],
    ["search", "--storage", "postgresql://bob:s3cret@127.0.0.1:1/optuna"],  # nothing listens
    ["search", "--storage", "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db"],
    ["search", "--storage", "mysql+pymysql://root:s3cret@127.0.0.1:3306/test"],  # wrong password
    ["search", "--storage", "postgresql://bob:p@ss/w@rd:s3cret@127.0.0.1:1/optuna"],  # raw @ and /
    ["search", "--storage", "sqlite://"],
    ["search", "--storage", "sqlite:///:memory:"],
    ["search", "--storage", "sqlite:///no/such/dir/a.db"],
    ["search", "--storage", "sqlite:///mlflow-store.db"],  # an MLflow store
    ["search", "--storage", "sqlite:///corrupt.db"],
    ["search", "--storage", "journal:garbage.log"],
    ["search", "--storage", "journal:/dev/full"],
    ["search", "--storage", "journal:."],
    ["search", "--storage", "journal:no/such/dir/j.log"],
    ["search", "--storage", "grpc://host"],
    ["search", "--tracking-uri", "sqlite:///adamtune.db"],  # the study's own storage
    ["search", "--tracking-uri", "sqlite:///corrupt.db"],
    ["search", "--tracking-uri", "sqlite:///optuna-store.db"],
    ["search", "--tracking-uri", "sqlite:///no/such/dir/m.db"],
    ["search", "--tracking-uri", "http://bob:s3cret@127.0.0.1:1"],  # nothing listens
    ["search", "--heartbeat", "10000000000"],  # past threading's wait limit
    ["search", "--tracking-uri", "myruns"],  # a file store, which MLflow 3 refuses
    ["search", "--tracking-uri", "file:///proc/mlruns"],
    ["search", "--tracking-uri", "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db"],
    ["search", "--workers", "2", "--storage", "sqlite:///:memory:"],  # the refusal alone
    ["search", "--stack", "0"],
    ["search", "--stack", "many"],
    ["search", "--stack", "2", "--optimizer", "torch"],
    ["search", "--stack", "2", "--n-jobs", "2"],
    ["search", "--patience", "0"],
    ["search", "--patience", "-3"],
    ["search", "--patience", "soon"],
    ["search", "--timeout", "nan"],
    ["search", "--timeout", "inf"],
    ["search", "--timeout", "-inf"],
    ["search", "--device", "meta"],
    ["search", "--device", "cuda:x"],
    ["search", "--seed", "-1"],
    ["search", "--seed", str(2**32)],
    ["search", "--seed", "1e3"],
    ["search", "--epochs", "10000000000000"],
    ["search", "--study-name", "x" * 600],
    ["search", "--study-name", ""],
    ["search", "--task", "wine-mlp", "--study-name", "existing", "--space", "lr-choices.yaml"],
    *[["search", "--task", f"{name}:make_task"] for name in BAD_TASKS if name != "not_a_task.py"],
    *[["search", "--space", name] for name in BINARY_SPACES],
    ["show", "ghost"],
    ["show", "existing", "--storage", "sqlite:///corrupt.db"],
    ["show", "existing", "--storage", "sqlite:///missing.db"],
    ["studies", "--storage", "sqlite:///mlflow-store.db"],
    ["studies", "--storage", "journal:garbage.log"],
    ["export", "ghost"],
    ["export", "existing", "-o", "adamtune.db"],
    ["export", "existing", "-o", "adamtune.db", "--force"],
    ["export", "existing", "-o", "mlflow-store.db", "--force"],
    ["export", "existing", "-o", "exists.py"],
    ["export", "existing", "-o", "missing/dir/best.py"],
    ["export", "existing", "-o", "no-such-dir/"],  # (-o . writes into the directory)
    ["export", "existing", "-o", "/dev/full", "--force"],
    ["export", "existing", "--trial", "2"],  # its config is not a mapping
    ["spaces", "nope"],
    ["ui", "existing", "--tracking-uri", "http://bob:s3cret@127.0.0.1:1"],
    ["ui", "--tracking-uri", "sqlite:///missing.db"],
    ["ui", "existing", "--tracking-uri", "sqlite:///corrupt.db"],
]


def make_stores(folder):
    """Files a careless flag can point at: another tool's store, a broken one, a read-only one."""
    connection = sqlite3.connect(folder / "mlflow-store.db")
    for table in ("experiments", "runs", "metrics", "alembic_version"):
        connection.execute(f"CREATE TABLE {table} (id INTEGER)")
    connection.commit()
    connection.close()
    connection = sqlite3.connect(folder / "optuna-store.db")
    for table in ("studies", "trials", "version_info"):
        connection.execute(f"CREATE TABLE {table} (id INTEGER)")
    connection.commit()
    connection.close()
    (folder / "corrupt.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 400)
    (folder / "garbage.log").write_bytes(b"this is not\x00 a journal {\n")
    (folder / "exists.py").write_text("# mine\n")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in {**BAD_SPACES, **BAD_TASKS, **FITS_NO_STUDY}.items():
        (tmp_path / name).write_text(text)
    for name, data in BINARY_SPACES.items():
        (tmp_path / name).write_bytes(data)
    make_stores(tmp_path)
    runner = CliRunner()
    made = runner.invoke(
        cli,
        [
            "search",
            "--task",
            "wine-mlp",
            "--study-name",
            "existing",
            "--n-trials",
            "2",
            "--epochs",
            "1",
            "--no-tracking",
            "--space",
            "adamw",
            "--no-baseline",  # trials 0 and 1 are the sampler's, trial 2 the bad config below
            "--confirm",
            "0",
        ],
    )
    assert made.exit_code == 0, made.output
    existing = optuna.load_study(study_name="existing", storage="sqlite:///adamtune.db")
    trial = existing.ask()
    trial.set_user_attr("config", "lr=0.1")
    existing.tell(trial, 0.5)
    return tmp_path


def snapshot():
    study = optuna.load_study(study_name="existing", storage="sqlite:///adamtune.db")
    return [(t.number, t.state, t.params, t.value) for t in study.trials]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a)[:60])
def test_bad_input_is_one_line_and_loses_nothing(workdir, args):
    before = snapshot()
    tracking = args[0] == "search" and "--tracking-uri" not in args
    result = CliRunner().invoke(
        cli, [*args, "--no-tracking"] if tracking else args, catch_exceptions=False
    )
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[:2000]
    assert lines[0].startswith("Error: ")
    assert len(lines[0]) <= 420, lines[0][:1000]
    assert "Traceback" not in result.output + result.stderr
    assert "s3cret" not in result.output + result.stderr
    assert "unexpected" not in lines[0], lines[0]  # every case here has a message of its own
    assert snapshot() == before
    assert (workdir / "exists.py").read_text() == "# mine\n"
    assert not (workdir / "missing.db").exists()
    assert set(tables("mlflow-store.db")) == {"experiments", "runs", "metrics", "alembic_version"}
    assert "studies" not in tables("adamtune.db") or "runs" not in tables("adamtune.db")


def tables(name):
    with sqlite3.connect(name) as connection:
        return [r[0] for r in connection.execute("SELECT name FROM sqlite_master")]


EXACT = {
    (
        "search",
        "--patience",
        "0",
    ): "Invalid value for '--patience' (env var: 'ADAMTUNE_PATIENCE'): 0 is not in the range x>=1.",
    (
        "search",
        "--space",
        "infinite-lr.yaml",
    ): "infinite-lr.yaml: lr: must be a finite number, got inf",
    (
        "search",
        "--space",
        "duplicate-key.yaml",
    ): "duplicate-key.yaml: line 2: key 'lr' is given twice",
    ("search", "--space", "beta2-rounds-to-one.yaml"): (
        "beta2-rounds-to-one.yaml: one_minus_beta2: must be in [1e-15, 1], got 1e-20"
    ),
    ("search", "--space", "latin1.yaml"): (
        "latin1.yaml: must be UTF-8 text, got byte 0xe9 at offset 5"
    ),
    ("search", "--timeout", "nan"): (
        "Invalid value for '--timeout' (env var: 'ADAMTUNE_TIMEOUT'): must be a finite number "
        "of seconds > 0, got 'nan'"
    ),
    ("search", "--space", "grid-duplicates.yaml"): (
        "grid-duplicates.yaml: lr.grid: lists 0.001 more than once; each value is tried once, "
        "so give it once"
    ),
    ("search", "--tracking-uri", "myruns"): (
        "--tracking-uri 'myruns': a directory is MLflow's file store, which MLflow 3 no longer "
        "opens (set MLFLOW_ALLOW_FILE_STORE=true to use it anyway); use a database, e.g. "
        "sqlite:///mlflow.db"
    ),
    ("search", "--device", "meta"): "--device: must be auto, cpu, cuda, cuda:N or mps, got 'meta'",
    ("search", "--storage", "sqlite:///:memory:"): (
        "--storage 'sqlite:///:memory:': an in-memory SQLite database keeps nothing after the "
        "command; give a file, e.g. sqlite:///adamtune.db"
    ),
    ("search", "--storage", "sqlite:///mlflow-store.db"): (
        "--storage 'sqlite:///mlflow-store.db': 'mlflow-store.db' is an MLflow tracking store, "
        "not an Optuna storage; use another file, e.g. sqlite:///adamtune.db"
    ),
    ("search", "--tracking-uri", "sqlite:///optuna-store.db"): (
        "--tracking-uri 'sqlite:///optuna-store.db': 'optuna-store.db' is an Optuna study "
        "storage, not an MLflow store; use another file, e.g. sqlite:///mlflow.db"
    ),
    ("search", "--task", "exits_in_factory.py:make_task"): (
        "--task 'exits_in_factory.py:make_task': make_task() raised SystemExit"
    ),
    ("search", "--task", "unprintable.py:make_task"): (
        "--task 'unprintable.py:make_task': make_task() raised Weird: <Weird whose message "
        "cannot be printed>"
    ),
    ("search", "--task", "wine-mlp", "--study-name", "existing", "--space", "lr-choices.yaml"): (
        "study 'existing': parameter lr was searched as a log float range and space "
        "'lr-choices' makes it a choice of [0.001, 0.01]; pass --study-name to start a new study"
    ),
    ("search", "--task", "multiline.py:make_task"): (
        "--task 'multiline.py:make_task': make_task() raised ValueError: line one | line two | "
        "line three"
    ),
    ("export", "existing", "-o", "adamtune.db"): (
        "-o 'adamtune.db': is the store at sqlite:///adamtune.db; refusing to overwrite it"
    ),
    ("export", "existing", "-o", "exists.py"): (
        "-o 'exists.py': file exists; pass --force to overwrite it"
    ),
    ("export", "existing", "-o", "mlflow-store.db", "--force"): (
        "-o 'mlflow-store.db': holds a SQLite database or an Optuna journal (a study or an "
        "MLflow store); refusing to overwrite it"
    ),
}


@pytest.mark.parametrize("args", list(EXACT), ids=" ".join)
def test_bad_input_messages_name_the_field_the_rule_and_the_value(workdir, args):
    tracking = args[0] == "search" and "--tracking-uri" not in args
    result = CliRunner().invoke(cli, [*args, "--no-tracking"] if tracking else list(args))
    assert result.stderr == f"Error: {EXACT[args]}\n"


def test_no_password_in_any_message(workdir):
    for url in (
        "postgresql://bob:s3cret@127.0.0.1:1/optuna",
        "postgresql://bob:p@ss/w@rd:s3cret@127.0.0.1:1/optuna",
        "postgresql://bob:s3cret%40x@127.0.0.1:1/optuna",
    ):
        for args in (["search", "--storage", url, "--no-tracking"], ["studies", "--storage", url]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code != 0
            assert "s3cret" not in result.output + result.stderr, result.stderr
