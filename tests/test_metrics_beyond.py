"""Beyond-accuracy metrics on lists small enough to compute by hand: one list per held-out basket
(a case), means over cases weighted so that every user counts once."""
import numpy as np
import pytest

from recmoo_dag.metrics import (
    LIST_METRICS,
    case_ndcg,
    case_weights,
    coverage,
    intra_list_diversity,
    item_similarity,
    list_metrics,
    list_ndcg,
    novelty,
    personalization,
    self_information,
    serving_cost,
    similarity_groups,
)

# Three cases' top-2 lists over items 1..4 (0 is padding), one user each.
LISTS = np.array([[1, 2], [2, 3], [1, 2]])
EVEN = np.full(3, 1 / 3)


def test_case_weights_count_every_user_once():
    np.testing.assert_allclose(case_weights(np.array([4, 4, 7])), [0.25, 0.25, 0.5])


def test_list_ndcg_full_ranking_semantics_with_several_relevant_items():
    indptr, targets = np.array([0, 1, 2, 3]), np.array([1, 3, 4])  # rank 0 -> 1; rank 1 -> 1/log2(3); absent -> 0
    assert list_ndcg(LISTS, indptr, targets, EVEN) == pytest.approx((1 + 1 / np.log2(3) + 0) / 3)
    stacked = list_ndcg(np.stack([LISTS, LISTS[:, ::-1]]), indptr, targets, EVEN)  # (B,) over policies
    np.testing.assert_allclose(stacked, [(1 + 1 / np.log2(3)) / 3, (1 / np.log2(3) + 1) / 3])
    # the first case's basket holds items 2 and 4: item 2 at rank 1 of an ideal 1 + 1/log2(3)
    both = case_ndcg(LISTS, np.array([0, 2, 3, 4]), np.array([2, 4, 3, 4]))
    np.testing.assert_allclose(both, [(1 / np.log2(3)) / (1 + 1 / np.log2(3)), 1 / np.log2(3), 0.0])


def test_self_information_and_novelty():
    counts = np.array([0, 3, 1, 0, 7])  # 7 users
    info = self_information(counts, 7)
    np.testing.assert_allclose(info[1:], np.log2(8 / np.array([4, 2, 1, 8])))  # log2((U+1)/(n+1))
    # user lists [1,2], [2,3], [1,2]: mean of (1+2)/2, (2+3)/2, (1+2)/2 bits
    assert novelty(LISTS, info, EVEN) == pytest.approx((1.5 + 2.5 + 1.5) / 3)


def test_item_similarity_is_clipped_cosine():
    vectors = np.array([[0, 0], [1, 0], [1, 1], [-1, 0], [0, 0]], dtype=float)
    sim = item_similarity(vectors)
    assert sim[1, 2] == pytest.approx(1 / np.sqrt(2))
    assert sim[1, 3] == 0.0  # opposite: clipped to fully dissimilar
    assert sim[4, 1] == 0.0 and sim[1, 1] == pytest.approx(1.0)  # zero vector is similar to nothing


def test_intra_list_diversity_by_hand():
    sim = np.zeros((5, 5))
    sim[1, 2] = sim[2, 1] = 0.5
    sim[2, 3] = sim[3, 2] = 1.0
    sim[1, 3] = sim[3, 1] = 0.2
    # list [1, 2, 3]: pairs (1,2) .5, (1,3) .2, (2,3) 1. -> 1 - mean = 1 - 1.7/3
    assert intra_list_diversity(np.array([[1, 2, 3]]), sim, np.ones(1)) == pytest.approx(1 - 1.7 / 3)
    # two cases: (1 - .5) and (1 - 1.) averaged
    assert intra_list_diversity(np.array([[1, 2], [2, 3]]), sim, np.full(2, 0.5)) == pytest.approx(0.25)


def test_coverage_counts_distinct_items_over_the_catalogue():
    assert coverage(LISTS, n_items=4) == pytest.approx(3 / 4)
    np.testing.assert_allclose(coverage(np.stack([LISTS, np.array([[1, 2], [3, 4], [1, 2]])]), 4), [0.75, 1.0])


def test_personalization_matches_the_pairwise_definition():
    # pairs: (u0,u1) share {2} -> 1/2; (u0,u2) share {1,2} -> 1; (u1,u2) share {2} -> 1/2
    assert personalization(LISTS, n_items=4) == pytest.approx(1 - (0.5 + 1 + 0.5) / 3)
    rng = np.random.default_rng(0)
    lists = np.stack([rng.choice(np.arange(1, 30), 5, replace=False) for _ in range(25)])
    overlaps = [len(set(a) & set(b)) / 5 for i, a in enumerate(lists) for b in lists[i + 1:]]
    assert personalization(lists, 29) == pytest.approx(1 - np.mean(overlaps))
    with pytest.raises(ValueError, match="2 lists"):
        personalization(LISTS[:1], 4)


def test_serving_cost_is_the_fitted_line():
    np.testing.assert_allclose(serving_cost(np.array([10, 100]), 0.5, 0.01), [0.6, 1.5])


def test_grouped_ild_equals_plain_ild():
    rng = np.random.default_rng(1)
    genres = rng.random((40, 4)) < 0.4
    sim = item_similarity(genres)
    groups, group_sim = similarity_groups(sim)
    assert len(group_sim) < len(sim)  # 40 items, at most 16 genre sets
    lists = np.stack([rng.choice(np.arange(1, 40), 6, replace=False) for _ in range(9)])
    weights = np.full(9, 1 / 9)
    assert intra_list_diversity(lists, group_sim, weights, groups) == pytest.approx(intra_list_diversity(lists, sim, weights))


def test_self_information_is_never_negative_with_repeat_consumption():
    info = self_information(np.array([0, 12, 3]), 7)  # 12 events by at most 7 users
    np.testing.assert_allclose(info, [3.0, 0.0, 1.0])


def test_fused_list_metrics_equal_the_definitions():
    """The search's one-pass kernel reports what the five metric functions define."""
    rng = np.random.default_rng(2)
    n_items, n_cases, k = 50, 12, 5
    genres = rng.random((n_items + 1, 5)) < 0.4
    sim = item_similarity(genres)
    groups, group_sim = similarity_groups(sim)
    candidates = np.stack([rng.choice(np.arange(1, n_items + 1), 20, replace=False) for _ in range(n_cases)])
    positions = np.stack([[rng.choice(20, k, replace=False) for _ in range(n_cases)] for _ in range(4)])  # (B, C, k)
    recs = np.take_along_axis(candidates[None], positions, axis=2)
    sizes = rng.integers(1, 4, n_cases)  # 1 to 3 relevant items per case, hits and misses
    indptr = np.r_[0, np.cumsum(sizes)]
    targets = np.concatenate([np.where(rng.random(n) < 0.5, recs[0, c, :n], candidates[c, -n:])
                              for c, n in enumerate(sizes)])
    weights = case_weights(rng.integers(0, 5, n_cases))
    info = self_information(rng.integers(0, 12, n_items + 1), n_cases)
    got = list_metrics(positions, candidates, indptr, targets, weights, info, group_sim, groups, n_items)
    expected = np.column_stack([list_ndcg(recs, indptr, targets, weights), intra_list_diversity(recs, sim, weights),
                                novelty(recs, info, weights), coverage(recs, n_items), personalization(recs, n_items)])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got.shape == (4, len(LIST_METRICS))
