"""Accuracy metrics of the full ranking: hand-computed values and a brute-force cross-check."""
import numpy as np
import pytest

from recmoo_dag.metrics import accuracy, hit_rate_at_k, mrr, ndcg_at_k, rank_of_targets

NEG = -np.inf


def test_rank_counts_items_scored_higher_and_ties_against_the_target():
    scores = np.array([[NEG, 3.0, 1.0, 2.0],   # target 3 (2.0): only item 1 is higher -> rank 1
                       [NEG, 1.0, 1.0, 1.0],   # all tied: the target is ranked last among them -> 2
                       [NEG, 5.0, NEG, 4.0]])  # target 2 masked as seen: below everything -> 3 = I
    assert rank_of_targets(scores, np.array([3, 2, 2])).tolist() == [1, 2, 3]


def test_rank_matches_a_brute_force_sort():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 31)).astype(np.float32)
    scores[:, 0] = NEG
    targets = rng.integers(1, 31, 50)
    expected = [list(np.argsort(-row, kind="stable")).index(t) for row, t in zip(scores, targets)]
    assert rank_of_targets(scores, targets).tolist() == expected  # no ties in continuous scores


def test_ndcg_hr_mrr_values():
    ranks = np.array([0, 1, 9, 10, 99])
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)
    assert hit_rate_at_k(ranks, 10) == pytest.approx(3 / 5)
    assert hit_rate_at_k(ranks, 1) == pytest.approx(1 / 5)
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 100) / 5)
    assert accuracy(ranks, 10).to_json() == {"ndcg@10": ndcg_at_k(ranks, 10), "hr@10": hit_rate_at_k(ranks, 10),
                                         "mrr": mrr(ranks)}


def test_perfect_and_hopeless_rankings():
    assert ndcg_at_k(np.zeros(7, dtype=int), 10) == 1.0 and mrr(np.zeros(7, dtype=int)) == 1.0
    assert ndcg_at_k(np.full(7, 10), 10) == 0.0 and hit_rate_at_k(np.full(7, 10), 10) == 0.0


def test_nan_scores_fail_loudly():
    with pytest.raises(ValueError, match="NaN"):
        rank_of_targets(np.array([[NEG, np.nan, 1.0]]), np.array([2]))
