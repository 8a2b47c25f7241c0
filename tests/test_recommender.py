"""The deployed policy in memory: the same lists as the search's batch path, precomputed or not,
and the fallbacks for unknown users."""
import numpy as np
import pytest

from recmoo_dag import store
from recmoo_dag.batch_scores import Pending
from recmoo_dag.bundle import read_bundle
from recmoo_dag.generator import sequence_scores
from recmoo_dag.item_terms import ItemTerms
from recmoo_dag.policy import id_keys, policy_vector, recommended_items, rerank
from recmoo_dag.recommender import Recommender
from recmoo_dag.windows import histories_of
from tests.deploy_support import FRONT, base_project, deployed_copy


@pytest.fixture
def served(tmp_path, tmp_path_factory, monkeypatch):
    """A tiny project whose deployed policy is the strongly diversified FRONT[2]."""
    monkeypatch.chdir(tmp_path)
    return deployed_copy(base_project(tmp_path_factory), tmp_path, [FRONT[2]])


def test_service_answers_exactly_what_the_batch_reranker_gives_every_user(served):
    """One policy x one user in the service == the search's batch path (ItemTerms.context + rerank)."""
    folder = store.version_dir(served.deploy.store)
    bundle, recommender = read_bundle(folder), Recommender.load(folder)
    assert bundle.prices.cap.any() and bundle.prices.floor.any()  # the exposure stage's prices travel with it
    terms = ItemTerms.build(bundle.train_counts, bundle.n_users, bundle.item_vectors, bundle.item_ids, bundle.prices)
    profiles = terms.profiles(histories_of(bundle.indptr, bundle.history, bundle.opens))
    requests = terms.requests(bundle.cand_items, bundle.cand_scores, profiles, id_keys(bundle.user_ids))
    policy = policy_vector(bundle.variables)[None]
    batch = recommended_items(requests, rerank(requests, policy, 10))[0]  # (U, 10)
    unpriced = ItemTerms.build(bundle.train_counts, bundle.n_users, bundle.item_vectors, bundle.item_ids)
    unpriced_requests = unpriced.requests(bundle.cand_items, bundle.cand_scores, profiles, id_keys(bundle.user_ids))
    assert (recommended_items(unpriced_requests, rerank(unpriced_requests, policy, 10))[0] != batch).any()
    # Users with fewer than N unseen items have padding candidates, which the service drops and
    # the batch path keeps (harmless at ML-100K scale, where nobody has seen 1682 - 200 films).
    full = np.flatnonzero((bundle.cand_items != 0).all(axis=1))
    assert len(full) > len(bundle.user_ids) // 2
    for u, user in zip(full, bundle.user_ids[full]):
        served_ids = [item["item_id"] for item in recommender.recommend(str(user), k=10).items]
        assert served_ids == list(bundle.item_ids[batch[u]]), user


def test_lists_precomputed_at_load_equal_the_per_request_path(served):
    """Known users and the popularity fallback are answered from whole-pool lists computed at load;
    any k up to the pool, with or without exclusions, gives what a fresh re-ranking gives."""
    recommender = Recommender.load(store.version_dir(served.deploy.store))
    bundle = recommender.bundle
    ids = lambda items, picks: [str(bundle.item_ids[i]) for i in items[picks]]
    for u in range(0, len(bundle.user_ids), 5):
        items, logits = bundle.cand_items[u], bundle.cand_scores[u]
        if (items == 0).any():
            continue
        for k in (1, 3, 10, recommender.pool):
            fresh = recommender._rerank(items, logits, recommender.profiles[u], recommender.user_keys[u:u + 1], k)
            served_ids = [i["item_id"] for i in recommender.recommend(str(bundle.user_ids[u]), k=k).items]
            assert served_ids == ids(items, fresh), (u, k)
    popular, log_pop = recommender.popular_items, recommender.terms.log_pop[recommender.popular_items]
    fresh = recommender._rerank(popular, log_pop, np.zeros(recommender.terms.unit.shape[1], np.float32),
                                recommender.anonymous_key, 10)
    assert [i["item_id"] for i in recommender.recommend("stranger", k=10).items] == ids(popular, fresh)
    excluded = ids(popular, fresh)[:2]
    answer = [i["item_id"] for i in recommender.recommend("stranger", k=10, exclude=excluded).items]
    assert len(answer) == 10 and not set(excluded) & set(answer)


def test_popularity_fallback_is_re_ranked_by_the_policy(tmp_path, tmp_path_factory, monkeypatch):
    # Under the accuracy-only policy the fallback is plain popularity order.
    monkeypatch.chdir(tmp_path)
    params = deployed_copy(base_project(tmp_path_factory), tmp_path, [FRONT[0]])
    bundle = read_bundle(store.version_dir(params.deploy.store))
    order = np.lexsort((np.arange(len(bundle.train_counts)), -bundle.train_counts))
    expected = [str(bundle.item_ids[i]) for i in order if i][:10]
    answer = Recommender.load(store.version_dir(params.deploy.store)).recommend("stranger", k=10)
    assert [item["item_id"] for item in answer.items] == expected


def test_a_known_user_scored_again_gets_the_candidates_deploy_wrote(served):
    """The fill for a known user whose exclusions empty the candidates (or who asks for more than
    them) scores the whole sequence again: with nothing excluded, that is exactly the row deploy
    precomputed, scored alone or in the service's batches."""
    recommender = Recommender.load(store.version_dir(served.deploy.store), cache_bytes=1 << 20)
    bundle = recommender.bundle
    full = np.flatnonzero((bundle.cand_items != 0).all(axis=1))
    pending = [recommender.prepare(str(bundle.user_ids[u]), k=recommender.n_candidates + 1) for u in full]
    assert all(isinstance(p, Pending) and p.source == "user" for p in pending)
    batch_items, batch_scores = recommender._candidates(pending, recommender.scorer.scores(pending))  # (U', N)
    for row, (u, p) in enumerate(zip(full, pending)):
        scores = sequence_scores(recommender.generator, p.sequence, p.opens, p.window, bundle.ease)[None]
        alone_items, alone_scores = recommender._candidates([p], scores)  # (1, N)
        for items, item_scores in ((alone_items[0], alone_scores[0]), (batch_items[row], batch_scores[row])):
            assert np.array_equal(items, bundle.cand_items[u]), u
            assert np.allclose(item_scores, bundle.cand_scores[u], atol=1e-5), u
