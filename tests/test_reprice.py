"""`recmoo reprice` and the Dagster job `reprice`: the served version's prices re-solved from the lists
it serves, gated, published without a retrain (recmoo_dag/reprice.py)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from recmoo_dag import store
from recmoo_dag.bundle import EXPOSURE_FILE, POLICY_FILE, read_bundle
from recmoo_dag.config import load_params
from recmoo_dag.defs.definitions import build_defs
from recmoo_dag.defs.reprice import REPRICE_JOB
from recmoo_dag.errors import InputError
from recmoo_dag.event_files import Event, batch_format
from recmoo_dag.events import trained_batches
from recmoo_dag.lineage import verify
from recmoo_dag.reprice import SERVED_EVENTS, reprice
from recmoo_dag.serve import version_summary
from tests.conftest import deep_update

pytestmark = pytest.mark.slow
BATCH = "events-20261206-120000-000000-p1"


@pytest.fixture
def deployed(repro_project, tmp_path, monkeypatch):
    """A copy of the shared project after `dvc repro` (v0001 served, a policy weighing prices), as cwd."""
    project = tmp_path / "project"
    shutil.copytree(repro_project, project, symlinks=True)
    monkeypatch.chdir(project)
    return project


def served_events(project: Path, n_users: int) -> None:
    """One event on a rarely trained item for each of the first `n_users` known users, in a batch
    file of the service's naming (what its event log rolls into data.incoming_dir)."""
    params = load_params(project / "params.yaml")
    bundle = read_bundle(store.version_dir(project / params.deploy.store))
    rare = bundle.item_ids[1:][np.argsort(bundle.train_counts[1:], kind="stable")[:5]]
    events = [Event(str(user), str(rare[row % len(rare)]), 1_900_000_000 + row, None)
              for row, user in enumerate(bundle.user_ids[:n_users])]
    batch_format(params.data).write(project / params.data.incoming_dir, BATCH, events)


def with_deploy(project: Path, deploy: dict):
    """The project's params with `deploy` merged over its deploy section."""
    raw = deep_update(yaml.safe_load((project / "params.yaml").read_text()), {"deploy": deploy})
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(project / "params.yaml")


def test_the_job_publishes_the_champion_with_prices_from_the_lists_it_serves(deployed):
    # What is under test is the publishing; whether 120 users' NDCG moves past the 2 % tolerance
    # against the champion is noise (the next test gates by a bound).
    params = with_deploy(deployed, {"tolerance": dict.fromkeys(("ndcg", "ild", "coverage", "novelty",
                                                                "personalization"), 1.0)})
    served_events(deployed, 30)
    assert build_defs(deployed).resolve_job_def(REPRICE_JOB).execute_in_process().success
    versions = deployed / params.deploy.store / "versions"
    assert store.current_version(params.deploy.store) == "v0002"
    old, new = versions / "v0001", versions / "v0002"
    for path in sorted(p.relative_to(old) for p in old.rglob("*") if p.is_file()):
        same = (old / path).read_bytes() == (new / path).read_bytes()
        assert same == (path.as_posix() not in (EXPOSURE_FILE, "manifest.json")), path  # no retrain, new prices
    manifest = store.read_manifest(params.deploy.store, "v0002")
    assert manifest["repriced"] == {"from": "v0001", "batches": [BATCH], "events": 30, "users_moved": 30}
    assert manifest["gate"]["promoted"] and manifest["identity"]["model_sha256"] == \
        store.read_manifest(params.deploy.store, "v0001")["identity"]["model_sha256"]
    link = next(link for link in manifest["lineage"] if link["name"] == SERVED_EVENTS)
    assert [Path(f).name for f in link["files"]] == [f"{BATCH}.inter"]
    assert BATCH not in trained_batches(manifest)  # still untrained: the service's sessions keep reading it
    assert verify(manifest, new, params.model_dump(by_alias=True, mode="json")) == []
    assert version_summary(manifest)["repriced"]["from"] == "v0001"  # what GET /version says
    assert json.loads((new / POLICY_FILE).read_text()) == json.loads((old / POLICY_FILE).read_text())
    last = store.read_decisions(params.deploy.store)[-1]
    assert last["event"] == "reprice" and last["served"] == "v0002" and last["users_moved"] == 30

    again = reprice(params)  # nothing new since: the same prices
    assert not again.verdict.decision.promoted and "nothing to publish" in again.verdict.decision.reason
    assert store.current_version(params.deploy.store) == "v0002" and not (versions / "v0003").exists()


def test_the_gate_keeps_the_champion_when_the_repriced_lists_miss_a_bound(deployed):
    params = with_deploy(deployed, {"min_ratio": {"ndcg": 1.5}})
    result = reprice(params)
    assert not result.verdict.decision.promoted and result.served == "v0001"
    assert "bounds fail on test" in result.verdict.decision.reason and "ndcg@10" in result.verdict.decision.reason
    assert store.list_versions(params.deploy.store) == ["v0001"]
    assert store.read_decisions(params.deploy.store)[-1]["promoted"] is False


def test_nothing_served_or_no_price_weights_is_refused_by_name(deployed):
    params = load_params("params.yaml")
    folder = store.version_dir(params.deploy.store, "v0001")
    policy = json.loads((folder / POLICY_FILE).read_text())
    policy["variables"].update(exposure_cap=0.0, exposure_floor=0.0)
    unpriced = Path(params.deploy.store) / "versions" / "v0002"
    shutil.copytree(folder, unpriced)
    (unpriced / POLICY_FILE).write_text(json.dumps(policy))
    store.switch(params.deploy.store, "v0002")
    with pytest.raises(InputError, match="v0002: its policy weighs no exposure prices"):
        reprice(params)

    shutil.rmtree(params.deploy.store)
    done = subprocess.run([sys.executable, "-m", "recmoo_dag.cli", "reprice"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1
    assert f"{params.deploy.store}: nothing is served" in done.stderr
