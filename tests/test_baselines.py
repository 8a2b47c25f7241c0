"""Popularity and EASE: the closed form against per-column ridge regressions, tuning on valid only."""
import numpy as np
import pytest

from recmoo_dag.baselines import (
    ease_weights,
    evaluate_baselines,
    history_matrix,
    popularity_scorer,
    tune_ease,
)
from recmoo_dag.features import build_features, load_features, write_features
from recmoo_dag.windows import histories_of
from tests.conftest import section

EVALUATION = section("evaluation", replicates=100)


@pytest.fixture(scope="module")
def features(small_log, tmp_path_factory):
    directory = tmp_path_factory.mktemp("features")
    write_features(build_features(*small_log, section("features")), directory)
    return load_features(directory)


def test_history_matrix_is_binary_with_empty_padding_column():
    indptr = np.array([0, 3, 5])
    items = np.array([1, 2, 1, 3, 3])  # user 0 repeats item 1, user 1 item 3
    x = history_matrix(histories_of(indptr, items, np.ones(5, dtype=bool)), n_items=3)
    assert x.toarray().tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]]


def test_popularity_scores_are_history_counts():
    fit = histories_of(np.array([0, 2, 4]), np.array([1, 2, 2, 3]), np.ones(4, dtype=bool))
    scorer = popularity_scorer(fit, n_items=3)
    assert scorer(np.array([0, 1])).tolist() == [[0, 1, 2, 1], [0, 1, 2, 1]]


def test_ease_equals_a_ridge_regression_of_each_item_on_all_others():
    """Steck 2019: column j of B solves min ||X_j - X_{-j} b||^2 + λ||b||^2 with B_jj = 0."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 9)) < 0.3).astype(np.float64)
    lam = 5.0
    b = ease_weights(x, lam)
    assert np.all(np.diag(b) == 0)
    for j in range(9):
        others = [i for i in range(9) if i != j]
        xo = x[:, others]
        ridge = np.linalg.solve(xo.T @ xo + lam * np.eye(8), xo.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], ridge, rtol=1e-4, atol=1e-6)


def test_tuning_picks_the_best_valid_lambda(features):
    best, tried = tune_ease(features, [1.0, 30.0, 3000.0], batch_size=50, k=10, evaluation=EVALUATION, seed=0)
    assert set(tried) == {1.0, 30.0, 3000.0}
    assert tried[best] == max(tried.values())


def test_baselines_report_and_ease_beats_popularity(features):
    pop, ease, lam, tried = evaluate_baselines(features, [10.0, 100.0], batch_size=50, k=10, evaluation=EVALUATION,
                                               seed=0)
    assert lam in tried and tried[lam] == max(tried.values())
    for evaluation in (pop, ease):
        for accuracy in (evaluation.valid, evaluation.test):
            assert accuracy.k == 10 and 0.0 < accuracy.ndcg <= accuracy.hr <= 1.0
            assert {"ndcg@10", "ndcg@10_ci", "hr@10", "recall@10", "mrr", "mrr_ci", "users", "baskets"} <= set(
                accuracy.to_json())
            low, high = accuracy.intervals["ndcg"]
            assert low <= accuracy.ndcg <= high
    # Users in the synthetic log keep to their favourite categories: item-item beats global popularity.
    assert ease.valid.ndcg > pop.valid.ndcg
