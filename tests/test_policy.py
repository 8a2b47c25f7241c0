"""The re-ranker: vectorized over policies and users == a plain loop, and each knob does what it says."""
import numpy as np
import pytest

from recmoo_dag.exposure import ExposurePrices
from recmoo_dag.item_terms import ItemTerms
from recmoo_dag.policy import (
    CALIBRATION,
    DEBIAS,
    DITHER,
    DIVERSITY,
    EXPOSURE_CAP,
    EXPOSURE_FLOOR,
    KEEP_HEAD,
    MIN_DIVERSITY,
    NOVELTY,
    POOL,
    TEMPERATURE,
    VARIABLES,
    accuracy_only_policy,
    dither,
    id_keys,
    policy_vector,
    recommended_items,
    rerank,
)
from recmoo_dag.windows import histories_of

K = 5


def random_context(seed: int, n_users: int = 12, n_items: int = 60, n_cand: int = 40, n_genres: int = 6):
    rng = np.random.default_rng(seed)
    genres = rng.random((n_items + 1, n_genres)) < 0.3
    genres[0] = False
    items = np.stack([rng.choice(np.arange(1, n_items + 1), n_cand, replace=False) for _ in range(n_users)])
    logits = np.sort(rng.normal(0, 2, (n_users, n_cand)), axis=1)[:, ::-1]  # model order: best first
    counts = rng.integers(0, 50, n_items + 1)  # from 60 training users: distinct, uncapped novelty
    counts[0] = 0
    lengths = rng.integers(1, 8, n_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    history = rng.integers(1, n_items + 1, indptr[-1])
    prices = ExposurePrices(np.where(rng.random(n_items + 1) < 0.3, rng.exponential(1.0, n_items + 1), 0.0),
                            -np.where(rng.random(n_items + 1) < 0.3, rng.exponential(1.0, n_items + 1), 0.0), {}, {})
    prices.cap[0] = prices.floor[0] = 0.0
    inputs = {"items": items, "logits": logits.copy(), "item_vectors": genres, "train_counts": counts,
              "n_train_users": 60, "history": (indptr, history), "prices": prices,
              "user_ids": np.array([f"user {u}" for u in range(n_users)]),
              "item_ids": np.array([""] + [str(i) for i in range(1, n_items + 1)])}
    return build_context(**inputs), inputs


def build_context(items, logits, item_vectors, train_counts, n_train_users, history, user_ids, item_ids, prices):
    """A Requests built the way the search, deploy and the service build theirs (item_terms.py)."""
    terms = ItemTerms.build(train_counts, n_train_users, item_vectors, item_ids, prices)
    indptr, events = history
    profiles = terms.profiles(histories_of(indptr, events, np.ones(len(events), dtype=bool)))
    return terms.requests(items, logits, profiles, id_keys(user_ids))


def random_policies(seed: int, n: int, n_cand: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(v.low, v.high, n) for v in VARIABLES])
    x[:, POOL] = rng.integers(K, n_cand + 1, n)
    x[:, KEEP_HEAD] = rng.integers(0, K + 1, n) * (rng.random(n) < 0.5)  # half keep no head: the plain greedy
    x[:3, DIVERSITY] = 0.0  # the λ = 0 path
    return x


def reference_rerank(requests, x: np.ndarray, k: int) -> np.ndarray:
    """The policy written as the formula reads, one user and one slot at a time, in float64."""
    tau, lam, pool = 10.0 ** x[TEMPERATURE], max(x[DIVERSITY], MIN_DIVERSITY), int(x[POOL])
    out = []
    for u in range(requests.n_requests):
        a = (requests.logits[u, :pool].astype(np.float64) - x[DEBIAS] * requests.log_pop[u, :pool]
             - x[EXPOSURE_CAP] * requests.price_cap[u, :pool] - x[EXPOSURE_FLOOR] * requests.price_floor[u, :pool])
        z = (np.exp((a - a.max()) / tau) + x[NOVELTY] * requests.novelty[u, :pool] + x[CALIBRATION] * requests.fit[u, :pool]
             + x[DITHER] * requests.dither[u, :pool])
        chosen = list(range(min(int(x[KEEP_HEAD]), k)))  # the model's own head
        for _ in range(k - len(chosen)):
            best, best_score = -1, -np.inf
            for c in range(pool):
                if c in chosen:
                    continue
                penalty = np.mean([requests.item_sim[requests.items[u, c], requests.items[u, s]] for s in chosen]) \
                    if chosen else 0.0
                if z[c] - lam * penalty > best_score:
                    best, best_score = c, z[c] - lam * penalty
            chosen.append(best)
        out.append(chosen)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_equals_reference(seed):
    requests, _ = random_context(seed)
    policies = random_policies(seed, 9, requests.n_candidates)
    got = rerank(requests, policies, K)
    assert got.shape == (9, requests.n_requests, K)
    for b, x in enumerate(policies):
        np.testing.assert_array_equal(got[b], reference_rerank(requests, x, K), err_msg=f"policy {b}: {x}")


