"""Pareto geometry: dominance, ε-thinning to a limit, hypervolume exact and approximated."""
import numpy as np
import pytest

from recmoo_dag import pareto as P


def test_hypervolume_by_hand_and_approximation():
    # 2-D, reference (1, 1): the union of [0.5, 1] x [0.2, 1] and [0.2, 1] x [0.6, 1]
    points = np.array([[0.5, 0.2], [0.2, 0.6], [0.6, 0.7]])  # the third is dominated
    assert P.hypervolume(points, 1.0) == pytest.approx(0.5 * 0.8 + 0.3 * 0.4)
    assert P.hypervolume(np.array([[1.2, 0.0]]), 1.0) == 0.0  # outside the reference box
    rng = np.random.default_rng(0)
    sphere = rng.random((300, 5))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    exact = P.hypervolume(sphere, 1.1)
    exact_max, P.HV_EXACT_MAX = P.HV_EXACT_MAX, 10
    try:
        assert P.hypervolume(sphere, 1.1) == pytest.approx(exact, rel=2e-3)
    finally:
        P.HV_EXACT_MAX = exact_max


def test_epsilon_thinning_keeps_one_policy_per_box_and_covers_the_front():
    points = np.array([[0.01, 0.99], [0.02, 0.98], [0.51, 0.49], [0.99, 0.01], [0.52, 0.48]])
    kept = P.epsilon_thin(points, 0.1)
    np.testing.assert_array_equal(kept, [1, 3, 4])  # rows 0 and 2 share a box with a row nearer its corner
    rng = np.random.default_rng(4)
    cloud = rng.random((3000, 4))
    cloud = cloud[P.nondominated(cloud)]
    for epsilon in (0.05, 0.2):
        kept = P.epsilon_thin(cloud, epsilon)
        assert 0 < len(kept) < len(cloud)
        # ε-Pareto: every front point is ε-dominated by a kept one (within one box side per objective)
        gap = (cloud[kept][None, :, :] - cloud[:, None, :] <= epsilon + 1e-12).all(axis=2).any(axis=1)
        assert gap.all()


def test_thinning_to_a_limit_keeps_an_epsilon_pareto_subset_that_fits():
    rng = np.random.default_rng(5)
    cloud = rng.random((4000, 5))
    cloud = cloud[P.nondominated(cloud)]
    assert len(P.epsilon_thin(cloud, 0.02)) > 50
    kept = P.thin_to(cloud, 0.02, 50)
    assert 45 <= len(kept) <= 50  # the finest ε that fits: close to the limit, not a doubling's fraction of it
    np.testing.assert_array_equal(kept, P.thin_to(cloud, 0.02, 50))
    small = P.thin_to(cloud, 0.02, 10_000)  # the limit does not bind: plain ε-thinning
    np.testing.assert_array_equal(small, P.epsilon_thin(cloud, 0.02))
