"""One state for both entry points: what DVC did outside Dagster is recorded in Dagster.

`sync` runs on every tick of the `dvc_sync` sensor and when `recmoo ui` starts:
- every stage DVC considers up to date (neither in `dvc status` nor downstream of a stage that is)
  whose latest Dagster materialization disagrees with dvc.lock (another data version: its locked
  outs changed) or with today's definition (another code version) gets a runless materialization
  carrying what a Dagster run of it records: the stage's metadata, the data version from its locked
  hashes, today's code version and its inputs' data versions, tagged `recmoo/source: dvc` ("dvc
  repro outside Dagster"). One lock state is recorded once; a stage Dagster ran itself already
  agrees and is left alone.
- a stage DVC would re-run gets an observation quoting DVC's reason (which dep, param or out
  changed), once per reason; Dagster itself marks it and what is downstream stale through the
  chained code versions (pipeline.load_pipeline), so "Materialize unsynced" runs exactly those.
- when the store's CURRENT names another version than the last one recorded on `deploy` (a
  rollback, or a deploy run from the command line), an observation on `deploy` names it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetKey, AssetMaterialization, AssetObservation, DagsterInstance, MetadataValue
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)

from recmoo_dag import store
from recmoo_dag.config import load_params
from recmoo_dag.defs.dvc_runner import workspace_lock
from recmoo_dag.defs.pipeline import Stage, data_version, dvc_status, lock_entry, locked_outs, would_rerun
from recmoo_dag.defs.reports import stage_metadata

SOURCE_TAG = "recmoo/source"
FROM_DVC = "dvc"  # the work was done by `dvc repro` (or another DVC command) outside Dagster
REASON = "dvc status"
SERVED = "deploy.version"  # the served version, as deploy's report and the rollback observations name it


@dataclass
class Synced:
    materialized: list[str] = field(default_factory=list)  # stages given a runless materialization
    stale: dict[str, str] = field(default_factory=dict)  # stages DVC would re-run -> why
    observed: list[str] = field(default_factory=list)  # stages given an observation
    busy: bool = False  # another DVC command held the workspace: nothing was read

    def describe(self) -> str:
        if self.busy:
            return "a DVC command holds the workspace; next tick"
        parts = [f"recorded DVC's work on {', '.join(self.materialized)}" if self.materialized else
                 "Dagster agrees with dvc.lock"]
        if self.stale:
            parts.append("DVC would re-run " + ", ".join(self.stale))
        return "; ".join(parts)


def sync(instance: DagsterInstance, project: Path, stages: dict[str, Stage]) -> Synced:
    """Bring `instance` up to date with the DVC workspace `project` (see the module docstring)."""
    from dvc.lock import LockError  # imported here: loading the definitions stays cheap

    result = Synced()
    # Reading dvc.lock while a step's `dvc repro` writes it would record half a state.
    with workspace_lock(project, wait=False) as free:
        if not free:
            result.busy = True
            return result
        try:
            reasons = dvc_status(project)
        except LockError:  # a `dvc repro` started by hand holds the repository
            result.busy = True
            return result
        stale = set(would_rerun(stages, set(reasons)))
        for name, stage in stages.items():  # upstream first: inputs are recorded before their readers
            if name in stale:
                result.stale[name] = reasons.get(name) or f"upstream {', '.join(sorted(set(stage.upstream) & stale))}"
                if _observe_reason(instance, name, result.stale[name]):
                    result.observed.append(name)
            elif _materialize_if_behind(instance, project, stage, stages):
                result.materialized.append(name)
        if "deploy" in stages and _observe_served(instance, project):
            result.observed.append("deploy")
    return result


def _materialize_if_behind(instance: DagsterInstance, project: Path, stage: Stage, stages: dict[str, Stage]) -> bool:
    hashes = locked_outs(project, stage.name)
    if not hashes or not all((project / out).exists() for out in hashes):
        return False  # never run, or its outputs are gone: nothing DVC did to record
    version = data_version(hashes)
    latest = instance.get_latest_materialization_event(AssetKey(stage.name))
    tags = latest.asset_materialization.tags if latest else {}
    if tags.get(DATA_VERSION_TAG) == version and tags.get(CODE_VERSION_TAG) == stage.code_version:
        return False
    provenance = {CODE_VERSION_TAG: stage.code_version, DATA_VERSION_TAG: version,
                  DATA_VERSION_IS_USER_PROVIDED_TAG: "true", SOURCE_TAG: FROM_DVC}
    for parent in stage.upstream:
        record = instance.get_latest_data_version_record(AssetKey(parent))
        provenance[get_input_data_version_tag(AssetKey(parent))] = data_version(locked_outs(project, parent))
        provenance[get_input_event_pointer_tag(AssetKey(parent))] = str(record.storage_id) if record else "NULL"
    metadata = {**stage_metadata(project, stage.outs, hashes, lock_entry(project, stage.name)),
                "source": MetadataValue.text("dvc repro outside Dagster (recorded from dvc.lock)")}
    instance.report_runless_asset_event(AssetMaterialization(stage.name, metadata=metadata, tags=provenance))
    return True


def _observe_reason(instance: DagsterInstance, name: str, reason: str) -> bool:
    if _latest_observation(instance, name).get(REASON) == reason:
        return False
    instance.report_runless_asset_event(AssetObservation(
        name, metadata={REASON: MetadataValue.text(reason), "source": MetadataValue.text("dvc status")},
        tags={SOURCE_TAG: FROM_DVC}))
    return True


def _observe_served(instance: DagsterInstance, project: Path) -> bool:
    store_dir = project / load_params(project / "params.yaml").deploy.store
    served = store.current_version(store_dir)
    if served is None:
        return False
    recorded = _latest_deploy_record(instance)
    if recorded in (served, None):
        return False
    events = store.read_decisions(store_dir)
    how = "rollback" if events and events[-1].get("event") == "rollback" else "served version changed"
    instance.report_runless_asset_event(AssetObservation(
        "deploy", metadata={SERVED: MetadataValue.text(served), "event": MetadataValue.text(f"{how} (was {recorded})")},
        tags={SOURCE_TAG: FROM_DVC}))
    return True


def _latest_deploy_record(instance: DagsterInstance) -> str | None:
    """The served version named by the newest event on `deploy`: its materialization or an observation."""
    key = AssetKey("deploy")
    records = instance.fetch_materializations(key, limit=1).records + instance.fetch_observations(key, limit=1).records
    for record in sorted(records, key=lambda r: -r.storage_id):
        event = record.asset_materialization or record.asset_observation
        if SERVED in event.metadata:
            return str(event.metadata[SERVED].value)
    return None


def _latest_observation(instance: DagsterInstance, name: str) -> dict:
    records = instance.fetch_observations(AssetKey(name), limit=1).records
    return {k: v.value for k, v in records[0].asset_observation.metadata.items()} if records else {}
