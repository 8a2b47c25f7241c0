"""k-core, id maps, the time-ordered leave-one-out split, popularity and reproducibility."""
import hashlib

import numpy as np
import pandas as pd
import pytest

from recmoo_dag.features import (
    TEST,
    TRAIN,
    VALID,
    FeaturesError,
    build_features,
    k_core,
    load_features,
    write_features,
)
from tests.conftest import section


def frame(rows):
    users, items, times = zip(*rows)
    return pd.DataFrame({"user_id": pd.array(users, dtype="string"), "item_id": pd.array(items, dtype="string"),
                         "timestamp": np.array(times, dtype=np.int64), "rating": np.nan})


def test_leave_one_out_by_time_with_deterministic_ties():
    # user a: events out of order in the file; two share t=30 (tie broken by item id string order)
    rows = [("a", "x", 30), ("a", "w", 10), ("a", "z", 30), ("a", "y", 20),
            ("b", "x", 5), ("b", "y", 6), ("b", "z", 7)]
    tables = build_features(frame(rows), None, section("features", min_user_interactions=3, min_item_interactions=1))
    seq = tables.sequences
    item_id = dict(zip(tables.items["item_idx"], tables.items["item_id"]))
    a = seq[seq.user_idx == 0]
    assert [item_id[i] for i in a.item_idx] == ["w", "y", "x", "z"]
    assert a.split.tolist() == [TRAIN, TRAIN, VALID, TEST]
    b = seq[seq.user_idx == 1]
    assert [item_id[i] for i in b.item_idx] == ["x", "y", "z"]
    assert b.split.tolist() == [TRAIN, VALID, TEST]


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
    tables = build_features(frame(rows), None, section("features", min_user_interactions=3, min_item_interactions=1))
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


def test_every_user_keeps_train_valid_and_test(small_log):
    interactions, items = small_log
    tables = build_features(interactions, items, section("features", min_user_interactions=5, min_item_interactions=5))
    counts = tables.sequences.groupby("user_idx")["split"].value_counts().unstack(fill_value=0)
    assert (counts[VALID] == 1).all() and (counts[TEST] == 1).all() and (counts[TRAIN] >= 3).all()


def test_loaded_features_match_the_split(small_log, tmp_path):
    interactions, items = small_log
    tables = build_features(interactions, items, section("features"))
    write_features(tables, tmp_path)
    features = load_features(tmp_path)
    seq = tables.sequences
    assert features.n_users == seq.user_idx.nunique()
    np.testing.assert_array_equal(features.valid_targets, seq[seq.split == VALID].item_idx.to_numpy())
    np.testing.assert_array_equal(features.test_targets, seq[seq.split == TEST].item_idx.to_numpy())
    indptr, hist = features.history_before("test")
    np.testing.assert_array_equal(hist, seq[seq.split != TEST].item_idx.to_numpy())
    assert indptr[-1] == len(hist)
    assert features.categories.shape == (features.n_items + 1, len(features.category_names))
    assert not features.categories[0].any()
    assert features.categories[1:].sum(axis=1).min() == 1


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
    params = section("features", min_user_interactions=3, min_item_interactions=1)
    catalog = build_features(frame(rows), items, params).catalog
    assert catalog["item_id"].tolist() == ["", "x", "y", "z"] and list(catalog.loc[1, "tags"]) == ["fun", "old"]
    tables = build_features(frame(rows), items, params.model_copy(update={"include_metadata_items": True}))
    assert tables.catalog["item_id"].tolist() == ["", "x", "y", "z", "new"]  # cold items come last
    assert tables.items.loc[4, "train_count"] == 0 and list(tables.catalog.loc[4, "tags"]) == ["fresh"]
