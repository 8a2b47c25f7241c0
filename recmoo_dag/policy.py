"""The parametric re-ranker: a user's model candidates -> a top-k list, for many policies at once.

A policy is a vector of the ten decision variables in `VARIABLES`. For candidate c of user u, the
list's first `keep_head` slots are the model's own top candidates; the others are filled greedily
(max-sum diversification, Gollapudi & Sharma 2009; Borodin et al. 2012): step t appends the argmax of

    score_t(c) = rel(c) + w_nov * nov(c) + w_cal * fit(u, c) + w_dit * dit(u, c) - λ * mean_{s in list} sim(c, s)
    rel(c)     = exp((a(c) - max_{c' in pool} a(c')) / τ)
    a(c)       = logit(c) - β * ln π(c) - w_cap * price_cap(c) - w_floor * price_floor(c)

price_cap and price_floor are the exposure prices solved across all users' lists (exposure.py), in
the units of the logits: with w = 1, no other term and the whole pool, every user's top k is the
global allocation's. They are per-item constants, so a request still costs O(pool).

over the first `pool` candidates (model order). rel, nov, fit, dit and sim all lie in [0, 1], so the
weights compare like with like. The penalty is the mean similarity to the list, not MMR's maximum
(Carbonell & Goldstein 1998): ILD@k, the objective, is the mean pairwise dissimilarity, and a pick's
mean dissimilarity to the list is exactly what it adds to the list's sum. At equal ILD@10 it kept
more NDCG@10 than the maximum on ML-100K and ml-latest-small and tied on Last.fm-2K, and the
search's hypervolume grew on all three (README "The list's mean similarity, not its maximum").
dit(u, c) is a pseudo-random number fixed by the user's and the item's ids (`dither`): the same
user always gets the same list, and the search, the deploy stage and the service all see the same
numbers. One function, `rerank`, serves the search (population x all
validation users), the HTTP service (one policy x one user) and the tests.

Speed (the search scores ~20k policies on ~1k users, in float32): a compiled (numba) pass writes
the exponents of rel, NumPy's SIMD exp takes them, and a compiled greedy completes the static part
z(c) = rel + w_nov nov + w_cal fit + w_dit dit in its first slot; each further slot is one pass over the pool
that adds the last pick's similarity (a contiguous row of the user's similarity block) to each
candidate's sum and takes the argmax. The greedy uses z / λ - sum / t, which has the argmax of
z - λ mean for λ > 0 (t: the items listed so far). Padding candidates (item 0, score -inf) are never picked
while a real candidate is left.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit

from recmoo_dag.errors import InputError

MIN_EXPONENT = -80.0  # rel / λ >= e^-80: relevance more than 80 τ below the best ties (see _exponents)
MIN_DIVERSITY = 1e-6  # λ below this acts as this: one code path; it then only breaks exact ties
NEG_INF = np.float32(-np.inf)
TILE_ROWS = 4096  # (policy, user) rows per tile: its scores (rows x pool floats) stay in L2/L3
BLOCK_CACHE_BYTES = 1 << 30  # a request set's candidate-similarity block is kept whole up to 1 GiB
DITHER_SALT = b"recmoo-dither-v1"  # part of every id's hash: a new salt re-draws every user's dither


@dataclass(frozen=True)
class Variable:
    name: str
    low: float
    high: float
    integer: bool
    meaning: str


VARIABLES = (
    Variable("log10_temperature", -1.0, 1.0, False,
             "τ of rel = exp(Δlogit / τ) (Hinton et al. 2015): small τ keeps the model's order, "
             "large τ flattens relevance so the other terms can reorder the pool"),
    Variable("debias", 0.0, 1.0, False,
             "β of the logit adjustment a = logit - β ln π (Menon et al. 2021): 1 ranks by "
             "p(i|u) / π(i), the lift over train popularity"),
    Variable("exposure_cap", 0.0, 1.0, False,
             "weight on the item's capacity price (exposure.py: the dual of 'no item in more than "
             "cap_slack times its share of the lists'): over-exposed items move down everyone's list"),
    Variable("exposure_floor", 0.0, 1.0, False,
             "weight on the item's floor subsidy (exposure.py: the dual of 'every item in at least "
             "`floor` lists', Antikacioglu & Ravi 2017): each tail item reaches the users it suits best"),
    Variable("novelty", 0.0, 1.0, False,
             "weight on self-information -log2 popularity / its maximum (Zhou et al. 2010)"),
    Variable("calibration", 0.0, 1.0, False,
             "weight on the cosine between the item's genres and the user's history genre "
             "distribution p(g|u) (Steck 2018), the per-item part of calibration"),
    Variable("dither", 0.0, 1.0, False,
             "weight on a per-(user, item) pseudo-random number in [0, 1) (dithering, Dunning & "
             "Friedman 2014): different users get different near-ties, which spreads the "
             "catalogue's exposure over users at little accuracy cost"),
    Variable("diversity", 0.0, 1.0, False,
             "λ of the penalty on the mean similarity to items already in the list (max-sum "
             "diversification: the greedy step of ILD, Gollapudi & Sharma 2009)"),
    Variable("keep_head", 0.0, 5.0, True,
             "the list's first keep_head slots are the model's own top candidates, the re-ranking fills the "
             "rest: NDCG@10's position discount puts nearly half of a list's weight on its first 3 slots, so "
             "re-ranking only the tail moves coverage at a small accuracy cost whose noise is small too "
             "(the paired interval the gate tests narrows). The search's range is [0, k // 2]"),
    Variable("pool", 10.0, 200.0, True,
             "how many of the model's candidates are re-ranked: more room, more latency"),
)
VARIABLE_NAMES = tuple(v.name for v in VARIABLES)
(TEMPERATURE, DEBIAS, EXPOSURE_CAP, EXPOSURE_FLOOR, NOVELTY, CALIBRATION, DITHER, DIVERSITY, KEEP_HEAD,
 POOL) = range(len(VARIABLES))


def accuracy_only_policy(k: int) -> np.ndarray:
    """The policy that returns the model's own top-k: no re-ranking terms, pool k. (d,)"""
    x = np.zeros(len(VARIABLES))
    x[POOL] = k
    return x


