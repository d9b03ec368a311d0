"""End to end: a real `mlflow server` over HTTP, and the MLflow UI in headless Chromium."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from adamtune.config.settings import SearchSettings
from adamtune.search.run import run_search
from tests.servers import free_port

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_a_study_logs_to_a_remote_tracking_server(tmp_path, mlflow_server):
    url = mlflow_server
    settings = SearchSettings(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        study_name="remote",
        space="lr-only",
        n_trials=3,
        epochs=2,
        tracking_uri=url,
    )
    study = run_search(settings)
    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("remote").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and len(children) == len(study.trials) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    child = children[0]
    steps = int(child.data.params["total_steps"])
    assert len(client.get_metric_history(child.info.run_id, "lr")) == steps
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert "search_space.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_ui_shows_the_study_and_its_trials(tmp_path, serve):
    from playwright.sync_api import sync_playwright

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = SearchSettings(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        study_name="ui-study",
        n_trials=6,
        epochs=4,
        tracking_uri=tracking,
    )
    run_search(settings)
    port = free_port()
    adamtune = Path(sys.executable).with_name("adamtune")
    process = serve(
        [str(adamtune), "ui", "ui-study", "--tracking-uri", tracking, "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
        tmp_path,
    )
    said = ""  # "Starting ...", MLflow's own lines, then the URL once the UI answers
    while not (found := re.search(r"(http://\S+/#/experiments/\d+)/runs", said)):
        line = process.stdout.readline()
        assert line, said
        said += line
    assert said.index("Starting the MLflow UI") < said.index("MLflow UI for")
    url = found.group(1)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 820})
        page.goto(f"{url}/runs?workflowType=machine_learning")
        parent = page.locator("[role=row]", has_text="ui-study").first
        parent.wait_for(timeout=60_000)
        parent.locator("button[data-component-id*=runnamecellrenderer]").first.click()
        for number in range(6):
            page.get_by_text(f"trial-{number}", exact=True).wait_for(timeout=30_000)
        screenshot = tmp_path / "mlflow-ui.png"
        page.screenshot(path=str(screenshot))
        # the answer is on the parent run's page: its description names the exported trial
        parent.get_by_role("link", name="ui-study").first.click()
        page.get_by_text("adamtune export", exact=False).first.wait_for(timeout=30_000)
        browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("ADAMTUNE_SCREENSHOT"):  # how docs/mlflow-ui.png is made
        shutil.copy(screenshot, os.environ["ADAMTUNE_SCREENSHOT"])


def test_ui_for_a_server_uri_prints_its_url(tmp_path):
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("adamtune")),
            "ui",
            "--tracking-uri",
            "http://mlflow.example:5000",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == (
        "http://mlflow.example:5000 is an MLflow server already: open http://mlflow.example:5000"
    )
