"""A deployed version's files: written by deploy, read back by the service, plain arrays only."""
import json

import numpy as np
import pytest
import torch

from recmoo_dag.bundle import CATALOG_FILE, USERS_FILE, read_bundle, write_bundle
from recmoo_dag.errors import StoreError
from recmoo_dag.exposure import ExposurePrices
from recmoo_dag.generator import save_generator
from recmoo_dag.model import SeqRecModel, save_model


def test_a_bundle_round_trips_and_an_incomplete_one_is_refused(tmp_path):
    torch.manual_seed(0)
    save_model(SeqRecModel(4, 8, 2, 1, 0.0, 6), tmp_path / "model", {"n_items": 4, "d_model": 8, "n_heads": 2,
                                                                    "n_layers": 1, "dropout": 0.0, "max_len": 6}, {})
    save_generator(tmp_path / "model", "blend", ease_lambda=30.0, blend_weight=0.25)
    folder = tmp_path / "v0001"
    arrays = {"item_ids": np.array(["", "a", "b", "c", "d"]), "titles": np.array(["", "A", "", "C", "D"]),
              "train_counts": np.array([0, 3, 2, 1, 1]), "item_vectors": np.eye(5, 3, dtype=np.float32), "n_users": 2,
              "user_ids": np.array(["u1", "u2"]), "indptr": np.array([0, 2, 3]), "history": np.array([1, 2, 3]),
              "opens": np.array([True, False, True]),  # u1's two items share a timestamp: one basket
              "cand_items": np.array([[3, 4], [1, 0]]),
              "cand_scores": np.array([[0.5, 0.1], [0.2, -np.inf]], dtype=np.float32)}
    ease = np.arange(25, dtype=np.float32).reshape(5, 5)
    prices = ExposurePrices(np.array([0.0, 1.5, 0.0, 0.25, 0.0]), np.array([0.0, 0.0, -2.0, 0.0, -0.5]),
                            {"k": 5, "floor": 3}, {"cap": {"gap": 0.01}})
    write_bundle(folder, tmp_path / "model", {"pool": 2, "debias": 0.5}, 5, "constrained on valid", **arrays,
                 ease=ease, prices=prices)
    bundle = read_bundle(folder)
    assert (np.array_equal(bundle.prices.cap, prices.cap)
            and np.array_equal(bundle.prices.floor, prices.floor)
            and bundle.prices.settings == prices.settings)
    np.testing.assert_array_equal(bundle.ease, ease)
    generator = bundle.generator()
    assert (generator.kind, generator.ease_lambda, generator.blend_weight) == ("blend", 30.0, 0.25)
    (folder / "model" / "generator.json").unlink()  # a version deployed before generators: the transformer
    assert bundle.generator().kind == "model"
    assert bundle.variables == {"pool": 2, "debias": 0.5} and bundle.k == 5 and bundle.n_users == 2
    for name, value in arrays.items():
        np.testing.assert_array_equal(getattr(bundle, name), value, err_msg=name)
    assert bundle.cand_items.dtype == np.int32 and bundle.cand_scores.dtype == np.float32
    assert json.loads((folder / "policy.json").read_text())["rule"] == "constrained on valid"
    for name in (CATALOG_FILE, USERS_FILE):  # plain arrays: readable without pickle
        with np.load(folder / name, allow_pickle=False) as archive:
            assert archive.files
    (folder / "exposure.json").unlink()  # a version deployed before exposure prices: every price 0
    assert not read_bundle(folder).prices.cap.any() and not read_bundle(folder).prices.floor.any()
    (folder / USERS_FILE).unlink()
    with pytest.raises(StoreError, match="incomplete deployed version"):
        read_bundle(folder)
