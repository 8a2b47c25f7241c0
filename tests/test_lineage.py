"""Lineage manifests: what a deployed version records, `recmoo lineage` and `--verify`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from recmoo_dag import item_text, store
from recmoo_dag.cli import main
from recmoo_dag.lineage import dvc_lock_hashes, dvc_md5, params_digest
from recmoo_dag.stages import deploy
from tests.deploy_support import base_project, copy_project, perturb_model

CHAIN = ["raw logs", "ingested", "validated", "features", "item text", "tuned values", "model", "candidates",
         "exposure prices", "front"]


def write_dvc_lock(features_md5: str, min_user_interactions: int) -> None:
    """A dvc.lock as `dvc repro` writes it, for the features stage only."""
    Path("dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"features": {
        "cmd": "recmoo features",
        "deps": [{"path": "data/validated/interactions.parquet", "hash": "md5",
                  "md5": "0123456789abcdef0123456789abcdef"}],
        "params": {"params.yaml": {"features.min_user_interactions": min_user_interactions}},
        "outs": [{"path": "data/features", "hash": "md5", "md5": features_md5}]}}}))


@pytest.fixture
def text_model(tmp_path, monkeypatch):
    """A stand-in for the packaged sentence model's folder (the installed one is not the tests' to
    alter), recorded in data/item_text/model.json as item_text records the real one."""
    folder = tmp_path / "packaged-model"
    folder.mkdir()
    for name, text in (("tokenizer.json", '{"model": "WordPiece"}'), ("model.safetensors", "weights")):
        (folder / name).write_text(text)
    monkeypatch.setattr(item_text, "packaged_folder", lambda: folder)
    return folder


@pytest.fixture
def deployed(tmp_path, tmp_path_factory, monkeypatch, text_model):
    """A deployed tiny project (with a dvc.lock to quote, item-text vectors and tuned values) as the
    working directory."""
    base = base_project(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    params = copy_project(base, tmp_path, {"deploy": {"tolerance": {"ndcg": 1.0, "ild": 1.0, "coverage": 1.0,
                                                                    "novelty": 1.0, "personalization": 1.0}}})
    texts = Path(params.item_text.dir)
    texts.mkdir(parents=True)
    (texts / "vectors.safetensors").write_bytes(b"vectors")
    (texts / item_text.MODEL_RECORD).write_text(json.dumps(
        {"model": item_text.PACKAGED, "files": item_text.folder_hashes(text_model)}))
    Path(params.tune.chosen).write_text(json.dumps({"model": {"d_model": 16}}))
    write_dvc_lock(dvc_md5(Path(params.features.dir)), params.features.min_user_interactions)
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
    assert manifest["dvc_lock"]["features"]["outs"] == {"data/features": dvc_md5(Path("data/features"))}
    assert manifest["dvc_lock"]["features"]["params"] == ["features.min_user_interactions"]
    assert manifest["created_at"].endswith("+00:00")
    # The version's own copies are hashed too: the served model is byte-identical to the trained one.
    assert manifest["deployed_files"]["model/model.safetensors"]["sha256"] == sha256("models/model/model.safetensors")


def test_lineage_prints_the_chain_from_policy_to_raw_files(deployed, capsys):
    assert main(["lineage"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deployed v0001")
    positions = [out.index(f"<- {name}") for name in reversed(CHAIN)]
    assert positions == sorted(positions)  # front first, raw files last
    assert "data/raw/ml-100k/synthetic.inter" in out
    assert f"(dvc.lock: data/features md5 {dvc_md5(Path('data/features'))[:12]})" in out
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
    assert "4 input(s) no longer match v0001" in err
    assert "MISMATCH deployed v0001: " in err and "policy.json changed" in err
    assert "MISMATCH features (features): data/features/meta.json changed (sha256 differs)" in err
    assert "MISMATCH features (features): data/features/extra.parquet is new, not in the manifest" in err
    assert "MISMATCH data/features (stage features): its bytes are not those dvc.lock's md5" in err
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


@pytest.mark.parametrize("change, named", [
    ("vectors", "item text (item_text): data/item_text/vectors.safetensors changed"),
    ("tokenizer", "item text (item_text): {model}/tokenizer.json: sha256 differs from the one recorded"),
    ("tuned", "tuned values (tune): models/tuned.json changed"),
    ("params", "params: features.min_user_interactions is 6 now, the version was built with 5"),
])
def test_verify_covers_every_input_of_the_served_version(deployed, text_model, change, named, capsys):
    """The item-text vectors, the sentence model's files, the tuned values and the params a stage read."""
    if change == "vectors":
        Path("data/item_text/vectors.safetensors").write_bytes(b"other vectors")
    elif change == "tokenizer":
        (text_model / "tokenizer.json").write_text('{"model": "BPE"}')
    elif change == "tuned":
        Path("models/tuned.json").write_text(json.dumps({"model": {"d_model": 32}}))
    else:
        text = Path("params.yaml").read_text()
        Path("params.yaml").write_text(text.replace("min_user_interactions: 5", "min_user_interactions: 6", 1))
    capsys.readouterr()
    assert main(["lineage", "--verify"]) == 1
    assert f"MISMATCH {named.format(model=text_model)}" in capsys.readouterr().err


def test_deploy_refuses_inputs_whose_bytes_are_not_those_dvc_lock_names(deployed, capsys):
    """A remote that served altered objects: a new manifest would hash what was pulled, so only
    dvc.lock's md5, committed where the bytes were built, tells them apart."""
    write_dvc_lock("0" * 32 + ".dir", deployed.features.min_user_interactions)
    capsys.readouterr()
    assert main(["deploy"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("recmoo deploy: error: refusing to deploy: data/features (stage features): its bytes "
                          "are not those dvc.lock's md5 " + "0" * 32) and len(err.splitlines()) == 1
    assert store.list_versions(deployed.deploy.store) == ["v0001"]
