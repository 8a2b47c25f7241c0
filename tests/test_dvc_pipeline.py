"""The DVC pipeline on a synthetic project: runs, caches, and re-runs only what params touch."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, deep_update, write_params

pytestmark = pytest.mark.slow

SYNTHETIC = {"data": {"source": "synthetic", "synthetic": {"users": 150, "items": 90, "events": 5000}}}


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def dvc_project(tmp_path):
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "recmoo_dag", tmp_path / "recmoo_dag", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(tmp_path, SYNTHETIC)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    return tmp_path


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_repro_caches_and_reruns_only_touched_stages(dvc_project):
    first = dvc(dvc_project, "repro", "features")
    assert ran_stages(first) == {"fetch", "ingest", "validate", "features"}
    built = digests(dvc_project / "data" / "features")
    assert {"sequences.parquet", "users.parquet", "items.parquet", "meta.json"} <= set(built)

    assert ran_stages(dvc(dvc_project, "repro", "features")) == set()
    subprocess.run(["git", "add", "-A"], cwd=dvc_project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"],
                   cwd=dvc_project, check=True)

    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["features"]["min_item_interactions"] = 3
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(dvc_project, "repro", "features")) == {"features"}
    assert "features.min_item_interactions" in dvc(dvc_project, "params", "diff")
    assert "n_users" in dvc(dvc_project, "metrics", "show")

    # Same inputs, fresh run: byte-identical stage outputs.
    params["features"]["min_item_interactions"] = 5
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(dvc_project, "repro", "--force", "features")
    assert digests(dvc_project / "data" / "features") == built


def test_any_list_length_works_end_to_end(repro_project, tmp_path):
    """policy.k: 5 through tuning, training, search, deploy and the service: objectives, reports and
    lists at 5."""
    project = tmp_path / "k5"
    shutil.copytree(repro_project, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    deep_update(params, {"policy": {"k": 5}, "deploy": {"min_ratio": {"ndcg": 0.9, "ild": 1.0}}})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(dvc(project, "repro"))
    assert ran == {"tune", "train", "candidates", "exposure", "search", "deploy"}  # every stage reading policy.k, and after
    assert "ndcg@5" in json.loads((project / "metrics" / "train.json").read_text())["model"]["test"]
    deployed = json.loads((project / "metrics" / "deploy.json").read_text())
    assert deployed["version"] is not None, deployed["gate"]  # the k = 10 champion kept, or a k = 5 policy promoted
    figures = {"ndcg@5", "ild@5", "coverage@5", "novelty", "personalization", "exposure_gini@5", "tail_share@5"}
    assert set(deployed["test"]["deployed"]) == figures | {f"{key}_ci" for key in figures}
    assert json.loads((project / "metrics" / "search.json").read_text())["front_size"] > 0
    assert pd.read_csv(project / "reports" / "search" / "front.csv")["pool"].min() >= 5
    served = subprocess.run([sys.executable, "-m", "recmoo_dag.cli", "recommend", "--user", "1", "-k", "5"],
                            cwd=project, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            check=False)
    assert served.returncode == 0, served.stderr
    assert len(json.loads(served.stdout)["items"]) == 5
