"""Realistic synthetic interaction logs for tests (small) and benchmarks (large).

Users have latent tastes over item categories (Dirichlet), items have power-law popularity (Zipf),
activity is heavy-tailed (log-normal), and events come in sessions that stay within one category:
the sequential signal a next-item model can learn. Everything is vectorized; 10M events take seconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

START = 1_577_836_800  # 2020-01-01 UTC
SPAN_DAYS = 730


def synthesize(n_users: int, n_items: int, n_events: int, n_categories: int = 12,
               seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items) in the canonical schema."""
    if min(n_users, n_items, n_categories) < 1 or n_events < n_users:
        raise ValueError("synthesize needs users, items, categories >= 1 and events >= users")
    rng = np.random.default_rng(seed)

    item_category = rng.integers(0, n_categories, n_items)  # (I,)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9  # Zipf-like head and long tail
    popularity = popularity[rng.permutation(n_items)]
    by_category = np.argsort(item_category, kind="stable")  # items grouped by category
    sorted_weights = popularity[by_category]
    segment_starts = np.searchsorted(item_category[by_category], np.arange(n_categories))
    segment_sums = np.add.reduceat(sorted_weights, segment_starts) if n_items else np.zeros(0)
    segment_sums = np.where(np.diff(np.append(segment_starts, n_items)) > 0, segment_sums, 0.0)
    # Each category's CDF lives in [c, c + 1): sampling "category + u" is one searchsorted for all events.
    cdf = item_category[by_category] + (np.cumsum(sorted_weights) - np.repeat(
        np.cumsum(segment_sums) - segment_sums, np.diff(np.append(segment_starts, n_items)))) / np.repeat(
        np.where(segment_sums > 0, segment_sums, 1.0), np.diff(np.append(segment_starts, n_items)))

    tastes = rng.dirichlet(np.full(n_categories, 0.3), n_users)  # (U, C)
    tastes *= (segment_sums > 0)  # never ask for an empty category
    tastes /= tastes.sum(axis=1, keepdims=True)

    activity = rng.lognormal(0.0, 1.0, n_users)
    per_user = np.maximum(5, np.floor(activity / activity.sum() * n_events)).astype(np.int64)
    user_of_event = np.repeat(np.arange(n_users), per_user)  # (E,)
    n_total = len(user_of_event)

    # Sessions: geometric lengths (mean 6); one category per session drawn from the user's taste.
    new_session = rng.random(n_total) < 1 / 6
    first_of_user = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    new_session[first_of_user] = True
    session_id = np.cumsum(new_session) - 1
    session_user = user_of_event[new_session]
    session_cat = _sample_rows(rng, np.cumsum(tastes, axis=1)[session_user])
    event_cat = session_cat[session_id]
    positions = np.searchsorted(cdf, event_cat + rng.random(n_total) * (1 - 1e-12), side="right")
    event_item = by_category[np.minimum(positions, n_items - 1)]

    # Time: users join at random over the span; sessions days apart, events minutes apart.
    user_start = START + rng.integers(0, SPAN_DAYS * 86400 // 2, n_users)
    gaps = np.where(new_session, rng.exponential(3 * 86400, n_total), rng.exponential(240, n_total)) + 1
    gaps[first_of_user] = 0
    elapsed = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first_of_user], per_user)
    timestamps = (user_start[user_of_event] + elapsed).astype(np.int64)

    affinity = tastes[user_of_event, item_category[event_item]] * n_categories  # > 1: above-average taste
    ratings = np.clip(np.round(2.5 + np.log1p(affinity) + rng.normal(0, 0.8, n_total)), 1, 5)

    interactions = pd.DataFrame({
        "user_id": pd.array((user_of_event + 1).astype(str), dtype="string"),
        "item_id": pd.array((event_item + 1).astype(str), dtype="string"),
        "timestamp": timestamps,
        "rating": ratings.astype(np.float64),
    })
    names = np.array([f"genre_{c:02d}" for c in range(n_categories)])
    items = pd.DataFrame({
        "item_id": pd.array(np.arange(1, n_items + 1).astype(str), dtype="string"),
        "title": pd.array([f"Item {i}" for i in range(1, n_items + 1)], dtype="string"),
        "categories": [[names[c]] for c in item_category],
    })
    return interactions, items


def _sample_rows(rng: np.random.Generator, row_cdfs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, C) matrix of CDFs."""
    draws = rng.random((len(row_cdfs), 1)) * row_cdfs[:, -1:]
    return np.minimum((row_cdfs < draws).sum(axis=1), row_cdfs.shape[1] - 1)


def write_synthetic_log(out: str | Path, n_users: int, n_items: int, n_events: int, n_categories: int = 12,
                        seed: int = 0, fmt: str = "recbole") -> list[Path]:
    """Write the log in a raw format the ingest stage reads; returns the files written."""
    interactions, items = synthesize(n_users, n_items, n_events, n_categories, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "recbole":
        inter_path, item_path = out / "synthetic.inter", out / "synthetic.item"
        interactions.rename(columns={"user_id": "user_id:token", "item_id": "item_id:token",
                                     "rating": "rating:float", "timestamp": "timestamp:float"}).to_csv(
            inter_path, sep="\t", index=False, columns=["user_id:token", "item_id:token", "rating:float",
                                                         "timestamp:float"], float_format="%g")
        pd.DataFrame({"item_id:token": items["item_id"], "movie_title:token_seq": items["title"],
                      "class:token_seq": items["categories"].str.join(" ")}).to_csv(item_path, sep="\t", index=False)
    elif fmt == "movielens-csv":
        inter_path, item_path = out / "ratings.csv", out / "movies.csv"
        interactions.rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(
            inter_path, index=False, columns=["userId", "movieId", "rating", "timestamp"], float_format="%g")
        pd.DataFrame({"movieId": items["item_id"], "title": items["title"],
                      "genres": items["categories"].str.join("|")}).to_csv(item_path, index=False)
    else:
        raise ValueError(f"synthetic logs are written as 'recbole' or 'movielens-csv', not {fmt!r}")
    return [inter_path, item_path]
