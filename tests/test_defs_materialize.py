"""Materializing the Dagster assets runs the DVC stages: same outputs, dvc.lock true, checks block.

One synthetic project is materialized in Dagster (in process); the shared `repro_project` is the
same project after `dvc repro` from a terminal.
"""
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from dagster import DagsterEventType

from recmoo_dag import store
from recmoo_dag.config import load_params
from recmoo_dag.defs import dvc_runner
from recmoo_dag.defs.definitions import NEW_LOGS_JOB
from recmoo_dag.defs.pipeline import data_version, downstream, load_pipeline, locked_outs
from recmoo_dag.synth import synthesize
from tests import defs_support
from tests.conftest import write_params
from tests.defs_support import artifact_digests, digests, dvc, materialize

pytestmark = pytest.mark.slow
materialized_project = defs_support.materialized_project  # session fixture of this module's worker


def materialized(result) -> dict:
    return {e.materialization.asset_key.to_user_string(): e.materialization
            for e in result.get_asset_materialization_events()}


@pytest.mark.xdist_group("materialized")  # the worker that materialized it holds the run's result
def test_materialize_whole_graph(materialized_project):
    project, result, seconds = materialized_project
    print(f"\nDagster materialization of the whole graph: {seconds:.1f}s")
    assert result.success
    stages = load_pipeline(project)
    events = materialized(result)
    assert list(events) == list(stages)  # every stage, in pipeline order
    for name, event in events.items():
        hashes = locked_outs(project, name)
        assert set(hashes) == set(stages[name].outs)
        assert event.tags["dagster/data_version"] == data_version(hashes)
        assert all(md5 in event.metadata["dvc/outs"].value for md5 in hashes.values())
    ingest = events["ingest"].metadata
    assert ingest["ingest.rows"].value > 0 and ingest["ingest.users"].value == 120
    assert events["validate"].metadata["validation.success"].value is True
    assert events["features"].metadata["features.n_items"].value > 0
    # The later stages' reports, when dvc.yaml has those stages:
    if "train" in events:
        assert "| model.valid |" in events["train"].metadata["train.table"].value
    if "search" in events:
        picture = events["search"].metadata["front.png"].value
        assert picture.startswith("![front.png](data:image/png;base64,")
        assert events["search"].metadata["search.hypervolume.nsga"].value > 0
    if "deploy" in events:
        assert events["deploy"].metadata["deploy.version"].value == "v0001"
        assert events["deploy"].metadata["deploy.gate.promoted"].value is True
    assert all(check.passed for check in result.get_asset_check_evaluations())


@pytest.mark.xdist_group("materialized")
def test_dvc_parity(materialized_project, repro_project):
    """After Dagster: `dvc status` is clean, and every out is byte-identical to a plain `dvc repro`
    of the same project (JSON metrics: apart from wall-clock timings, see WALL_CLOCK_KEYS)."""
    project, reference = materialized_project[0], repro_project
    assert "Data and pipelines are up to date" in dvc(project, "status")
    outs = [out for stage in load_pipeline(project).values() for out in stage.outs]
    assert artifact_digests(project, outs) == artifact_digests(reference, outs)
    for name, stage in load_pipeline(project).items():
        if not any(digest.startswith("without") for digest in artifact_digests(project, stage.outs).values()):
            assert locked_outs(project, name) == locked_outs(reference, name)


def test_bad_batch_stops_everything_downstream(repro_project, tmp_path):
    """A batch failing validation: validate fails, nothing after it runs, its outputs stay as they
    were, and so does the deployed store (the served policy)."""
    project = tmp_path / "copy"
    shutil.copytree(repro_project, project, symlinks=True)
    stages = load_pipeline(project)
    after = [name for name in downstream(stages, {"validate"}) if name != "validate"]
    served = load_params(project / "params.yaml").deploy.store
    kept = [out for name in after for out in stages[name].outs] + [served]
    before = digests(project, kept)

    interactions, _ = synthesize(n_users=20, n_items=10, n_events=200, n_categories=3, seed=3)
    interactions["timestamp"] *= 1000  # milliseconds read as seconds: the suite must refuse the batch
    incoming = project / "data" / "raw" / "incoming"
    incoming.mkdir(parents=True)
    with open(incoming / "bad.inter", "w") as handle:
        handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        interactions.to_csv(handle, sep="\t", header=False, index=False)

    result = materialize(project, NEW_LOGS_JOB)
    assert not result.success
    assert "ingest" in materialized(result) and not set(after) & set(materialized(result))
    failed = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert failed == ["validate"]
    assert yaml.safe_load((project / "reports" / "validation.json").read_text())["success"] is False
    assert digests(project, kept) == before


