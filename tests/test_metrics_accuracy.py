"""Accuracy of the full ranking, a held-out basket at a time: hand-computed values and brute force."""
import numpy as np
import pytest

from recmoo_dag.metrics import basket_accuracy, discounts, target_ranks

NEG = -np.inf


def test_rank_counts_items_scored_higher_and_ties_against_the_target():
    scores = np.array([[NEG, 3.0, 1.0, 2.0],   # target 3 (2.0): only item 1 is higher -> rank 1
                       [NEG, 1.0, 1.0, 1.0],   # all tied: the target is ranked last among them -> 2
                       [NEG, 5.0, NEG, 4.0]])  # target 2 masked as seen: below everything -> 3 = I
    assert target_ranks(scores, np.array([0, 1, 2]), np.array([3, 2, 2])).tolist() == [1, 2, 3]


def test_several_relevant_items_of_one_row_take_list_positions_like_any_item():
    scores = np.array([[NEG, 4.0, 3.0, 2.0, 1.0]])
    assert target_ranks(scores, np.array([0, 0]), np.array([1, 3])).tolist() == [0, 2]


def test_rank_matches_a_brute_force_sort():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 31)).astype(np.float32)
    scores[:, 0] = NEG
    targets = rng.integers(1, 31, 50)
    expected = [list(np.argsort(-row, kind="stable")).index(t) for row, t in zip(scores, targets)]
    assert target_ranks(scores, np.arange(50), targets).tolist() == expected  # no ties in continuous scores


def test_ndcg_hr_recall_and_reciprocal_rank_of_baskets():
    # case 0: one relevant item at rank 1; case 1: two relevant at ranks 0 and 3; case 2: two at 12, 40
    ranks = np.array([1, 0, 3, 12, 40])
    indptr = np.array([0, 1, 3, 5])
    got = basket_accuracy(ranks, indptr, k=10)
    ideal_two = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(got["ndcg"], [1 / np.log2(3), (1 + 1 / np.log2(5)) / ideal_two, 0.0])
    np.testing.assert_allclose(got["hr"], [1, 1, 0])
    np.testing.assert_allclose(got["recall"], [1, 1, 0])
    np.testing.assert_allclose(got["rr"], [1 / 2, 1, 1 / 13])
    np.testing.assert_allclose(discounts(3), [1, 1 / np.log2(3), 0.5])


def test_perfect_and_hopeless_baskets():
    perfect = basket_accuracy(np.array([0, 1, 2]), np.array([0, 3]), k=10)  # three relevant, on top
    assert perfect["ndcg"][0] == pytest.approx(1.0) and perfect["recall"][0] == 1.0
    more_than_k = basket_accuracy(np.arange(12), np.array([0, 12]), k=10)  # 12 relevant fill the list
    assert more_than_k["ndcg"][0] == pytest.approx(1.0) and more_than_k["recall"][0] == 1.0
    hopeless = basket_accuracy(np.full(3, 10), np.array([0, 3]), k=10)
    assert hopeless["ndcg"][0] == 0.0 and hopeless["hr"][0] == 0.0


def test_nan_scores_fail_loudly():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[NEG, np.nan, 1.0]]), np.array([0]), np.array([2]))
