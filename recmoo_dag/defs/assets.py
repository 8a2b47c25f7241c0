"""One Dagster asset per DVC stage, named like the stage; materializing it runs that stage with DVC.

`dvc repro --single-item <stage>` keeps DVC the one executor and cache: the same `recmoo <stage>`
command runs, a stage whose deps and params are unchanged is skipped (and reports the same data
version), and dvc.lock stays true after a materialization from the UI. Dagster decides *when* and
*what* to run (the selection, sensors, schedules); it never re-implements a stage.
"""

from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recmoo_dag.defs.dvc_runner import run_dvc, run_dvc_stage
from recmoo_dag.defs.pipeline import Stage, data_version, lock_entry, locked_outs, merge_lock_entries
from recmoo_dag.defs.reports import LOCK_KEY, stage_metadata

GROUP = "recmoo"
OWNERS = ["team:recmoo"]
DVC_POOL = "dvc_workspace"  # limit 1 in .dagster_home/dagster.yaml: one DVC command at a time (dvc_runner.py)


def build_assets(project: Path, stages: dict[str, Stage], remote: str | None = None) -> list[AssetsDefinition]:
    return [stage_asset(project, stage, remote, ancestors(stages, stage.name)) for stage in stages.values()]


def ancestors(stages: dict[str, Stage], name: str) -> list[str]:
    """Every stage upstream of `name`, nearest last (pipeline order)."""
    found, todo = set(), list(stages[name].upstream)
    while todo:
        parent = todo.pop()
        if parent not in found:
            found.add(parent)
            todo.extend(stages[parent].upstream)
    return [stage for stage in stages if stage in found]


def stage_asset(project: Path, stage: Stage, remote: str | None = None,
                lineage: list[str] | None = None) -> AssetsDefinition:
    """The asset of one DVC stage. With `remote` (a DVC remote's name, orchestration.remote), any
    worker can materialize it: the dvc.lock entries of the stages upstream (`lineage`) come from
    their latest Dagster materializations, the outs it reads (its parents') are pulled from the
    remote, and its own outs are pushed back."""
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
        if remote is not None:
            entries = {name: upstream_lock(context, name) for name in lineage or stage.upstream}
            merge_lock_entries(project, {name: entry for name, entry in entries.items() if entry})
            parents = [parent for parent in stage.upstream if entries.get(parent)]
            if parents:  # a bare `dvc pull` would pull every stage's outs
                run_dvc(context, project, ["pull", "--remote", remote, *parents])
        run_dvc_stage(context, project, stage.name)
        if remote is not None:
            run_dvc(context, project, ["push", "--remote", remote, stage.name])
        hashes = locked_outs(project, stage.name)
        return MaterializeResult(metadata=stage_metadata(project, stage.outs, hashes, lock_entry(project, stage.name)),
                                 data_version=DataVersion(data_version(hashes)))

    return _stage


def describe(stage: Stage) -> str:
    lines = [stage.desc or f"DVC stage `{stage.name}`.", "",
             f"Runs `{stage.cmd}` through `dvc repro --single-item {stage.name}`.", "",
             "- reads: " + ", ".join(f"`{d}`" for d in stage.deps),
             "- writes: " + ", ".join(f"`{o}`" for o in stage.outs)]
    return "\n".join(lines)


def upstream_lock(context: AssetExecutionContext, parent: str) -> dict:
    """The dvc.lock entry recorded with `parent`'s latest materialization, wherever it ran."""
    event = context.instance.get_latest_materialization_event(AssetKey(parent))
    if event is None or LOCK_KEY not in event.asset_materialization.metadata:
        return {}
    return event.asset_materialization.metadata[LOCK_KEY].value