def policy_vector(variables: dict) -> np.ndarray:
    """A policy from its {name: value} form (a deployed version's record): (d,) in `VARIABLES` order.
    A variable added after the version was deployed takes 0, which switches its term off, so the
    version serves exactly the lists it was chosen for."""
    unknown = [name for name in variables if name not in VARIABLE_NAMES]
    if unknown or "pool" not in variables:
        raise InputError(f"policy variables {sorted(variables)}: unknown {unknown} or no pool (expected {VARIABLE_NAMES})")
    return np.array([float(variables.get(name, 0.0)) for name in VARIABLE_NAMES])


@dataclass(frozen=True)
class Requests:
    """What the re-ranker needs about a set of requests, computed once for every policy
    (built by `item_terms.ItemTerms.requests`)."""

    items: np.ndarray  # (U, N) int32 candidate item index, model order (best first)
    logits: np.ndarray  # (U, N) float32 model scores
    log_pop: np.ndarray  # (U, N) float32 ln π(c), smoothed train popularity
    price_cap: np.ndarray  # (U, N) float32 ≥ 0, the item's capacity price (0 without prices)
    price_floor: np.ndarray  # (U, N) float32 ≤ 0, the item's floor subsidy (0 without prices)
    novelty: np.ndarray  # (U, N) float32 self-information / max, in [0, 1]
    fit: np.ndarray  # (U, N) float32 cosine(item vector, user profile), in [0, 1]
    dither: np.ndarray  # (U, N) float32 from `dither`, in [0, 1)
    item_sim: np.ndarray  # (I + 1, I + 1) float32 from metrics.item_similarity

    @property
    def n_requests(self) -> int:
        return self.items.shape[0]

    @property
    def n_candidates(self) -> int:
        return self.items.shape[1]

    @property
    def block_bytes(self) -> int:
        return self.n_requests * self.n_candidates ** 2 * 4

    @cached_property
    def block(self) -> np.ndarray:
        """(U, N, N) similarity among each user's candidates.

        The greedy step reads one contiguous row of it per list slot, several times faster than
        gathering from the item-item matrix. Built once per request set, at its full width (a search
        pays for it once; a live request holds only its pool).
        """
        return self.item_sim[self.items[:, :, None], self.items[:, None, :]]


