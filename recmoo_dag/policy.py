"""The parametric re-ranker: a user's model candidates -> a top-k list, for many policies at once.

A policy is a vector of the six decision variables in `VARIABLES`. For candidate c of user u, the
list is built greedily (Carbonell & Goldstein 1998's MMR); step t appends the argmax of

    score_t(c) = rel(c) + w_nov * nov(c) + w_cal * fit(u, c) - λ * max_{s in list} sim(c, s)
    rel(c)     = exp((a(c) - max_{c' in pool} a(c')) / τ),   a(c) = logit(c) - β * ln π(c)

over the first `pool` candidates (model order). rel, nov, fit and sim all lie in [0, 1], so the
weights compare like with like. One function, `rerank`, serves the search (population x all
validation users), the HTTP service (one policy x one user) and the tests.

Speed (the search scores ~20k policies): everything static is folded once per policy into
z(c) = rel + w_nov nov + w_cal fit, and the greedy step uses z / λ - maxsim, which has the same
argmax as z - λ maxsim for λ > 0 and saves a multiply per step. The similarity block of each user's
candidates is gathered once per context with +inf on its diagonal, so the max-update that adds c to
the list also removes c from the pool. Rows (policy, user) are processed in cache-sized tiles.
Two guards: the exponent of rel is floored at MIN_EXPONENT (float32 subnormals are ~100x slower),
and padding candidates (item 0, score -inf) are never in a pool.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from recmoo_dag.metrics import self_information

MIN_EXPONENT = -80.0  # rel / λ >= e^-80: relevance more than 80 τ below the best ties (see static_scores)
MIN_DIVERSITY = 1e-6  # λ below this acts as this: one code path; it then only breaks exact ties
WIDTH_STEP = 25  # pools are processed at widths rounded up to this: <= 24 wasted columns, few groups
TILE_ELEMENTS = 131_072  # rows x width per tile: few NumPy calls per tile, arrays still L2/L3-resident


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
    Variable("novelty", 0.0, 1.0, False,
             "weight on self-information -log2 popularity / its maximum (Zhou et al. 2010)"),
    Variable("calibration", 0.0, 1.0, False,
             "weight on the cosine between the item's genres and the user's history genre "
             "distribution p(g|u) (Steck 2018), the per-item part of calibration"),
    Variable("diversity", 0.0, 1.0, False,
             "λ of the MMR penalty on the max similarity to items already in the list "
             "(Carbonell & Goldstein 1998)"),
    Variable("pool", 10.0, 200.0, True,
             "how many of the model's candidates are re-ranked: more room, more latency"),
)
NAMES = tuple(v.name for v in VARIABLES)
TEMPERATURE, DEBIAS, NOVELTY, CALIBRATION, DIVERSITY, POOL = range(len(VARIABLES))


def accuracy_only(k: int) -> np.ndarray:
    """The policy that returns the model's own top-k: no re-ranking terms, pool k. (d,)"""
    x = np.zeros(len(VARIABLES))
    x[POOL] = k
    return x


@dataclass(frozen=True)
class Prefix:
    """Every user's first W candidates, laid out for one width group's array program."""

    relevance_terms: np.ndarray  # (2, U * W) float32 rows: logit, ln π
    other_terms: np.ndarray  # (2, U * W) float32 rows: novelty, fit
    padding: np.ndarray  # (U, W) bool: item 0 / score -inf, a user with fewer than W unseen items


@dataclass(frozen=True)
class Context:
    """What the re-ranker needs about a set of requests, computed once for every policy."""

    items: np.ndarray  # (U, N) int32 candidate item index, model order (best first)
    logits: np.ndarray  # (U, N) float32 model scores
    log_pop: np.ndarray  # (U, N) float32 ln π(c), smoothed train popularity
    novelty: np.ndarray  # (U, N) float32 self-information / max, in [0, 1]
    fit: np.ndarray  # (U, N) float32 cosine(item vector, user profile), in [0, 1]
    item_sim: np.ndarray  # (I + 1, I + 1) float32 from metrics.item_similarity
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # of `block` and `prefix`

    @property
    def n_users(self) -> int:
        return self.items.shape[0]

    @property
    def n_candidates(self) -> int:
        return self.items.shape[1]

    def block(self, width: int) -> np.ndarray:
        """(U * B, B) similarity among each user's first B >= width candidates, +inf on the diagonal.

        Every width group gathers rows of it and slices them (sim[rows, :W] copies only W floats),
        so one block serves all pool sizes up to B. Built for the widest pool asked so far and kept
        (a pure memo); one live request with a small pool pays for pool^2 similarities, not N^2.
        """
        if self._memo.get("block_width", 0) < width:
            first = self.items[:, :width]
            block = self.item_sim[first[:, :, None], first[:, None, :]]  # (U, B, B)
            diagonal = np.arange(width)
            block[:, diagonal, diagonal] = np.inf  # picking c sets maxsim(c) = inf: c leaves the pool
            self._memo["block"], self._memo["block_width"] = block.reshape(-1, width), width
        return self._memo["block"]

    def prefix(self, width: int) -> Prefix:
        """The first `width` candidates of every user; built on first use and kept (a pure memo)."""
        if width not in self._memo:
            first = self.items[:, :width]
            padding = (first == 0) | ~np.isfinite(self.logits[:, :width])  # (U, W)
            logits = np.where(padding, 0.0, self.logits[:, :width])  # finite: no inf * 0 in the products
            rows = lambda *arrays: np.stack([a[:, :width].ravel() for a in arrays]).astype(np.float32)
            self._memo[width] = Prefix(rows(logits, self.log_pop), rows(self.novelty, self.fit), padding)
        return self._memo[width]


