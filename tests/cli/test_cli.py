import os
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from adamtune.cli.app import cli
from tests.servers import tracking_workers

FAST = ["--task", "digits-mlp", "--epochs", "1", "--space", "lr-only"]
QUIET = {"ADAMTUNE_NO_TRACKING": "1"}  # tracking is on by default; most tests need none


@pytest.fixture
def run(in_tmp):
    runner = CliRunner()

    def invoke(*args, env=None, track=False):
        quiet = {} if track else QUIET  # tracking is tested on its own below
        return runner.invoke(cli, list(args), env={**quiet, **(env or {})}, catch_exceptions=False)

    return invoke


def test_search_defaults_to_sqlite_in_the_current_directory(run, in_tmp):
    result = run("search", "--n-trials", "2", *FAST)
    assert result.exit_code == 0, result.output
    assert (in_tmp / "adamtune.db").exists()
    assert "2/20" not in result.output and "2/2 trials" in result.output
    assert "Best trial of study 'digits-mlp-lr-only': trial" in result.output
    assert "schedule.kind" in result.output
    study = optuna.load_study(study_name="digits-mlp-lr-only", storage="sqlite:///adamtune.db")
    assert len(study.trials) == 2


def test_search_twice_resumes_the_same_study(run):
    run("search", "--n-trials", "1", *FAST)
    result = run("search", "--n-trials", "2", *FAST)
    assert result.exit_code == 0
    study = optuna.load_study(study_name="digits-mlp-lr-only", storage="sqlite:///adamtune.db")
    assert [t.number for t in study.trials] == [0, 1, 2]


def test_options_come_from_the_environment(run):
    result = run("search", *FAST, env={"ADAMTUNE_N_TRIALS": "1", "ADAMTUNE_STUDY_NAME": "env"})
    assert result.exit_code == 0
    assert len(optuna.load_study(study_name="env", storage="sqlite:///adamtune.db").trials) == 1


def test_studies_and_show_read_back_the_study(run):
    run("search", "--n-trials", "2", "--study-name", "mine", *FAST)
    listing = run("studies")
    assert listing.exit_code == 0
    assert "mine" in listing.output and "digits-mlp" in listing.output
    shown = run("show", "mine", "-k", "2")
    assert shown.exit_code == 0
    assert "Study 'mine': 2 trials (2 complete)" in shown.output
    assert "Top 2 trials by val_accuracy" in shown.output


def test_spaces_lists_and_prints(run):
    listing = run("spaces")
    assert all(name in listing.output for name in ("default", "lr-only", "algoperf"))
    shown = run("spaces", "algoperf")
    assert "beta2: 0.999" in shown.output


def test_tasks_lists_builtins(run):
    assert "digits-mlp" in run("tasks").output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["search", "--space", "nope"],
            "Error: space 'nope': not a shipped space (adam, adamw, algoperf, default, grid, lr-only) nor a "
            ".yaml path",
        ),
        (
            ["search", "--task", "digits"],
            "Error: --task 'digits': not a built-in task (digits-mlp, wine-mlp, breast-cancer-mlp, "
            "diabetes-mlp, mnist1d-mlp, mnist1d-cnn, charlm-transformer) and not 'module:function' "
            "or 'file.py:function'; "
            "did you mean 'digits-mlp'?",
        ),
        (
            ["search", "--n-trials", "0", "--no-tracking"],
            "Error: --n-trials 0: confirms the finished trials of an existing study, and study "
            "'mnist1d-mlp-default' in sqlite:///adamtune.db does not exist yet; give --n-trials 1 "
            "or more",
        ),
        (
            ["search", "--sampler", "bayes"],
            "Error: Invalid value for '--sampler' (env var: 'ADAMTUNE_SAMPLER'): 'bayes' is not one of "
            "'tpe', 'gp', 'cmaes', 'random', 'qmc', 'grid'.",
        ),
        (
            ["search", "--storage", "nosuchdb://x"],
            "Error: --storage 'nosuchdb://x': unknown database 'nosuchdb'; expected one of "
            "sqlite:///adamtune.db, postgresql://user@host/db, mysql+pymysql://user@host/db, "
            "journal:FILE",
        ),
        (
            ["show", "ghost"],
            "Error: no study 'ghost' in sqlite:///adamtune.db (studies there: none)",
        ),
        (
            ["search", "--device", "cuda"]
            if not __import__("torch").cuda.is_available()
            else ["search", "--device", "tpu"],
            None,
        ),
    ],
)
def test_errors_are_one_line_on_stderr_with_nonzero_exit(in_tmp, args, line):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    if line is not None:
        assert lines[0] == line
    else:
        assert lines[0].startswith("Error: --device:")