def id_keys(ids) -> np.ndarray:
    """A stable 64-bit key per id string (salted BLAKE2b): (n,) str -> (n,) uint64. Same id, same key,
    on every machine and in every process (Python's own hash() is randomized per process)."""
    return np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=DITHER_SALT).digest(),
                                    "little") for i in ids], dtype=np.uint64)


def dither(user_keys: np.ndarray, item_keys: np.ndarray, items: np.ndarray) -> np.ndarray:
    """dit(u, c) in [0, 1): splitmix64's finalizer (Steele et al. 2014) of the user's key mixed with
    the item's, its top 24 bits as a float32 (exact). user_keys (U,), item_keys (I + 1,) from
    `id_keys`; items (U, N) -> (U, N) float32."""
    x = user_keys[:, None] ^ (item_keys[items] * np.uint64(0x9E3779B97F4A7C15))  # wraps mod 2^64
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)


def policy_terms(policies: np.ndarray) -> np.ndarray:
    """Per-policy float32 coefficients of the scores: 1/τ, β/τ, w_cap/τ, w_floor/τ, ln λ, w_nov/λ,
    w_cal/λ, w_dit/λ. (B, d) -> (B, 8).

    Computed once in NumPy, so every compiled pass reads the same bits whatever the batch."""
    x = policies.astype(np.float32)
    lam = np.maximum(x[:, DIVERSITY], np.float32(MIN_DIVERSITY))
    inv_t = np.float32(10.0) ** -x[:, TEMPERATURE]
    return np.column_stack([inv_t, x[:, DEBIAS] * inv_t, x[:, EXPOSURE_CAP] * inv_t, x[:, EXPOSURE_FLOOR] * inv_t,
                            np.log(lam), x[:, NOVELTY] / lam, x[:, CALIBRATION] / lam, x[:, DITHER] / lam])


@njit(cache=True, nogil=True)
def _exponents(terms, pools, logits, log_pop, price_cap, price_floor, out):  # pragma: no cover - compiled
    """The exponent of rel / λ = exp((a - max_pool a) / τ - ln λ), floored at MIN_EXPONENT, for every
    (policy, user) row: terms (B, 8) from `policy_terms`; logits, log_pop, price_cap, price_floor
    (U', W) -> out (B, U', W).
    Outside the pool (and on padding, logit -inf) the value is irrelevant: the greedy never reads it."""
    n_policies, n_users = out.shape[:2]
    floor = np.float32(MIN_EXPONENT)
    for b in range(n_policies):
        inv_t, debias_t, cap_t, floor_t, log_lam, pool = (terms[b, 0], terms[b, 1], terms[b, 2], terms[b, 3],
                                                           terms[b, 4], pools[b])
        for u in range(n_users):
            row, logit, pop, priced, subsidized = out[b, u], logits[u], log_pop[u], price_cap[u], price_floor[u]
            best = NEG_INF
            for c in range(pool):
                # The adjusted logit / τ; a zero weight adds exact zeros, so a policy without prices
                # gets the bits it got before prices existed.
                row[c] = inv_t * logit[c] - debias_t * pop[c] - cap_t * priced[c] - floor_t * subsidized[c]
                best = max(best, row[c])
            shift = best + log_lam
            for c in range(pool):
                row[c] = max(row[c] - shift, floor)  # no float32 subnormals: they are ~100x slower
            row[pool:] = floor


@njit(cache=True, nogil=True, inline="always")
def _fold(best: float, pick: int, score: float, position: int) -> tuple[float, int]:  # pragma: no cover
    """Merge one argmax lane into another: the larger score, on ties the earlier position."""
    if pick < 0 or score > best or (score == best and 0 <= position < pick):
        return score, position
    return best, pick


