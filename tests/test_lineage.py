"""Lineage manifests: what a deployed version records, `recmoo lineage` and `--verify`."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from recmoo_dag import store
from recmoo_dag.cli import main
from recmoo_dag.lineage import dvc_lock_hashes, params_digest
from recmoo_dag.stages import deploy
from tests.deploy_support import base_project, copy_project, perturb_model

CHAIN = ["raw logs", "ingested", "validated", "features", "model", "candidates", "front"]

DVC_LOCK = """schema: '2.0'
stages:
  features:
    cmd: recmoo features
    deps:
    - path: data/validated/interactions.parquet
      hash: md5
      md5: 0123456789abcdef0123456789abcdef
    outs:
    - path: data/features
      hash: md5
      md5: fedcba9876543210fedcba9876543210.dir
"""


@pytest.fixture
def deployed(tmp_path, tmp_path_factory, monkeypatch):
    """A deployed tiny project (with a dvc.lock to quote) as the working directory."""
    base = base_project(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    params = copy_project(base, tmp_path, {"deploy": {"tolerance": {"ndcg": 1.0, "ild": 1.0, "coverage": 1.0,
                                                                    "novelty": 1.0, "personalization": 1.0}}})
    Path("dvc.lock").write_text(DVC_LOCK)
    deploy.main(params)
    return params


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_manifest_records_the_whole_chain_params_code_and_environment(deployed):
    params = deployed
    manifest = store.read_manifest(params.deploy.store)
    assert [link["name"] for link in manifest["lineage"]] == CHAIN
    links = {link["name"]: link for link in manifest["lineage"]}
    raw = links["raw logs"]["files"]
    assert raw and all(info["sha256"] == sha256(path) for path, info in raw.items())
    assert links["model"]["files"]["models/model/model.safetensors"]["sha256"] == sha256(
        "models/model/model.safetensors")
    assert set(links["features"]["files"]) == {f"data/features/{n}" for n in
                                               ("catalog.parquet", "items.parquet", "meta.json", "sequences.parquet",
                                                "users.parquet")}
    assert links["front"]["files"]["reports/search/front.csv"]["sha256"] == sha256("reports/search/front.csv")
    assert manifest["params"] == params.model_dump(by_alias=True, mode="json")
    assert manifest["params_sha256"] == params_digest(manifest["params"])
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert manifest["environment"]["packages"]["torch"] and manifest["environment"]["python"].startswith("3.")
    assert manifest["dvc_lock"]["features"]["outs"] == {"data/features": "fedcba9876543210fedcba9876543210.dir"}
    assert manifest["created_at"].endswith("+00:00")
    # The version's own copies are hashed too: the served model is byte-identical to the trained one.
    assert manifest["deployed_files"]["model/model.safetensors"]["sha256"] == sha256("models/model/model.safetensors")


def test_lineage_prints_the_chain_from_policy_to_raw_files(deployed, capsys):
    assert main(["lineage"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deployed v0001")
    positions = [out.index(f"<- {name}") for name in reversed(CHAIN)]
    assert positions == sorted(positions)  # front first, raw files last
    assert "data/raw/ml-100k/synthetic.inter" in out and "(dvc.lock: data/features md5 fedcba987654)" in out
    assert "(this version is being served)" in out


def test_verify_passes_then_names_every_artifact_that_changed(deployed, capsys):
    assert main(["lineage", "--verify"]) == 0
    assert "every hash still on disk matches v0001" in capsys.readouterr().out

    with open("data/features/meta.json", "a") as handle:
        handle.write(" ")
    Path("data/features/extra.parquet").write_bytes(b"new")
    folder = store.version_dir("deployments")
    (folder / "policy.json").write_text((folder / "policy.json").read_text().replace("0", "1", 1))
    Path("data/interactions.parquet").unlink()  # deleted: nothing on disk to contradict the record
    assert main(["lineage", "--verify"]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert "3 artifact file(s) no longer match v0001" in err
    assert "MISMATCH deployed v0001: " in err and "policy.json changed" in err
    assert "MISMATCH features (features): data/features/meta.json changed (sha256 differs)" in err
    assert "MISMATCH features (features): data/features/extra.parquet is new, not in the manifest" in err
    assert "not on disk any more (not checked): data/interactions.parquet" in captured.out


def test_lineage_of_an_older_version_and_of_a_missing_one(deployed, capsys):
    params = deployed
    perturb_model(params, seed=12)
    deploy.main(params)
    assert store.current_version(params.deploy.store) == "v0002"
    capsys.readouterr()
    assert main(["lineage", "v1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deployed v0001") and "being served" not in out
    # v0001's model is no longer the trained model on disk: verify says so, v0002 verifies clean.
    assert main(["lineage", "v1", "--verify"]) == 1
    assert "model (train): models/model/model.safetensors changed" in capsys.readouterr().err
    assert main(["lineage", "--verify"]) == 0
    assert main(["lineage", "v7"]) == 1
    assert "no complete version v0007" in capsys.readouterr().err


def test_dvc_lock_hashes_without_a_lock_is_empty(tmp_path):
    assert dvc_lock_hashes(tmp_path) == {}
