"""One Dagster asset per DVC stage, named like the stage; materializing it runs that stage with DVC.

`dvc repro --single-item <stage>` keeps DVC the one executor and cache: the same `recmoo <stage>`
command runs, a stage whose deps and params are unchanged is skipped (and reports the same data
version), and dvc.lock stays true after a materialization from the UI. Dagster decides *when* and
*what* to run (the selection, sensors, schedules); it never re-implements a stage.
"""

from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recmoo_dag.defs.dvc_runner import run_dvc_stage
from recmoo_dag.defs.pipeline import Stage, data_version, locked_outs
from recmoo_dag.defs.reports import stage_metadata

GROUP = "recmoo"
OWNERS = ["team:recmoo"]
DVC_POOL = "dvc_workspace"  # limit 1 in .dagster_home/dagster.yaml: one DVC command at a time (dvc_runner.py)


def build_assets(project: Path, stages: dict[str, Stage]) -> list[AssetsDefinition]:
    return [stage_asset(project, stage) for stage in stages.values()]


def stage_asset(project: Path, stage: Stage) -> AssetsDefinition:
    @asset(
        name=stage.name,
        deps=list(stage.upstream),
        description=describe(stage),
        group_name=GROUP,
        owners=OWNERS,
        kinds={"dvc", "python"},
        code_version=stage.code_version,
        pool=DVC_POOL,
        metadata={"dvc/cmd": MetadataValue.text(stage.cmd), "dvc/outs": MetadataValue.json(list(stage.outs)),
                  "dvc/deps": MetadataValue.json(list(stage.deps))},
    )
    def _stage(context: AssetExecutionContext) -> MaterializeResult:
        run_dvc_stage(context, project, stage.name)
        hashes = locked_outs(project, stage.name)
        return MaterializeResult(metadata=stage_metadata(project, stage.outs, hashes),
                                 data_version=DataVersion(data_version(hashes)))

    return _stage


def describe(stage: Stage) -> str:
    lines = [stage.desc or f"DVC stage `{stage.name}`.", "",
             f"Runs `{stage.cmd}` through `dvc repro --single-item {stage.name}`.", "",
             "- reads: " + ", ".join(f"`{d}`" for d in stage.deps),
             "- writes: " + ", ".join(f"`{o}`" for o in stage.outs)]
    return "\n".join(lines)