def test_one_request_one_policy_matches_the_batch():
    """The service scores one user with one policy: same function, same answer as inside a batch."""
    requests, inputs = random_context(3)
    policies = random_policies(3, 6, requests.n_candidates)
    batch = rerank(requests, policies, K)
    indptr, history = inputs["history"]
    one = build_context(**{**inputs, "items": inputs["items"][4:5], "logits": inputs["logits"][4:5],
                           "history": (indptr[4:6] - indptr[4], history[indptr[4]:indptr[5]]),
                           "user_ids": inputs["user_ids"][4:5]})
    assert one.n_requests == 1
    for b in range(len(policies)):
        np.testing.assert_array_equal(rerank(one, policies[b], K)[0, 0], batch[b, 4])


def test_threads_do_not_change_results():
    requests, _ = random_context(4, n_users=40)
    policies = random_policies(4, 12, requests.n_candidates)
    np.testing.assert_array_equal(rerank(requests, policies, K, threads=3), rerank(requests, policies, K))


def test_accuracy_only_is_the_model_top_k():
    requests, _ = random_context(5)
    np.testing.assert_array_equal(rerank(requests, accuracy_only_policy(K), K)[0], np.tile(np.arange(K), (requests.n_requests, 1)))


def test_lists_are_unique_and_inside_the_pool():
    requests, _ = random_context(6)
    policies = random_policies(6, 10, requests.n_candidates)
    picks = rerank(requests, policies, K)
    assert (picks < policies[:, POOL, None, None]).all()
    assert all(len(set(row)) == K for row in picks.reshape(-1, K))
    items = recommended_items(requests, picks)
    np.testing.assert_array_equal(items[1, 2], requests.items[2, picks[1, 2]])


def test_knobs_move_the_lists_the_way_they_say():
    requests, _ = random_context(7, n_cand=40)
    base = accuracy_only_policy(K)
    base[POOL] = 40
    novel, diverse = base.copy(), base.copy()
    novel[[TEMPERATURE, NOVELTY]] = [1.0, 1.0]  # flat relevance, full weight on self-information
    diverse[[TEMPERATURE, DIVERSITY]] = [1.0, 1.0]
    picks = rerank(requests, np.stack([base, novel, diverse]), K)
    chosen_novelty = np.take_along_axis(requests.novelty, picks.transpose(1, 0, 2).reshape(requests.n_requests, -1), 1)
    chosen_novelty = chosen_novelty.reshape(requests.n_requests, 3, K).mean(axis=(0, 2))
    assert chosen_novelty[1] > chosen_novelty[0]
    items = recommended_items(requests, picks)
    pair_sim = lambda lists: np.mean([requests.item_sim[a, b] for row in lists for i, a in enumerate(row) for b in row[i + 1:]])
    assert pair_sim(items[2]) < pair_sim(items[0])


def test_a_kept_head_is_the_model_top_and_counts_in_the_diversity_of_the_rest():
    requests, _ = random_context(9, n_cand=40)
    diverse = accuracy_only_policy(K)
    diverse[[TEMPERATURE, DIVERSITY, POOL]] = [1.0, 1.0, 40]
    kept = diverse.copy()
    kept[KEEP_HEAD] = 3
    picks = rerank(requests, np.stack([diverse, kept]), K)
    np.testing.assert_array_equal(picks[1, :, :3], np.tile(np.arange(3), (requests.n_requests, 1)))
    assert (picks[1] != picks[0]).any()
    whole = kept.copy()
    whole[KEEP_HEAD] = K + 5  # more than the list: the model's own top k
    np.testing.assert_array_equal(rerank(requests, whole, K)[0], rerank(requests, accuracy_only_policy(K), K)[0])


