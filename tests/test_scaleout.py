"""Beyond one machine: DVC's cache in an S3-API remote, stages materialized by different workers
(workspaces) of one Dagster instance, that instance on PostgreSQL, and the executors for a cluster.
Real servers on loopback (moto's S3 server, a PostgreSQL server in a temp folder); multi-node
training is tests/test_train.py::test_two_nodes_with_torchrun_train_one_model_as_good_as_one_process."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterEventType, DagsterInstance, validate_run_config

from recmoo_dag import store
from recmoo_dag.defs import build_defs
from recmoo_dag.defs.pipeline import load_pipeline
from tests.defs_support import WALL_CLOCK_KEYS, artifact_digests, dvc, make_project
from tests.scaleout_support import POSTGRES_INSTANCE, add_remote, postgres_server, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.scaleout]
UP_TO_TRAIN = ["fetch", "ingest", "validate", "features", "item_text", "tune", "train"]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def outs(project: Path) -> list[str]:
    return [out for stage in load_pipeline(project).values() for out in stage.outs]


def pushed_run(repro_project: Path, project: Path, s3) -> Path:
    """A copy of the project that ran, committed to git with the remote configured, its outs pushed."""
    shutil.copytree(repro_project, project, symlinks=True)
    add_remote(dvc, project, s3)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a run")
    dvc(project, "push")
    return project


def test_push_then_pull_in_a_fresh_clone_restores_every_artifact(repro_project, tmp_path):
    with s3_server() as s3:
        project = pushed_run(repro_project, tmp_path / "a", s3)
        assert "secret_access_key" not in (project / ".dvc" / "config").read_text()  # local config only
        listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="cache/")
        assert listed["KeyCount"] > 10

        clone = tmp_path / "b"
        subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
        add_remote(dvc, clone, s3)
        dvc(clone, "pull")
        assert artifact_digests(clone, outs(project)) == artifact_digests(project, outs(project))
        assert "Cache and remote 'shared' are in sync" in dvc(clone, "status", "--cloud")
        assert "Data and pipelines are up to date" in dvc(clone, "status")


def test_an_object_altered_on_the_remote_is_refused_by_pull_and_never_deployed(repro_project, tmp_path):
    """Someone with write access to the bucket swaps the model's weights. With the README's
    `verify true`, `dvc pull` re-hashes what it downloads and refuses the object; a clone configured
    without it gets the altered file with `dvc status` clean (DVC trusts the remote), and then
    `recmoo deploy` refuses it against dvc.lock's md5."""
    weights = "models/model/model.safetensors"
    with s3_server() as s3:
        project = pushed_run(repro_project, tmp_path / "a", s3)
        md5 = hashlib.md5((project / weights).read_bytes()).hexdigest()
        key = f"cache/files/md5/{md5[:2]}/{md5[2:]}"
        original = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=original[:-8] + bytes(8))

        clone = tmp_path / "b"
        subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
        add_remote(dvc, clone, s3)
        refused = dvc(clone, "pull", check=False)
        assert f"Checkout failed for following targets:\n{Path(weights).parent}" in refused, refused
        assert not (clone / weights).exists() or (clone / weights).read_bytes() == original

        dvc(clone, "remote", "modify", "shared", "verify", "false")
        dvc(clone, "pull")
        assert (clone / weights).read_bytes() == original[:-8] + bytes(8)
        assert "Data and pipelines are up to date" in dvc(clone, "status")  # DVC trusts what it pulled
        versions = store.list_versions(clone / "deployments")  # committed by the `git add -A` above
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        deploy = subprocess.run(["recmoo", "deploy"], cwd=clone, env=env, capture_output=True, text=True, check=False)
        assert deploy.returncode == 1, deploy.stdout + deploy.stderr
        assert deploy.stderr.startswith("recmoo deploy: error: refusing to deploy: models/model (stage train): its "
                                        "bytes are not those dvc.lock's md5"), deploy.stderr
        assert store.list_versions(clone / "deployments") == versions