def test_a_bad_space_file_names_file_key_and_value(in_tmp):
    (in_tmp / "bad.yaml").write_text("beta2: {low: 0.9, high: 1.5}\n")
    result = CliRunner().invoke(cli, ["search", "--space", "bad.yaml"])
    assert result.exit_code == 1
    assert result.stderr == "Error: bad.yaml: beta2.high: must be in [0, 1), got 1.5\n"


@pytest.mark.parametrize(
    "args, error",
    [
        (["--space", "nope.yaml"], "Error: nope.yaml: no such file"),
        (["--task", "nope.py:make"], "Error: --task 'nope.py:make': no such file 'nope.py'"),
        (["--task", "digits-mpl"], "Error: --task 'digits-mpl': not a built-in task ("),
    ],
)
def test_a_bad_space_or_task_is_refused_before_torch_is_imported(in_tmp, args, error):
    """Checking --space or a --task name takes milliseconds; it must not wait for seconds of
    torch import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from adamtune.cli import cli\n"
        "try:\n"
        f"    cli.main(['search', *{args!r}])\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, 'torch' in sys.modules, 'optuna' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stderr.startswith(error) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == "1 False False\n"


def test_tasks_lists_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from adamtune.cli import cli\n"
        "try:\n"
        "    cli.main(['tasks'])\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "digits-mlp" in done.stdout
    assert done.stdout.endswith("0 False\n")


def test_help_lists_every_search_option(run):
    text = run("search", "--help").output
    for option in (
        "--task",
        "--space",
        "--n-trials",
        "--timeout",
        "--study-name",
        "--storage",
        "--sampler",
        "--pruner",
        "--seed",
        "--device",
        "--epochs",
        "--n-jobs",
        "--optimizer",
        "ADAMTUNE_TASK",
    ):
        assert option in text


def test_search_tracks_to_mlflow_by_default_and_says_where(run, in_tmp):
    result = run("search", "--n-trials", "1", *FAST, track=True)
    assert result.exit_code == 0
    assert (
        "Trials logged to MLflow at sqlite:///mlflow.db, experiment 'digits-mlp-lr-only': "
        "`adamtune ui` to review."
    ) in result.output
    from mlflow import MlflowClient

    client = MlflowClient("sqlite:///mlflow.db")
    experiment = client.get_experiment_by_name("digits-mlp-lr-only")
    assert len(client.search_runs([experiment.experiment_id])) == 2


def tracking_workers_of_this_process() -> list[int]:
    return tracking_workers(os.getpid())


def test_a_search_refused_on_bad_input_leaves_no_tracking_behind(run, in_tmp):
    """search starts the tracking worker before anything else; a bad flag found later must
    still stop it, with nothing logged and no MLflow store made."""
    result = run("search", "--device", "tpu", *FAST, track=True)
    assert result.exit_code != 0
    assert "--device" in result.output
    assert tracking_workers_of_this_process() == []
    assert not (in_tmp / "mlflow.db").exists()


def test_no_tracking_writes_no_mlflow_store(run, in_tmp):
    result = run("search", "--n-trials", "1", "--no-tracking", *FAST, track=True)
    assert result.exit_code == 0
    assert "MLflow" not in result.output
    assert not (in_tmp / "mlflow.db").exists()


def test_tracking_uri_comes_from_mlflow_env(run, in_tmp):
    uri = f"sqlite:///{in_tmp / 'elsewhere.db'}"
    result = run("search", "--n-trials", "1", *FAST, env={"MLFLOW_TRACKING_URI": uri}, track=True)
    assert result.exit_code == 0 and f"MLflow at {uri}" in result.output
    assert (in_tmp / "elsewhere.db").exists()


def test_ui_without_a_store_or_experiment_is_one_line(run, in_tmp):
    result = CliRunner().invoke(cli, ["ui", "ghost", "--tracking-uri", "sqlite:///m.db"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no MLflow store at sqlite:///m.db (run `adamtune search` with tracking on first)\n"
    )
    assert not (in_tmp / "m.db").exists()
    run("search", "--n-trials", "1", *FAST, track=True)
    result = CliRunner().invoke(cli, ["ui", "ghost"])
    assert result.stderr == (
        "Error: no MLflow experiment 'ghost' at sqlite:///mlflow.db (run "
        "`adamtune search` with tracking on first)\n"
    )


def test_workers_on_sqlite_warn_and_share_the_study(in_tmp):
    import subprocess
    import sys

    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("adamtune")),
            "search",
            "--workers",
            "2",
            "--n-trials",
            "3",
            *FAST,
            "--no-tracking",
            "--study-name",
            "w",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=in_tmp,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(
        "Warning: --workers 2 on SQLite: writers from several processes queue on one file lock."
    )
    assert "3/3 trials" in done.stderr
    study = optuna.load_study(study_name="w", storage="sqlite:///adamtune.db")
    assert sorted(t.number for t in study.trials) == [0, 1, 2]


def test_a_trial_whose_config_is_not_a_mapping_is_shown_and_refused_for_export(run):
    """A study written by another tool (or edited by hand) is still readable."""
    study = optuna.create_study(storage="sqlite:///adamtune.db", study_name="odd")
    trial = study.ask()
    trial.set_user_attr("config", ["not", "a", "mapping"])
    study.tell(trial, 0.5)
    shown = run("show", "odd")
    assert shown.exit_code == 0, shown.output
    assert "Top 1 trials by value" in shown.output
    exported = CliRunner().invoke(cli, ["export", "odd"])
    assert exported.exit_code == 1
    assert exported.stderr == (
        "Error: trial 0 of study 'odd' has no 'config' mapping among its user attributes "
        "(was it run by adamtune?)\n"
    )


def test_export_writes_whole_files_and_never_over_a_store(run, in_tmp):
    run("search", "--n-trials", "1", *FAST)
    assert run("export", "digits-mlp-lr-only", "-o", "best.py").exit_code == 0
    first = (in_tmp / "best.py").read_text()
    assert "def build_optimizer" in first
    again = CliRunner().invoke(cli, ["export", "digits-mlp-lr-only", "-o", "best.py"])
    assert again.exit_code == 1 and "pass --force" in again.stderr
    forced = run("export", "digits-mlp-lr-only", "-o", "best.py", "--format", "yaml", "--force")
    assert forced.exit_code == 0 and (in_tmp / "best.py").read_text().startswith("# Adam")
    assert sorted(p.name for p in in_tmp.iterdir() if p.name.startswith(".best")) == []
    before = (in_tmp / "adamtune.db").read_bytes()
    for target in ("adamtune.db", "./adamtune.db", str(in_tmp / "adamtune.db")):
        refused = CliRunner().invoke(cli, ["export", "digits-mlp-lr-only", "-o", target, "--force"])
        assert refused.exit_code == 1 and "refusing to overwrite" in refused.stderr
    assert (in_tmp / "adamtune.db").read_bytes() == before


def test_the_tracking_password_is_never_printed(run, in_tmp, mlflow_server):
    uri = mlflow_server.replace("http://", "http://bob:s3cret@")
    result = run("search", "--n-trials", "1", *FAST, "--tracking-uri", uri, track=True)
    assert result.exit_code == 0, result.output
    assert "Trials logged to MLflow at http://bob:***@127.0.0.1:" in result.output
    assert "s3cret" not in result.output


def test_a_closed_tracking_port_fails_in_seconds_before_any_trial(run, in_tmp):
    import time

    started = time.perf_counter()
    result = CliRunner().invoke(
        cli, ["search", *FAST, "--tracking-uri", "http://127.0.0.1:1"], env={}
    )
    assert time.perf_counter() - started < 15
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: --tracking-uri 'http://127.0.0.1:1': no MLflow server answers within 3 s"
    )
    assert not (in_tmp / "adamtune.db").exists()
