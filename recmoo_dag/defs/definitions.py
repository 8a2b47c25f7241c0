"""The Dagster definitions, derived from dvc.yaml and params.yaml of one project folder.

The project is $RECMOO_PROJECT_DIR, else the working directory when it holds a dvc.yaml (how
`dagster dev` and `dagster definitions validate` run from the project root), else this checkout.
"""
from __future__ import annotations

import os
from pathlib import Path

from dagster import (
    AssetSelection,
    Definitions,
    ExecutorDefinition,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from recmoo_dag.config import load_params
from recmoo_dag.defs.assets import build_assets
from recmoo_dag.defs.checks import build_checks
from recmoo_dag.defs.pipeline import downstream, load_pipeline, readers_of
from recmoo_dag.defs.reprice import build_reprice_job
from recmoo_dag.defs.schedules import build_reprice_schedule, build_retrain_schedule
from recmoo_dag.defs.sensors import build_incoming_sensor, build_sync_sensor

PIPELINE_JOB = "pipeline"
NEW_LOGS_JOB = "new_logs"


def project_dir() -> Path:
    if env := os.environ.get("RECMOO_PROJECT_DIR"):
        return Path(env).resolve()
    if (Path.cwd() / "dvc.yaml").is_file():
        return Path.cwd().resolve()
    return Path(__file__).resolve().parents[2]


def build_defs(project: str | Path | None = None) -> Definitions:
    project = Path(project).resolve() if project else project_dir()
    stages = load_pipeline(project)
    params = load_params(project / "params.yaml")
    settings = params.orchestration

    everything = define_asset_job(
        PIPELINE_JOB, selection=AssetSelection.all(),
        description="Every stage of dvc.yaml, in order (DVC skips the unchanged ones).")
    reprice = build_reprice_job(project)
    jobs = [everything, reprice]
    sensors = [build_sync_sensor(project, stages, settings.sync_interval_seconds, settings.sync_enabled)]
    if readers := readers_of(stages, params.data.incoming_dir):
        new_logs = define_asset_job(
            NEW_LOGS_JOB, selection=AssetSelection.assets(*downstream(stages, readers)),
            description=f"The stages reading {params.data.incoming_dir} and everything downstream of them.")
        jobs.append(new_logs)
        sensors.append(build_incoming_sensor(project, new_logs, settings.sensor_interval_seconds,
                                             settings.sensor_enabled))
    return Definitions(
        assets=build_assets(project, stages, settings.remote),
        asset_checks=build_checks(project, stages),
        jobs=jobs,
        sensors=sensors,
        schedules=[build_retrain_schedule(everything, settings), build_reprice_schedule(reprice, settings)],
        executor=build_executor(settings.executor),
    )


def build_executor(name: str) -> ExecutorDefinition:
    """in_process: one step at a time in the run's own process (DVC allows one command per
    workspace); multiprocess: a process per step, DVC commands still one at a time (the workspace
    lock); k8s: a Kubernetes job per step (dagster-k8s), for orchestration.remote workers."""
    if name == "multiprocess":
        return multiprocess_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return in_process_executor