def test_two_workspaces_share_one_run_through_the_remote_and_the_instance(repro_project, tmp_path):
    """Workspace A (a project that ran before) materializes up to train and pushes; workspace B, a
    clean clone sharing only the remote and the Dagster instance, pulls what its stages read and runs
    the rest for real: the bytes of a one-workspace run."""
    with s3_server() as s3, DagsterInstance.ephemeral() as instance:
        a = tmp_path / "a"
        shutil.copytree(repro_project, a, symlinks=True)
        params = yaml.safe_load((a / "params.yaml").read_text())
        params["orchestration"]["remote"] = "shared"  # read by no stage: DVC still finds A up to date
        (a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        add_remote(dvc, a, s3)
        git(a, "add", "-A")
        git(a, "commit", "-qm", "the project")
        b = tmp_path / "b"
        subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
        add_remote(dvc, b, s3)

        job = lambda project: build_defs(project).resolve_implicit_global_asset_job_def()
        first = job(a).execute_in_process(instance=instance, asset_selection=[AssetKey(s) for s in UP_TO_TRAIN])
        assert first.success
        rest = [s for s in load_pipeline(b) if s not in UP_TO_TRAIN]
        second = job(b).execute_in_process(instance=instance, asset_selection=[AssetKey(s) for s in rest])
        assert second.success
        validated = [out for out in load_pipeline(b)["validate"].outs if not out.startswith("reports/")]
        assert not any((b / out).exists() for out in validated)  # B pulled what its stages read, nothing more

        theirs = [out for name in rest for out in load_pipeline(b)[name].outs]
        assert artifact_digests(b, theirs) == artifact_digests(repro_project, theirs)
        for project, names in ((a, UP_TO_TRAIN), (b, rest)):
            status = dvc(project, "status", *names)
            assert "up to date" in status.lower(), (project.name, status)
    assert {"seconds", "train_seconds"} <= WALL_CLOCK_KEYS  # what the digests leave out


def test_the_dagster_instance_on_postgres_keeps_runs_lineage_and_sensor_cursors(repro_project, tmp_path, monkeypatch):
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    project = tmp_path / "project"  # up to date: every asset's DVC stage is a quick no-op
    shutil.copytree(repro_project, project, symlinks=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(POSTGRES_INSTANCE)
    monkeypatch.setenv("RECMOO_PROJECT_DIR", str(project))
    with postgres_server() as url:
        monkeypatch.setenv("RECMOO_DAGSTER_PG_URL", url)
        with DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            result = build_defs(project).resolve_job_def("pipeline").execute_in_process(instance=instance)
            assert result.success
            incoming = project / "data" / "raw" / "incoming"
            incoming.mkdir(parents=True)
            shutil.copy(next((project / "data" / "raw" / "ml-100k").glob("*.inter")), incoming / "batch.inter")
            target = ModuleTarget(module_name="recmoo_dag.defs", attribute="defs", working_directory=str(project),
                                  location_name="recmoo")
            with create_test_daemon_workspace_context(target, instance) as workspace:
                for _ in range(2):  # a file counts once its size held for two ticks
                    list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))
            run_id = result.run_id

        with DagsterInstance.from_config(str(home)) as restarted:  # a new process would see the same
            assert restarted.get_run_by_id(run_id).is_success
            for name in load_pipeline(project):
                assert restarted.get_latest_materialization_event(AssetKey(name)).run_id == run_id
            cursors = {state.name: state.instigator_data.cursor for state in restarted.all_instigator_state()
                       if state.instigator_data is not None}
            assert "batch.inter" in (cursors.get("incoming_logs") or ""), cursors


def test_executors_for_a_cluster_are_valid_job_definitions(tmp_path):
    """multiprocess locally; a Kubernetes job per step (dagster-k8s), validated without a cluster."""
    project = make_project(tmp_path / "project", {"orchestration": {"executor": "k8s", "remote": "shared"}})
    job = build_defs(project).resolve_job_def("pipeline")
    assert job.executor_def.name == "k8s"
    config = {"execution": {"config": {"job_namespace": "recmoo", "image_pull_policy": "IfNotPresent",
                                       "env_secrets": ["recmoo-dvc-remote"]}}}
    resolved = validate_run_config(job, config)["execution"]["k8s"]
    assert resolved["job_namespace"] == "recmoo" and resolved["env_secrets"] == ["recmoo-dvc-remote"]
    with pytest.raises(Exception, match="job_namespace"):  # a wrong config is refused before any cluster
        validate_run_config(job, {"execution": {"config": {"job_namespace": 42}}})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["orchestration"]["executor"] = "multiprocess"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert build_defs(project).resolve_job_def("pipeline").executor_def.name == "multiprocess"


def test_the_multiprocess_executor_runs_each_stage_in_its_own_process(repro_project, tmp_path):
    """The pipeline job launched as `dagster job execute` would on a worker, from the search on: a
    process per step, a search param changed so that search and deploy re-run for real in those
    processes, one DVC command at a time (the workspace lock); the workspace ends up to date."""
    project = tmp_path / "project"
    shutil.copytree(repro_project, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["orchestration"]["executor"] = "multiprocess"
    params["search"]["n_evals"] += 24  # a search param: search and deploy are stale
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "RECMOO_PROJECT_DIR": str(project)}
    proc = subprocess.run([sys.executable, "-m", "dagster", "job", "execute", "-m", "recmoo_dag.defs",
                           "-j", "pipeline", "-o", "search*"], cwd=project, env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.is_success
        starts = [record.event_log_entry for record in instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.STEP_START).records]
    stages = ["search", "deploy"]
    pids = {entry.step_key: entry.dagster_event.pid for entry in starts if entry.step_key in load_pipeline(project)}
    assert sorted(pids) == sorted(stages)
    assert len(set(pids.values())) == len(stages)  # each stage in a process of its own
    assert "Data and pipelines are up to date" in dvc(project, "status")
    locked = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["search"]["params"]["params.yaml"]
    assert locked["search"]["n_evals"] == params["search"]["n_evals"]  # search re-ran in its step process