@njit(cache=True, nogil=True)
def _greedy(rel, terms, pools, keeps, items, logits, novelty, fit, dither, block, first_user, item_sim, k,
            out):  # pragma: no cover
    """The greedy for a tile of users and all policies. rel (B, U', W) rel / λ; terms (B, 8) from
    `policy_terms`; pools, keeps (B,); items, logits, novelty, fit, dither (U', W); block (U, N, N) from
    Requests.block, the tile starting at user `first_user` -> out (B, U', k) positions.

    Slot t < keeps[b] takes candidate t, the model's own choice, once the slot's pass has added
    the previous pick's row to the similarity sums: the kept head counts in the penalty of the rest.

    An empty block (0, W, W) means the request set's block is too large to keep: a user's similarity
    rows are then gathered from item_sim (I + 1, I + 1) when a list first needs them, once per user
    for all policies; lists pick a few dozen distinct candidates, so most of the W rows never are.

    Slot 0 completes the static score z / λ = rel / λ + (w_nov / λ) nov + (w_cal / λ) fit
    + (w_dit / λ) dit, -inf on padding (item 0 or score -inf), in place, and takes its argmax.

    Users outside, policies inside: a user's block stays in L1/L2 for every policy. A list slot
    is one pass over the pool that adds the last pick's row to the similarity sums and takes the
    argmax (ties: the model's better-ranked candidate) in four independent lanes, which keeps the
    compare-and-select chain from bounding the loop's speed.
    """
    n_policies, n_users, width = rel.shape
    simsum = np.empty(width, np.float32)  # summed similarity to the list so far; +inf once picked
    zero, inf = np.float32(0.0), np.float32(np.inf)
    lazy = block.shape[0] == 0
    gathered = np.empty((width if lazy else 0, width), np.float32)
    filled = np.zeros(width, np.bool_)
    for u in range(n_users):
        if lazy:
            sims = gathered
            filled[:] = False
        else:
            sims = block[first_user + u]
        for b in range(n_policies):
            pool, keep, zb = pools[b], keeps[b], rel[b, u]
            w_nov, w_cal, w_dit = terms[b, 5], terms[b, 6], terms[b, 7]
            pick, best = 0, NEG_INF
            for c in range(pool):  # slot 0: nothing listed yet, no penalty
                if items[u, c] == 0 or not np.isfinite(logits[u, c]):
                    zb[c] = NEG_INF
                else:
                    zb[c] += w_nov * novelty[u, c]
                    zb[c] += w_cal * fit[u, c]
                    zb[c] += w_dit * dither[u, c]
                if zb[c] > best:
                    best, pick = zb[c], c
            simsum[:pool] = zero
            for t in range(k):
                if t > 0:
                    if lazy and not filled[pick]:
                        source = item_sim[items[u, pick]]
                        for c in range(width):
                            gathered[pick, c] = source[items[u, c]]
                        filled[pick] = True
                    row = sims[pick]
                    per = np.float32(1.0) / np.float32(t)
                    b0 = b1 = b2 = b3 = NEG_INF  # float32 like the scores: no conversions in the loop
                    p0 = p1 = p2 = p3 = -1
                    end = pool - pool % 4
                    for c in range(0, end, 4):
                        m0 = simsum[c] + row[c]
                        m1 = simsum[c + 1] + row[c + 1]
                        m2 = simsum[c + 2] + row[c + 2]
                        m3 = simsum[c + 3] + row[c + 3]
                        simsum[c], simsum[c + 1], simsum[c + 2], simsum[c + 3] = m0, m1, m2, m3
                        s0, s1, s2, s3 = zb[c] - m0 * per, zb[c + 1] - m1 * per, zb[c + 2] - m2 * per, zb[c + 3] - m3 * per
                        if s0 > b0:
                            b0, p0 = s0, c
                        if s1 > b1:
                            b1, p1 = s1, c + 1
                        if s2 > b2:
                            b2, p2 = s2, c + 2
                        if s3 > b3:
                            b3, p3 = s3, c + 3
                    for c in range(end, pool):
                        m0 = simsum[c] + row[c]
                        simsum[c] = m0
                        if zb[c] - m0 * per > b0:
                            b0, p0 = zb[c] - m0 * per, c
                    best, pick = _fold(b0, p0, b1, p1)
                    best, pick = _fold(best, pick, b2, p2)
                    best, pick = _fold(best, pick, b3, p3)
                    if best == NEG_INF:  # only padding left (a tiny catalog): the first position not yet listed
                        pick = 0
                        while simsum[pick] == inf:
                            pick += 1
                if t < keep and zb[t] != NEG_INF:  # padding sorts last: a kept slot never skips a real candidate
                    pick = t
                out[b, u, t] = pick
                simsum[pick] = inf


