"""Periodic retraining: the whole pipeline on a cron from params (orchestration.schedule_*), off by default;
and periodic repricing of the served version (orchestration.reprice_*, recmoo_dag/reprice.py), off by default.

DVC re-runs only the stages whose deps or params changed since the last run, so a tick with nothing
new costs seconds; a tick after new data, code or params retrains and re-searches what they touch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import DefaultScheduleStatus, JobDefinition, ScheduleDefinition

from recmoo_dag.config import OrchestrationParams

if TYPE_CHECKING:  # what define_asset_job returns; not exported by dagster's top level
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def build_retrain_schedule(job: UnresolvedAssetJobDefinition,
                           settings: OrchestrationParams) -> ScheduleDefinition:
    return _cron("periodic_retrain", job, settings.schedule_cron, settings.schedule_enabled, "schedule", settings)


def build_reprice_schedule(job: JobDefinition, settings: OrchestrationParams) -> ScheduleDefinition:
    return _cron("periodic_reprice", job, settings.reprice_cron, settings.reprice_enabled, "reprice", settings)


def _cron(name: str, job: UnresolvedAssetJobDefinition | JobDefinition, cron: str, enabled: bool, params: str,
          settings: OrchestrationParams) -> ScheduleDefinition:
    """`job` at `cron` in orchestration.schedule_timezone, stopped unless orchestration.<params>_enabled."""
    return ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=settings.schedule_timezone,
        default_status=DefaultScheduleStatus.RUNNING if enabled else DefaultScheduleStatus.STOPPED,
        description=f"`{job.name}` at `{cron}` ({settings.schedule_timezone}); "
                    f"params orchestration.{params}_*; stopped unless {params}_enabled.",
    )
