"""The Dagster definitions mirror dvc.yaml: same graph, one asset per stage, checks where stages exist."""
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey
from dvc.repo import Repo

from recmoo_dag.defs import build_defs
from recmoo_dag.defs.assets import describe
from recmoo_dag.defs.checks import BLOCKING_CHECKS
from recmoo_dag.defs.definitions import NEW_LOGS_JOB, PIPELINE_JOB
from recmoo_dag.defs.pipeline import code_version, data_version, downstream, load_pipeline, overlaps
from recmoo_dag.defs.reprice import REPRICE_JOB
from tests.conftest import REPO, repo_params, write_params


@pytest.fixture(scope="module")
def defs():
    return build_defs(REPO)


def dvc_stage_graph(project: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Stages and (upstream, downstream) edges as DVC itself builds them (repo.index.graph)."""
    with Repo(str(project)) as repo:
        stages = {s.name for s in repo.index.stages if getattr(s, "cmd", None)}
        # DVC's edges point from a stage to the stage it depends on.
        edges = {(dep.name, stage.name) for stage, dep in repo.index.graph.edges if stage.name in stages}
    return stages, edges


def test_asset_graph_equals_dvc_stage_graph(defs):
    stages, edges = dvc_stage_graph(REPO)
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert {k.to_user_string() for k in keys} == stages
    assert {(p.to_user_string(), k.to_user_string()) for k in keys for p in graph.get(k).parent_keys} == edges


def test_each_stage_reads_the_params_dvc_reads_for_it():
    """load_pipeline parses params.yaml once for all stages: the values are DVC's own, stage by stage."""
    stages = load_pipeline(REPO)
    with Repo(str(REPO)) as repo:
        for stage in repo.index.stages:
            if getattr(stage, "cmd", None):
                dvc_reads = {Path(d.def_path).as_posix(): d.read_params() for d in stage.deps
                             if type(d).__name__ == "ParamsDependency"}
                assert stages[stage.name].params == dvc_reads, stage.name
    assert stages["train"].params["params.yaml"]["policy.k"] == repo_params()["policy"]["k"]


def test_every_asset_is_described_owned_grouped_and_versioned(defs):
    graph = defs.resolve_asset_graph()
    pipeline = load_pipeline(REPO)
    for key in graph.get_all_asset_keys():
        node, stage = graph.get(key), pipeline[key.to_user_string()]
        assert stage.cmd in node.description and node.group_name == "recmoo"
        assert node.owners == ["team:recmoo"] and "dvc" in node.kinds
        assert node.code_version == stage.code_version and len(node.code_version) == 16


def test_blocking_checks_exist_exactly_for_present_stages(defs):
    pipeline = load_pipeline(REPO)
    specs = [spec for checks in defs.asset_checks for spec in checks.check_specs]
    assert {spec.asset_key.to_user_string() for spec in specs} == set(BLOCKING_CHECKS) & set(pipeline)
    assert all(spec.blocking for spec in specs)
    assert "validate" in pipeline  # the data checks are always there


def test_jobs_sensor_and_schedule(defs):
    pipeline = load_pipeline(REPO)
    assert set(defs.resolve_job_def(PIPELINE_JOB).asset_layer.executable_asset_keys) == {
        AssetKey(name) for name in pipeline}
    # The sensor's run: everything downstream of the stages reading the incoming folder (ingest).
    job = defs.resolve_job_def(NEW_LOGS_JOB)
    new_logs = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert new_logs == set(downstream(pipeline, {"ingest"})) and "fetch" not in new_logs
    assert defs.resolve_sensor_def("incoming_logs").default_status.value == "RUNNING"
    schedule = defs.resolve_schedule_def("periodic_retrain")
    assert schedule.default_status.value == "STOPPED" and schedule.job_name == PIPELINE_JOB
    reprice = defs.resolve_schedule_def("periodic_reprice")
    assert reprice.default_status.value == "STOPPED" and reprice.job_name == REPRICE_JOB
    assert reprice.cron_schedule == repo_params()["orchestration"]["reprice_cron"]


def test_overlaps_and_downstream():
    assert overlaps("data/raw", "data/raw/ml-100k") and overlaps("data/raw/incoming", "data/raw")
    assert not overlaps("data/raw2", "data/raw") and not overlaps("data/features", "data/features.json")
    pipeline = load_pipeline(REPO)
    assert downstream(pipeline, {"validate"})[0] == "validate"
    assert "ingest" not in downstream(pipeline, {"validate"})


def test_code_version_follows_code_and_params_not_data(tmp_path):
    (tmp_path / "stage.py").write_text("x = 1\n")
    base = code_version(tmp_path, "recmoo x", {"params.yaml": {"a": 1}}, ["stage.py"])
    assert code_version(tmp_path, "recmoo x", {"params.yaml": {"a": 2}}, ["stage.py"]) != base
    (tmp_path / "stage.py").write_text("x = 2\n")
    assert code_version(tmp_path, "recmoo x", {"params.yaml": {"a": 1}}, ["stage.py"]) != base
    assert data_version({"a": "1", "b": "2"}) == data_version({"b": "2", "a": "1"})
    assert data_version({"a": "1", "b": "2"}) != data_version({"a": "1"})


def test_definitions_validate_from_the_project_root():
    """What `dagster definitions validate` does with pyproject's [tool.dagster], no flags."""
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_dvc_desc_becomes_the_asset_description(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    desc: Say hello to the world.\n"
                                       "    cmd: echo hi > hello.txt\n    outs:\n      - hello.txt\n")
    write_params(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    stage = load_pipeline(tmp_path)["hello"]
    assert stage.desc == "Say hello to the world." and stage.outs == ("hello.txt",)
    assert describe(stage).startswith("Say hello to the world.\n\nRuns `echo hi > hello.txt`")