def rerank(requests: Requests, policies: np.ndarray, k: int, threads: int = 1) -> np.ndarray:
    """Top-k positions (indices into requests.items' columns) for every policy and user.

    policies (B, d) in `VARIABLES` order (pool an integer in [k, N], keep_head an integer >= 0) -> (B, U, k) int32.
    Users are cut into tiles of about TILE_ROWS (policy, user) rows; the compiled passes and NumPy's
    exp release the GIL, so `threads` > 1 runs tiles in parallel. Every (policy, user) row is
    computed on its own, in a fixed order of float32 operations: results depend neither on the
    threads nor on the rest of the batch.
    """
    policies = np.atleast_2d(np.asarray(policies, dtype=np.float64))
    if policies.ndim != 2 or policies.shape[1] != len(VARIABLES):
        raise ValueError(f"rerank: policies must be (B, {len(VARIABLES)}) columns {VARIABLE_NAMES}, got {policies.shape}")
    pools = policies[:, POOL]
    if (pools != np.round(pools)).any() or pools.min() < k or pools.max() > requests.n_candidates:
        raise ValueError(f"rerank: pool sizes must be integers in [k={k}, N={requests.n_candidates}], "
                         f"got {pools.min()}..{pools.max()}")
    keeps = policies[:, KEEP_HEAD]
    if (keeps != np.round(keeps)).any() or keeps.min() < 0:
        raise ValueError(f"rerank: keep_head must be integers >= 0, got {keeps.min()}..{keeps.max()}")
    out = np.empty((len(policies), requests.n_requests, k), dtype=np.int32)
    width, int_pools, int_keeps = int(pools.max()), pools.astype(np.int64), keeps.astype(np.int64)
    step = max(1, TILE_ROWS // len(policies))
    tiles = [slice(u, min(u + step, requests.n_requests)) for u in range(0, requests.n_requests, step)]

    terms = policy_terms(policies)
    # The whole request set's block, built once and shared by the threads and policies, while it
    # fits in memory; beyond that (100k users x 200 candidates would be 16 GB), and for one policy
    # (whose lists read k of a user's N rows: a live request), the greedy gathers the rows it reads.
    if len(policies) > 1 and requests.block_bytes <= BLOCK_CACHE_BYTES:
        block, item_sim = np.ascontiguousarray(requests.block), np.empty((0, 0), np.float32)
    else:
        block, item_sim = np.empty((0, width, width), np.float32), np.ascontiguousarray(requests.item_sim)

    def run(users: slice) -> None:
        # Contiguous copies of the tile: the compiled functions then see one array layout only, so
        # they are specialized (and cached on disk) once, never in the middle of serving a request.
        items, logits, log_pop, cap, floor, novelty, fit, dit = (np.ascontiguousarray(a[users, :width]) for a in (
            requests.items, requests.logits, requests.log_pop, requests.price_cap, requests.price_floor,
            requests.novelty, requests.fit, requests.dither))
        rel = np.empty((len(policies), users.stop - users.start, width), dtype=np.float32)
        _exponents(terms, int_pools, logits, log_pop, cap, floor, rel)
        np.exp(rel, out=rel)  # NumPy's SIMD exp: a scalar libm exp would cost more than the greedy
        picks = np.empty((len(policies), users.stop - users.start, k), dtype=np.int32)
        _greedy(rel, terms, int_pools, int_keeps, items, logits, novelty, fit, dit, block, users.start, item_sim, k, picks)
        out[:, users] = picks

    if threads > 1 and len(tiles) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, tiles))
    else:
        for users in tiles:
            run(users)
    return out


def recommended_items(requests: Requests, positions: np.ndarray) -> np.ndarray:
    """Item indices of re-ranked positions: (B, U, k) -> (B, U, k) int32."""
    rows = (np.arange(requests.n_requests, dtype=np.int32) * np.int32(requests.n_candidates))[:, None]  # (U, 1) user offsets
    return requests.items.ravel()[positions + rows]
