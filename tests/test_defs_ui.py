"""The real UI: `dagster dev` (webserver + daemon) on a synthetic project, driven by headless Chromium.

Needs Debian's chromium (/usr/bin/chromium, or $RECMOO_CHROMIUM) and the playwright Python package;
Playwright's own browser downloads are never used. Screenshots go to $RECMOO_TEST_ARTIFACTS when set.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml

from recmoo_dag.defs.pipeline import load_pipeline
from tests.scaleout_support import POSTGRES_INSTANCE, postgres_server
from tests.serve_support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]  # one worker starts each UI once

CHROMIUM = os.environ.get("RECMOO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT = 600  # seconds for one run of the tiny pipeline; ~1 min on an idle 2-core machine
RUNS = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter, limit: 20) {
  ... on Runs { results { runId status jobName tags { key value } } } } }"""
LATEST = "{ assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId } } }"
LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def wait_for(condition, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def location_loaded(url: str) -> bool:
    try:
        entries = graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
    except OSError:  # webserver not listening yet
        return False
    errors = [e["locationOrLoadError"] for e in entries
              if e["locationOrLoadError"]["__typename"] == "PythonError"]
    assert not errors, errors
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def finished_run(url: str, run_filter: dict):
    """The newest run matching the filter once it finished (fails the test if it failed)."""
    runs = graphql(url, RUNS, {"filter": run_filter})["runsOrError"]["results"]
    if runs and runs[0]["status"] in ("FAILURE", "CANCELED"):
        raise AssertionError(f"run {runs[0]['runId']} ended {runs[0]['status']}")
    return runs[0] if runs and runs[0]["status"] == "SUCCESS" else None


def _default_signals():  # the test runner may ignore SIGINT/SIGTERM; dagster dev must hear them
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def instance_storage(kind: str, home: Path):
    """The default SQLite instance (`recmoo ui` writes its dagster.yaml), or runs, event log and
    schedules in a real PostgreSQL server started for the test (README "Running on a cluster")."""
    if kind == "sqlite":
        yield {}
        return
    home.mkdir()
    (home / "dagster.yaml").write_text(POSTGRES_INSTANCE)
    with postgres_server() as url:
        yield {"RECMOO_DAGSTER_PG_URL": url}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.scaleout)])
def ui(request, tmp_path_factory, repro_project):
    """`recmoo ui` in a copy of the tiny project that `dvc repro` ran from a terminal: dagster dev on
    127.0.0.1, DAGSTER_HOME inside the project, its storage in SQLite or PostgreSQL. The UI's
    "Materialize all" then runs every asset, and DVC finds every stage up to date: the sensor's run
    below recomputes everything downstream of ingest for real."""
    project = tmp_path_factory.mktemp(f"ui-{request.param}") / "project"
    shutil.copytree(repro_project, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["orchestration"]["sensor_interval_seconds"] = 2  # not a stage param: nothing re-runs
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with instance_storage(request.param, project / ".dagster_home") as storage_env:
        yield from _running_ui(project, free_port(), request.param, storage_env)


def _running_ui(project: Path, port: int, storage: str, storage_env: dict[str, str]):
    url, log = f"http://127.0.0.1:{port}", project / "recmoo_ui.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "RECMOO_PROJECT_DIR")} | storage_env
    # Its own process group, stopped as a whole below; preexec_fn runs before any thread exists.
    with open(log, "w") as out:
        command = [sys.executable, "-m", "recmoo_dag.cli", "ui", "--port", str(port)]
        proc = subprocess.Popen(command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_default_signals)  # noqa: PLW1509
    try:
        wait_for(lambda: location_loaded(url), 180, "the webserver and the code location", log)
        yield SimpleNamespace(project=project, url=url, home=project / ".dagster_home", log=log,
                              storage=storage, proc=proc)
    finally:
        # Whatever the last test (a SIGTERM to `recmoo ui` alone) left of its session
        for member in session_members(proc.pid):
            member.kill()
        proc.wait()


def session_members(sid: int) -> list[psutil.Process]:
    """Live processes of session `sid`: whatever `recmoo ui` started, unless it made a session of its own."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):  # ended while we looked
            pass
    return members


def save(path: Path) -> None:
    if folder := os.environ.get("RECMOO_TEST_ARTIFACTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def test_the_first_screen_shows_a_terminal_run_materialized_with_its_dvc_hash(ui, tmp_path):
    """The project was run outside this UI's Dagster home (as `dvc repro` from a terminal would):
    `recmoo ui` records DVC's work before the first screen, so every asset shows materialized."""
    from playwright.sync_api import sync_playwright

    from recmoo_dag.defs.pipeline import locked_outs

    stages = list(load_pipeline(ui.project))
    latest = {"/".join(node["assetKey"]["path"]): [m["runId"] for m in node["assetMaterializations"]]
              for node in graphql(ui.url, LATEST)["assetNodes"]}
    assert latest == {name: [""] for name in stages}  # runless: recorded from dvc.lock, no Dagster run
    md5 = locked_outs(ui.project, "train")["models/model"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1800, "height": 1400})
        page.goto(f"{ui.url}/assets/train")
        page.get_by_text("dvc repro outside Dagster", exact=False).first.wait_for(timeout=60_000)
        page.get_by_text(md5, exact=False).first.wait_for(timeout=30_000)
        shot = tmp_path / "asset_train_after_cli.png"
        page.screenshot(path=str(shot), full_page=True)
        save(shot)
        browser.close()


