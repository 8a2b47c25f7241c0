"""Periodic retraining: the whole pipeline on a cron from params (orchestration.schedule_*), off by default.

DVC re-runs only the stages whose deps or params changed since the last run, so a tick with nothing
new costs seconds; a tick after new data, code or params retrains and re-searches what they touch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import DefaultScheduleStatus, ScheduleDefinition

from recmoo_dag.config import OrchestrationParams

if TYPE_CHECKING:  # what define_asset_job returns; not exported by dagster's top level
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def build_retrain_schedule(job: UnresolvedAssetJobDefinition,
                           settings: OrchestrationParams) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="periodic_retrain",
        job=job,
        cron_schedule=settings.schedule_cron,
        execution_timezone=settings.schedule_timezone,
        default_status=(DefaultScheduleStatus.RUNNING if settings.schedule_enabled
                        else DefaultScheduleStatus.STOPPED),
        description=f"`{job.name}` at `{settings.schedule_cron}` ({settings.schedule_timezone}); "
                    "params orchestration.schedule_*; stopped unless schedule_enabled.",
    )