def user_profiles(indptr: np.ndarray, history: np.ndarray, unit_vectors: np.ndarray) -> np.ndarray:
    """Mean unit item vector of each user's history: Steck 2018's genre distribution p(g|u), up to
    scale, for genre multi-hots. indptr (U + 1,), history (E,), unit_vectors (I + 1, d) -> (U, d)."""
    lengths = np.diff(indptr)
    sums = np.zeros((len(lengths), unit_vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, np.repeat(np.arange(len(lengths)), lengths), unit_vectors[history])
    return (sums / np.maximum(lengths, 1)[:, None]).astype(np.float32)


def build_context(items: np.ndarray, logits: np.ndarray, item_vectors: np.ndarray, sim: np.ndarray,
                  train_counts: np.ndarray, history: tuple[np.ndarray, np.ndarray],
                  n_train_users: int | None = None) -> Context:
    """Precompute the per-candidate terms of a set of requests (valid, test, or one live request).

    items, logits (U, N); item_vectors (I + 1, d) genre multi-hots or embeddings; sim (I + 1, I + 1)
    from `metrics.item_similarity`; train_counts (I + 1,); history (indptr (U + 1,), items) is what
    is known about these users at request time. n_train_users scales self-information; it defaults
    to U (right when the requests are all training users) and must be given for a subset, so one
    request gets the same terms as inside the batch.
    """
    items = np.asarray(items, dtype=np.int32)
    if items.shape[0] != len(history[0]) - 1 or np.shape(logits) != items.shape:
        raise ValueError(f"build_context: candidates {items.shape}, scores {np.shape(logits)} and "
                         f"{len(history[0]) - 1} users' histories disagree")
    counts = np.asarray(train_counts, dtype=np.float64)
    info = self_information(counts, items.shape[0] if n_train_users is None else n_train_users)
    probability = (counts + 1.0) / (counts.sum() + len(counts))  # add-one: unseen items stay finite
    vectors = np.asarray(item_vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)  # (I + 1, d)
    profiles = user_profiles(history[0], history[1], unit)  # (U, d)
    profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
    fit = np.einsum("und,ud->un", unit[items], profiles)  # (U, N) cosine to the user's profile
    return Context(
        items=items,
        logits=np.asarray(logits, dtype=np.float32),
        log_pop=np.log(probability[items]).astype(np.float32),
        novelty=(info[items] / info.max()).astype(np.float32),
        fit=np.clip(fit, 0.0, 1.0).astype(np.float32),
        item_sim=np.asarray(sim, dtype=np.float32),
    )


def static_scores(view: Prefix, policies: np.ndarray, users: slice) -> np.ndarray:
    """z / λ of each candidate (the score before any similarity), -inf outside each policy's pool.

    rel / λ = exp((a - max a) / τ - ln λ): one exp does the temperature and the 1/λ scaling.
    Only elementwise operations in a fixed order (no BLAS products, whose rounding can depend on
    the batch's shape): a policy's scores are bit-identical whatever else is in the batch, so the
    search, the deploy stage and one live request agree exactly.
    policies (B, d) -> (B * U', W) float32 for the users in `users`.
    """
    n_policies, width = len(policies), view.padding.shape[1]
    columns = slice(users.start * width, users.stop * width)
    x = policies.astype(np.float32)
    lam = np.maximum(x[:, DIVERSITY], np.float32(MIN_DIVERSITY))  # (B,)
    inv_t = np.float32(10.0) ** -x[:, TEMPERATURE]  # (B,) 1 / τ
    logit, log_pop = view.relevance_terms[:, columns]  # (U' * W,) each
    a = inv_t[:, None] * logit  # (B, U' * W) adjusted logit / τ
    a -= (x[:, DEBIAS] * inv_t)[:, None] * log_pop
    a = a.reshape(-1, width)  # (B * U', W)
    outside = np.arange(width) >= policies[:, POOL, None]  # (B, W)
    full_outside = np.repeat(outside, users.stop - users.start, axis=0)  # (B * U', W), no broadcasting below
    full_outside |= np.tile(view.padding[users], (n_policies, 1))  # padding is never in a pool
    np.copyto(a, -np.inf, where=full_outside)  # the pool's max must ignore what lies outside it
    best = np.take_along_axis(a, a.argmax(axis=1)[:, None], axis=1)  # (B * U', 1); argmax is faster than max
    shift = best + np.repeat(np.log(lam), users.stop - users.start)[:, None]  # (B * U', 1)
    np.subtract(a, np.repeat(shift, width, axis=1), out=a)
    np.maximum(a, np.float32(MIN_EXPONENT), out=a)  # no float32 subnormals: they are ~100x slower
    z = np.exp(a, out=a)  # (B * U', W) rel / λ
    nov, fit = view.other_terms[:, columns]  # (U' * W,) each
    flat = z.reshape(n_policies, -1)  # (B, U' * W) view of z
    flat += (x[:, NOVELTY] / lam)[:, None] * nov
    flat += (x[:, CALIBRATION] / lam)[:, None] * fit
    np.copyto(z, -np.inf, where=full_outside)
    return z


def _greedy(z: np.ndarray, sim: np.ndarray, block_rows: np.ndarray, k: int) -> np.ndarray:
    """Greedy MMR on rows of scaled scores. z (R, W); sim (U * B, B) the context's block, B >= W;
    block_rows (R,) offset u * B of each row's user -> (R, k) positions in the pool."""
    width = z.shape[1]
    picks = np.empty((len(z), k), dtype=np.int32)
    picks[:, 0] = z.argmax(axis=1)  # nothing chosen yet: no penalty
    maxsim = sim[block_rows + picks[:, 0], :width]  # (R, W) max similarity to the list so far
    score = np.empty_like(z)
    for t in range(1, k):  # a loop over the k list slots, never over users
        np.subtract(z, maxsim, out=score)
        picks[:, t] = score.argmax(axis=1)  # ties: the model's better-ranked candidate
        if t + 1 < k:
            np.maximum(maxsim, sim[block_rows + picks[:, t], :width], out=maxsim)
    return picks


def rerank(ctx: Context, policies: np.ndarray, k: int, threads: int = 1) -> np.ndarray:
    """Top-k positions (indices into ctx.items' columns) for every policy and user.

    policies (B, d) in `VARIABLES` order (pool an integer in [k, N]) -> (B, U, k) int32.
    Policies are grouped by pool width; a group is scored in tiles of (all its policies x a slice
    of users) sized to stay in cache: blocking of one array program, each statement vectorized over
    users and policies. Tiles are independent, so `threads` > 1 runs them in parallel (NumPy
    releases the GIL) with identical results.
    """
    policies = np.atleast_2d(np.asarray(policies, dtype=np.float64))
    if policies.ndim != 2 or policies.shape[1] != len(VARIABLES):
        raise ValueError(f"rerank: policies must be (B, {len(VARIABLES)}) columns {NAMES}, got {policies.shape}")
    pools = policies[:, POOL]
    if (pools != np.round(pools)).any() or pools.min() < k or pools.max() > ctx.n_candidates:
        raise ValueError(f"rerank: pool sizes must be integers in [k={k}, N={ctx.n_candidates}], "
                         f"got {pools.min()}..{pools.max()}")
    n_users, n_cand = ctx.items.shape
    out = np.empty((len(policies), n_users, k), dtype=np.int32)
    widths = np.minimum(np.ceil(pools / WIDTH_STEP) * WIDTH_STEP, n_cand).astype(int)
    tiles = []
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        step = max(1, TILE_ELEMENTS // (len(members) * width))  # users per tile
        tiles += [(width, members, slice(u, min(u + step, n_users))) for u in range(0, n_users, step)]

    sim = ctx.block(int(widths.max()))  # (U * B, B), built before the threads share it
    stride = sim.shape[1]
    for width in np.unique(widths):
        ctx.prefix(width)

    def run(tile: tuple[int, np.ndarray, slice]) -> None:
        width, members, users = tile
        n_tile = users.stop - users.start
        z = static_scores(ctx.prefix(width), policies[members], users)  # (B_w * U', W)
        block_rows = np.tile(np.arange(users.start, users.stop) * stride, len(members))  # (B_w * U',)
        out[members, users] = _greedy(z, sim, block_rows, k).reshape(len(members), n_tile, k)

    if threads > 1 and len(tiles) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, tiles))
    else:
        for tile in tiles:
            run(tile)
    return out


def recommended_items(ctx: Context, positions: np.ndarray) -> np.ndarray:
    """Item indices of re-ranked positions: (B, U, k) -> (B, U, k) int32."""
    rows = (np.arange(ctx.n_users, dtype=np.int32) * np.int32(ctx.n_candidates))[:, None]  # (U, 1) user offsets
    return ctx.items.ravel()[positions + rows]