STUB_PIPELINE = """
stages:
  validate:
    cmd: python stub.py validate
    outs:
      - reports/validation.json:
          cache: false
  features:
    cmd: python stub.py features
    deps:
      - reports/validation.json
    outs:
      - features.txt
"""
STUB_STAGES = """
import json, pathlib, sys
if sys.argv[1] == "validate":  # a stage that exits 0 but reports a failed suite
    pathlib.Path("reports").mkdir(exist_ok=True)
    report = {"success": False, "summary": "stub: 1/2 failed"}
    pathlib.Path("reports/validation.json").write_text(json.dumps(report))
else:
    pathlib.Path("features.txt").write_text("built")
"""


def test_failed_blocking_check_skips_downstream(tmp_path):
    """The stage succeeds but its blocking check fails: the downstream asset is not materialized."""
    (tmp_path / "dvc.yaml").write_text(STUB_PIPELINE)
    (tmp_path / "stub.py").write_text(STUB_STAGES)
    write_params(tmp_path)
    dvc(tmp_path, "init", "-q", "--no-scm")
    result = materialize(tmp_path)
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "validation_passed" and not check.passed
    assert check.metadata["summary"].value == "stub: 1/2 failed"
    assert list(materialized(result)) == ["validate"]
    assert not (tmp_path / "features.txt").exists()


SLOW_STAGE = """
stages:
  slow:
    cmd: python -c "import pathlib, time; pathlib.Path('started').touch(); time.sleep(5);
      pathlib.Path('out.txt').write_text('done')"
    outs:
      - out.txt
"""


def test_concurrent_dvc_commands_wait_instead_of_failing(tmp_path, monkeypatch):
    """A `dvc repro` started by hand and two Dagster runs at once: every one of them succeeds."""
    monkeypatch.setattr(dvc_runner, "BUSY_RETRY_S", 1)
    (tmp_path / "dvc.yaml").write_text(SLOW_STAGE)
    write_params(tmp_path)
    dvc(tmp_path, "init", "-q", "--no-scm")
    by_hand = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=tmp_path, env=dvc_runner.dvc_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (tmp_path / "started").exists():  # then the stage runs: DVC holds the rwlock on out.txt
        time.sleep(0.1)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: materialize(tmp_path), range(2)))
    assert by_hand.wait() == 0, by_hand.stdout.read()
    assert all(result.success for result in results)
    assert "Data and pipelines are up to date" in dvc(tmp_path, "status")


def test_deploy_runs_for_real_instead_of_being_restored_from_the_run_cache(repro_project, tmp_path):
    """Deploy params changed and changed back: DVC's run cache knows that run, but deploy acts on
    the store, so it must run again (a restored metrics/deploy.json would describe another store)."""
    project = tmp_path / "project"
    shutil.copytree(repro_project, project, symlinks=True)
    params = load_params(project / "params.yaml")
    runs = lambda: sum(d["event"] == "deploy" for d in store.read_decisions(project / params.deploy.store))
    before = runs()
    raw = yaml.safe_load((project / "params.yaml").read_text())
    original = raw["deploy"]["tolerance"]["novelty"]
    for novelty in (0.5, original):
        raw["deploy"]["tolerance"]["novelty"] = novelty
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        output = dvc(project, "repro")
        assert "Running stage 'deploy'" in output and "is cached" not in output
    assert runs() == before + 2
    served = store.current_version(project / params.deploy.store)
    assert json.loads((project / params.deploy.metrics).read_text())["version"] == served
    assert "Data and pipelines are up to date" in dvc(project, "status")
