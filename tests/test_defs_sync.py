"""One state for both entry points: `dvc repro` run from a terminal shows in Dagster, and Dagster
shows as stale what DVC would re-run (recmoo_dag/defs/sync.py), on a tiny real DVC project."""
from __future__ import annotations

import shutil

import pytest
import yaml
from dagster import AssetKey, DagsterInstance
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import DATA_VERSION_TAG, CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from recmoo_dag import store
from recmoo_dag.defs import build_defs
from recmoo_dag.defs.pipeline import data_version, load_pipeline, locked_outs
from recmoo_dag.defs.sync import SOURCE_TAG, sync
from tests.defs_support import dvc

pytestmark = pytest.mark.slow


@pytest.fixture
def project(repro_project, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(repro_project, copy, symlinks=True)
    return copy


def stale_statuses(instance: DagsterInstance, project) -> dict[str, StaleStatus]:
    graph = build_defs(project).resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance, graph, loading_context=view)
    return {name: resolver.get_status(AssetKey(name)) for name in load_pipeline(project)}


def materializations(instance: DagsterInstance, name: str) -> list:
    return instance.fetch_materializations(AssetKey(name), limit=100).records


def set_param(project, section: str, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_terminal_run_appears_once_with_its_locked_hashes(project):
    stages = load_pipeline(project)
    with DagsterInstance.ephemeral() as instance:
        first = sync(instance, project, stages)
        assert first.materialized == list(stages) and not first.stale
        for name, stage in stages.items():
            (record,) = materializations(instance, name)
            event = record.asset_materialization
            assert record.run_id == "" and event.tags[SOURCE_TAG] == "dvc"
            assert event.tags[DATA_VERSION_TAG] == data_version(locked_outs(project, name))
            assert event.tags["dagster/code_version"] == stage.code_version
            for out, md5 in locked_outs(project, name).items():  # the same metadata a Dagster run records
                assert f"`{md5}`" in event.metadata["dvc/outs"].value, (name, out)
        assert materializations(instance, "train")[0].asset_materialization.metadata["train.generator"]
        assert set(stale_statuses(instance, project).values()) == {StaleStatus.FRESH}
        again = sync(instance, project, stages)  # one lock state is recorded once
        assert not again.materialized and not again.observed
        assert all(len(materializations(instance, name)) == 1 for name in stages)


def test_a_changed_param_marks_its_stage_and_what_follows_stale_until_dvc_reruns_them(project):
    with DagsterInstance.ephemeral() as instance:
        sync(instance, project, load_pipeline(project))
        set_param(project, "search", "mmr_pool", 10)
        stages = load_pipeline(project)
        changed = sync(instance, project, stages)
        assert list(changed.stale) == ["search", "deploy"]
        assert changed.stale["search"] == "changed deps: params.yaml search (modified)"
        observed = instance.fetch_observations(AssetKey("search"), limit=1).records[0].asset_observation
        assert observed.metadata["dvc status"].value == changed.stale["search"]
        statuses = stale_statuses(instance, project)
        assert {name for name, status in statuses.items() if status == StaleStatus.STALE} == set(changed.stale)
        assert not sync(instance, project, stages).observed  # one observation per reason

        dvc(project, "repro")  # from the terminal again: DVC re-runs them, Dagster records it
        caught_up = sync(instance, project, stages)
        assert caught_up.materialized == ["search", "deploy"] and not caught_up.stale
        assert set(stale_statuses(instance, project).values()) == {StaleStatus.FRESH}


def test_a_stage_dagster_ran_itself_is_not_reported_again(project):
    stages = load_pipeline(project)
    with DagsterInstance.ephemeral() as instance:
        result = build_defs(project).resolve_job_def("pipeline").execute_in_process(instance=instance,
                                                                                    raise_on_error=False)
        assert result.success
        before = {name: len(materializations(instance, name)) for name in stages}
        assert not sync(instance, project, stages).materialized
        assert {name: len(materializations(instance, name)) for name in stages} == before


def test_a_rollback_shows_as_an_event_on_deploy_naming_the_served_version(project):
    with DagsterInstance.ephemeral() as instance:
        sync(instance, project, load_pipeline(project))
        root = project / "deployments"
        served = store.current_version(root)
        # Another choice that the gate accepts: a second version.
        set_param(project, "deploy", "maximize", "novelty")
        set_param(project, "deploy", "min_ratio", {"ndcg": 0.0, "ild": 0.0})
        set_param(project, "deploy", "tolerance", dict.fromkeys(("ndcg", "ild", "novelty", "coverage",
                                                                  "personalization"), 1.0))
        dvc(project, "repro")
        stages = load_pipeline(project)
        sync(instance, project, stages)
        newest = store.current_version(root)
        assert newest != served
        store.rollback(root, served)
        rolled = sync(instance, project, stages)
        assert rolled.observed == ["deploy"]
        event = instance.fetch_observations(AssetKey("deploy"), limit=1).records[0].asset_observation
        assert event.metadata["deploy.version"].value == served
        assert event.metadata["event"].value == f"rollback (was {newest})"
        assert not sync(instance, project, stages).observed