def test_bad_policies_fail_loudly():
    requests, _ = random_context(8)
    x = accuracy_only_policy(K)
    with pytest.raises(ValueError, match="pool sizes"):
        rerank(requests, np.where(np.arange(len(x)) == POOL, K - 1, x), K)
    with pytest.raises(ValueError, match="pool sizes"):
        rerank(requests, np.where(np.arange(len(x)) == POOL, 10.5, x), K)
    with pytest.raises(ValueError, match="keep_head"):
        rerank(requests, np.where(np.arange(len(x)) == KEEP_HEAD, 1.5, x), K)
    with pytest.raises(ValueError, match="keep_head"):
        rerank(requests, np.where(np.arange(len(x)) == KEEP_HEAD, -1, x), K)
    with pytest.raises(ValueError, match="columns"):
        rerank(requests, np.zeros((2, 3)), K)


def test_padding_is_listed_only_when_nothing_else_is_left():
    """A user with fewer unseen items than the pool: real candidates first, each position once."""
    _, inputs = random_context(9, n_cand=12)
    items, logits = inputs["items"].copy(), inputs["logits"].copy()
    items[0, 3:], logits[0, 3:] = 0, -np.inf  # user 0 has 3 real candidates, fewer than K
    items[1, 8:], logits[1, 8:] = 0, -np.inf  # user 1 has 8: padding must never be picked
    padded = build_context(**{**inputs, "items": items, "logits": logits})
    policies = random_policies(9, 6, 12)
    picks = rerank(padded, policies, K)
    assert all(len(set(row)) == K for row in picks.reshape(-1, K))
    np.testing.assert_array_equal(np.sort(picks[:, 0, :3], axis=1), np.tile([0, 1, 2], (6, 1)))
    assert (picks[:, 1] < 8).all()


def test_dither_is_a_fixed_uniform_number_per_user_and_item():
    user_keys, item_keys = id_keys([f"user {u}" for u in range(300)]), id_keys([str(i) for i in range(400)])
    items = np.tile(np.arange(400), (300, 1))
    values = dither(user_keys, item_keys, items)  # (300, 400)
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() < 1.0
    counts = np.histogram(values, bins=10, range=(0.0, 1.0))[0]
    assert np.abs(counts / values.size - 0.1).max() < 0.005  # 120k draws: uniform to within 5% per decile
    assert abs(np.corrcoef(values[:, :-1].ravel(), values[:, 1:].ravel())[0, 1]) < 0.02  # neighbours independent
    np.testing.assert_array_equal(dither(user_keys[7:8], item_keys, items[:1]), values[7:8])  # one request, same numbers
    assert (values[0] != values[1]).mean() > 0.99  # users differ...
    np.testing.assert_array_equal(id_keys(["user 0"]), user_keys[:1])  # ...but each keeps its own


def test_dither_spreads_the_lists_over_the_catalog():
    requests, _ = random_context(9, n_users=30, n_cand=40)
    plain = accuracy_only_policy(K)
    plain[[TEMPERATURE, POOL]] = [0.0, 40]
    dithered = plain.copy()
    dithered[DITHER] = 1.0
    items = recommended_items(requests, rerank(requests, np.stack([plain, dithered]), K))
    assert len(np.unique(items[1])) > len(np.unique(items[0]))
    np.testing.assert_array_equal(rerank(requests, dithered, K), rerank(requests, dithered, K))  # and stays deterministic


def test_policy_vector_switches_off_variables_a_version_predates():
    x = policy_vector({"log10_temperature": 0.5, "debias": 0.2, "novelty": 0.1, "calibration": 0.3,
                       "diversity": 0.4, "pool": 30})
    assert x[DITHER] == 0.0 and x[POOL] == 30 and x[DIVERSITY] == 0.4
    with pytest.raises(ValueError, match="unknown"):
        policy_vector({"pool": 10, "serendipity": 1.0})


def test_a_context_too_large_to_hold_its_block_gives_the_same_lists(monkeypatch):
    """Beyond BLOCK_CACHE_BYTES the greedy gathers the similarity rows it reads: same lists, bounded memory."""
    from recmoo_dag import policy

    requests, _inputs = random_context(4, n_users=300)
    policies = random_policies(4, 40, requests.n_candidates)  # ~100 users a tile: three tiles, two threads
    whole = rerank(requests, policies, K, threads=2)
    monkeypatch.setattr(policy, "BLOCK_CACHE_BYTES", 0)
    fresh, _ = random_context(4, n_users=300)
    np.testing.assert_array_equal(rerank(fresh, policies, K, threads=2), whole)
    assert "block" not in fresh.__dict__  # never built
