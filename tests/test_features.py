"""k-core, id maps, baskets and windows, train-only popularity and reproducibility."""
import hashlib

import numpy as np
import pandas as pd
import pytest

from recmoo_dag.errors import FeaturesError
from recmoo_dag.features import basket_order_keys, build_features, k_core, load_features, write_features
from recmoo_dag.windows import TEST, TRAIN, VALID
from tests.conftest import section


def frame(rows):
    users, items, times = zip(*rows)
    return pd.DataFrame({"user_id": pd.array(users, dtype="string"), "item_id": pd.array(items, dtype="string"),
                         "timestamp": np.array(times, dtype=np.int64), "rating": np.nan})


LOO = {"split": "leave_one_out", "min_user_interactions": 3, "min_item_interactions": 1, "min_window_users": 2}


def test_a_basket_is_held_out_whole_and_stored_in_a_keyed_hash_order():
    # user a: events out of order in the file; x and z share t=30: one basket, the test basket
    rows = [("a", "x", 30), ("a", "w", 10), ("a", "z", 30), ("a", "y", 20),
            ("b", "x", 5), ("b", "y", 6), ("b", "z", 7)]
    tables = build_features(frame(rows), None, section("features", **LOO))
    seq = tables.sequences
    item_id = dict(zip(tables.items["item_idx"], tables.items["item_id"]))
    a = seq[seq.user_idx == 0]
    inside = sorted(["x", "z"], key=lambda i: int(basket_order_keys(np.array([i]))[0]))  # not the ids' order
    assert [item_id[i] for i in a.item_idx] == ["w", "y", *inside]
    assert a.window.tolist() == [TRAIN, VALID, TEST, TEST]
    b = seq[seq.user_idx == 1]
    assert b.window.tolist() == [TRAIN, VALID, TEST]
    assert tables.meta.windows["test"] == {"users": 2, "baskets": 2, "relevant_items": 3, "events": 3}


def test_shuffled_input_gives_identical_tables(small_log):
    interactions, items = small_log
    params = section("features")
    first = build_features(interactions, items, params)
    second = build_features(interactions.sample(frac=1.0, random_state=3), items.iloc[::-1], params)
    for name in ("sequences", "users", "items", "catalog"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    assert first.meta == second.meta


def test_padding_item_and_train_only_popularity():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1), ("b", "z", 2), ("b", "y", 3)]
    tables = build_features(frame(rows), None, section("features", **LOO))
    items = tables.items
    assert items.loc[0, "item_id"] == "" and items.loc[0, "train_count"] == 0
    # train holds only the first event of each user: x twice; valid/test items must not count
    assert dict(zip(items.item_id, items.train_count)) == {"": 0, "x": 2, "y": 0, "z": 0}


def test_k_core_iterates_until_stable():
    # dropping user c (1 event) leaves item q with 1 event, which then must go too
    users = np.array([0, 0, 1, 1, 2])
    items = np.array([0, 1, 0, 1, 1])
    keep = k_core(users, items, min_user=2, min_item=2)
    assert keep.tolist() == [True, True, True, True, False]


def test_k_core_that_removes_everything_is_a_clear_error():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3)]
    with pytest.raises(FeaturesError, match="removed every interaction"):
        build_features(frame(rows), None, section("features", min_user_interactions=3, min_item_interactions=5))


def test_every_user_keeps_whole_baskets_to_train_on_before_both_windows(small_log):
    interactions, items = small_log
    interactions = interactions.assign(timestamp=interactions["timestamp"] // (7 * 86400))  # weekly baskets
    tables = build_features(interactions, items, section("features"))
    seq = tables.sequences
    first = seq.groupby("user_idx")["window"].transform("first")
    assert (first == TRAIN).all()
    assert (seq.groupby("user_idx")["window"].apply(lambda w: (np.diff(w.to_numpy()) >= 0).all())).all()
    baskets = seq.groupby(["user_idx", "timestamp"])["window"].nunique()
    assert (baskets == 1).all()  # a basket is never split between windows
    assert tables.meta.n_baskets < len(seq)


def test_loaded_features_give_histories_and_cases(small_log, tmp_path):
    interactions, items = small_log
    tables = build_features(interactions, items, section("features"))
    write_features(tables, tmp_path)
    features = load_features(tmp_path)
    seq = tables.sequences
    assert features.n_users == seq.user_idx.nunique()
    history = features.history_before("test")
    np.testing.assert_array_equal(np.concatenate([features.items[s:e] for s, e in zip(history.starts, history.ends)]),
                                  seq[seq.window != TEST].item_idx.to_numpy())
    cases = features.cases("test")
    assert cases.n_cases == tables.meta.windows["test"]["baskets"] and len(cases.targets) > 0
    assert features.categories.shape == (features.n_items + 1, len(features.category_names))
    assert not features.categories[0].any()
    assert features.categories[1:].sum(axis=1).min() == 1


def test_global_time_refuses_a_window_with_too_few_users(small_log):
    interactions, items = small_log
    with pytest.raises(FeaturesError, match="global_time: the valid window holds .* users"):
        build_features(interactions, items, section("features", split="global_time", min_window_users=1000))


def test_outputs_are_byte_identical_across_runs(small_log, tmp_path):
    interactions, items = small_log

    def digest(directory):
        write_features(build_features(interactions, items, section("features")), directory)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}

    assert digest(tmp_path / "one") == digest(tmp_path / "two")


def test_no_item_metadata_means_no_categories(small_log, tmp_path):
    interactions, _ = small_log
    write_features(build_features(interactions, None, section("features")), tmp_path)
    features = load_features(tmp_path)
    assert features.categories is None and features.category_names == []


def test_tags_reach_the_catalog_and_metadata_only_items_join_it_on_request():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1), ("b", "z", 2), ("b", "y", 3)]
    items = pd.DataFrame({"item_id": ["x", "y", "z", "new"], "title": ["X", "Y", "Z", "Brand new"],
                          "categories": [["c"], [], ["d"], ["c"]], "tags": [["fun", "old"], [], [], ["fresh"]]})
    params = section("features", **LOO)
    catalog = build_features(frame(rows), items, params).catalog
    assert catalog["item_id"].tolist() == ["", "x", "y", "z"] and list(catalog.loc[1, "tags"]) == ["fun", "old"]
    tables = build_features(frame(rows), items, params.model_copy(update={"include_metadata_items": True}))
    assert tables.catalog["item_id"].tolist() == ["", "x", "y", "z", "new"]  # cold items come last
    assert tables.items.loc[4, "train_count"] == 0 and list(tables.catalog.loc[4, "tags"]) == ["fresh"]
