"""The `reprice` job: `recmoo reprice` (recmoo_dag/reprice.py) in the project, as a Dagster op.

Not an asset: it reads the pipeline's outputs but writes only the deployed store, operational state
that no stage owns (like a rollback). It holds the workspace lock while it reads them, so a retrain
running in Dagster never hands it a half-written features or model folder.
"""
from pathlib import Path

from dagster import Failure, JobDefinition, MetadataValue, OpExecutionContext, job, op

from recmoo_dag.defs.dvc_runner import stream, workspace_lock

REPRICE_JOB = "reprice"


def build_reprice_job(project: Path) -> JobDefinition:
    @op(name="reprice_served_version",
        description="Re-solve the served version's exposure prices from the lists it serves; publish if the gate promotes.")
    def reprice_served_version(context: OpExecutionContext) -> None:
        with workspace_lock(project, on_wait=lambda: context.log.info("waiting for a DVC command in this workspace")):
            code, output = stream(context, ["recmoo", "reprice"], project)
        if code != 0:
            raise Failure(description=f"recmoo reprice failed (exit {code}):\n{output}",
                          metadata={"output": MetadataValue.md(f"```\n{output}\n```")})

    @job(name=REPRICE_JOB, description="The served version with re-solved exposure prices, gated like a deploy.")
    def reprice():
        reprice_served_version()

    return reprice
