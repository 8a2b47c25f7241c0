"""The policy's per-item terms: one builder, the numbers its docstring promises, the similarity choice."""
import numpy as np
import pytest

from recmoo_dag.errors import InputError
from recmoo_dag.item_terms import ItemTerms, history_profiles, item_vectors
from recmoo_dag.metrics import self_information
from recmoo_dag.policy import id_keys
from recmoo_dag.windows import histories_of

GENRES = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)  # item 4 has no genre
COUNTS = np.array([0, 6, 3, 1, 0])
IDS = np.array(["", "a", "b", "c", "d"])


def test_terms_follow_their_formulas():
    terms = ItemTerms.build(COUNTS, n_train_users=8, vectors=GENRES, item_ids=IDS)
    np.testing.assert_allclose(terms.log_pop, np.log((COUNTS + 1) / (COUNTS.sum() + 5)), rtol=1e-6)
    np.testing.assert_allclose(terms.info, self_information(COUNTS, 8))
    assert terms.novelty.max() == 1.0 and terms.novelty[1] < terms.novelty[2] < terms.novelty[3] < terms.novelty[4]
    np.testing.assert_allclose(np.linalg.norm(terms.unit[1:4], axis=1), 1.0, rtol=1e-6)
    assert not terms.unit[4].any() and not terms.sim[4].any()  # no genre: similar to nothing
    assert terms.sim[1, 2] == pytest.approx(np.sqrt(0.5)) and terms.sim[1, 3] == 0.0
    np.testing.assert_array_equal(terms.item_keys, id_keys(IDS))


def test_profiles_are_unit_mean_histories_and_zero_without_one():
    unit = ItemTerms.build(COUNTS, 8, GENRES, IDS).unit
    history = histories_of(np.array([0, 2, 2, 3]), np.array([1, 3, 2]), np.ones(3, dtype=bool))
    profiles = history_profiles(history, unit)
    np.testing.assert_allclose(profiles[0], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)  # genres 1 and 2 equally
    assert not profiles[1].any()  # no history
    np.testing.assert_allclose(profiles[2], unit[2], rtol=1e-6)


def test_profiles_taken_a_block_at_a_time_match_one_pass():
    rng = np.random.default_rng(3)
    unit = ItemTerms.build(COUNTS, 8, GENRES, IDS).unit
    items = rng.integers(1, 5, 200)
    ends = np.sort(rng.integers(0, 201, 40))  # prefixes of one long sequence: they overlap
    history = histories_of(np.r_[0, 200], items, np.ones(200, dtype=bool)).rows(np.zeros(40, dtype=int))
    history = type(history)(np.zeros(40, dtype=np.int64), ends.astype(np.int64), history.items,
                            history.basket_starts, history.basket_ends)
    np.testing.assert_allclose(history_profiles(history, unit, block_events=16), history_profiles(history, unit),
                               rtol=1e-5, atol=1e-6)


def test_a_request_gets_the_terms_it_gets_inside_a_batch():
    terms = ItemTerms.build(COUNTS, 8, GENRES, IDS)
    items = np.array([[1, 2, 3], [3, 4, 1]])
    logits = np.array([[2.0, 1.0, 0.0], [1.5, 0.5, -1.0]])
    profiles = terms.profiles(histories_of(np.array([0, 1, 3]), np.array([2, 1, 3]), np.ones(3, dtype=bool)))
    keys = id_keys(["u1", "u2"])
    batch = terms.requests(items, logits, profiles, keys)
    one = terms.requests(items[1:], logits[1:], profiles[1:], keys[1:])
    for name in ("items", "logits", "log_pop", "novelty", "fit", "dither"):
        np.testing.assert_array_equal(getattr(one, name)[0], getattr(batch, name)[1], err_msg=name)
    assert (batch.fit >= 0).all() and (batch.fit <= 1).all()


def test_similarity_space_follows_params_and_reads_the_model_only_when_needed():
    def no_model():
        raise AssertionError("the embeddings were read although genres exist")

    np.testing.assert_array_equal(item_vectors(GENRES, "auto", no_model), GENRES.astype(np.float32))
    table = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(item_vectors(GENRES, "embeddings", lambda: table), table)
    np.testing.assert_array_equal(item_vectors(None, "auto", lambda: table), table)
    with pytest.raises(InputError, match="have none"):
        item_vectors(None, "categories", lambda: table)


def test_vectors_of_another_catalog_are_refused():
    with pytest.raises(InputError, match="re-run `dvc repro`"):
        ItemTerms.build(COUNTS, 8, GENRES[:4], IDS)