def test_browser_materializes_all_assets(ui, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    stages = list(load_pipeline(ui.project))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        page.goto(f"{ui.url}/asset-groups")
        materialize_all = page.get_by_role("button", name="Materialize all")
        materialize_all.wait_for(timeout=60_000)
        try:  # the first visit shows a "join the community" dialog over the graph
            page.get_by_role("button", name="Skip").click(timeout=5_000)
        except PlaywrightTimeout:
            pass
        nodes = page.locator("[class*='AssetNode_assetName']")  # node titles in the lineage graph
        nodes.nth(len(stages) - 1).wait_for(timeout=30_000)
        assert sorted(nodes.all_inner_texts()) == sorted(stages)  # one node per DVC stage, nothing else
        materialize_all.click()
        run = wait_for(lambda: finished_run(ui.url, {}), RUN_TIMEOUT, "the UI's run to succeed", ui.log)
        latest = {"/".join(node["assetKey"]["path"]): [m["runId"] for m in node["assetMaterializations"]]
                  for node in graphql(ui.url, LATEST)["assetNodes"]}
        assert latest == {name: [run["runId"]] for name in stages}  # every asset, by that run
        page.reload()
        nodes.nth(len(stages) - 1).wait_for(timeout=30_000)
        page.wait_for_timeout(3_000)  # let the status colours arrive before the picture
        shot = tmp_path / "asset_graph.png"
        page.screenshot(path=str(shot))
        save(shot)
        browser.close()
    assert run["jobName"] == "__ASSET_JOB"  # what the UI's "Materialize all" launches
    # History lives in the instance's storage (the project's DAGSTER_HOME, or PostgreSQL), so it
    # survives a restart of `recmoo ui`.
    assert (ui.home / "history" / "runs.db").is_file() == (ui.storage == "sqlite")
    assert "max_concurrent_runs: 1" in (ui.home / "dagster.yaml").read_text()


def test_sensor_starts_a_run_for_a_new_batch(ui):
    """A batch dropped in the incoming folder (written under a temporary name, then renamed) starts
    one `new_logs` run. The batch re-delivers the log's own rows, which ingest drops as repeats: the
    run goes through the whole graph and DVC finds nothing after ingest to recompute."""
    incoming = ui.project / "data" / "raw" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    [log] = sorted((ui.project / "data" / "raw" / "ml-100k").glob("*.inter"))
    os.replace(shutil.copy(log, incoming / ".batch-0001.inter.part"), incoming / "batch-0001.inter")
    by_sensor = {"tags": [{"key": "recmoo/trigger", "value": "incoming_logs"}]}
    run = wait_for(lambda: finished_run(ui.url, by_sensor), RUN_TIMEOUT, "the sensor's run", ui.log)
    assert run["jobName"] == "new_logs"
    assert {"key": "recmoo/incoming_files", "value": "batch-0001.inter"} in run["tags"]


def test_sigterm_to_recmoo_ui_stops_every_dagster_process_and_frees_the_port(ui):
    """Last of the module: kill, systemd and a container stop send SIGTERM to `recmoo ui` alone.
    It must reach `dagster dev`, which stops webserver, daemon and code servers and exits 0; a
    wrapper that died alone left them holding the port and the instance."""
    started = psutil.Process(ui.proc.pid).children(recursive=True)
    assert len(started) >= 3, [" ".join(p.cmdline()[:5]) for p in started]  # webserver, daemon, code server
    ui.proc.send_signal(signal.SIGTERM)
    status = ui.proc.wait(timeout=60)
    _, alive = psutil.wait_procs(started, timeout=10)
    left = {p.pid: " ".join(p.cmdline()[:5]) for p in [*alive, *session_members(ui.proc.pid)] if p.is_running()}
    assert not left, f"left running after `recmoo ui` exited {status}: {left}"
    assert status == 0, ui.log.read_text()[-3000:]
    with socket.socket() as sock:  # as a restarted webserver would bind it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(ui.url.rsplit(":", 1)[1])))
