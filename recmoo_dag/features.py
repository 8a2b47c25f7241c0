"""From validated interactions to model-ready features.

k-core filtering, stable id maps (item index 0 is padding), the held-out windows of the evaluation
protocol (`features.split`, recmoo_dag/windows.py: a user's events with one timestamp are one
basket, never ordered), item popularity from train only, and item categories when metadata exists.

On disk (`features.dir`), all Parquet/JSON:
  sequences.parquet  user_idx, item_idx, timestamp, window (0 train, 1 valid, 2 test), sorted by user,
                     time, then a keyed hash of the item id (`basket_order_keys`: a storage order
                     only; nothing reads an order inside a basket)
  users.parquet      user_idx, user_id
  items.parquet      item_idx, item_id, train_count (row 0 is the padding item)
  catalog.parquet    item_idx, item_id, title, categories, tags: what the metadata says (item_text reads
                     only this file, so texts are embedded again only when they change)
  meta.json          sizes, the windows' users, baskets and events, category names, parameters
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recmoo_dag.config import FeaturesParams
from recmoo_dag.errors import FeaturesError
from recmoo_dag.windows import (
    TRAIN,
    WINDOWS,
    Cases,
    Histories,
    assign_windows,
    basket_bounds,
    check_window,
    window_cases,
)

PADDING_ITEM = 0


@dataclass(frozen=True)
class Features:
    """Model-ready view of the data: every user's time-ordered item sequence in CSR form, its
    baskets and the window of every event."""

    user_ids: np.ndarray  # (U,) str
    item_ids: np.ndarray  # (I + 1,) str, item_ids[0] == "" is padding
    titles: np.ndarray  # (I + 1,) str, "" when unknown
    indptr: np.ndarray  # (U + 1,) int64: user u's events are items[indptr[u]:indptr[u + 1]]
    items: np.ndarray  # (N,) int32 item index, time-ordered within each user
    timestamps: np.ndarray  # (N,) int64
    windows: np.ndarray  # (N,) int8 TRAIN, VALID or TEST
    basket_starts: np.ndarray  # (N,) int64 the first event of each event's basket
    basket_ends: np.ndarray  # (N,) int64 one past the last event of each event's basket
    train_counts: np.ndarray  # (I + 1,) int64 occurrences in the train window, 0 for padding
    categories: np.ndarray | None  # (I + 1, C) bool multi-hot, None without item metadata
    category_names: list[str]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Real items, padding excluded; valid indices are 1..n_items."""
        return len(self.item_ids) - 1

    def history_before(self, window: str) -> Histories:
        """Each user's events before `window`: the train events before valid, train and valid before test."""
        user_of = np.repeat(np.arange(self.n_users), np.diff(self.indptr))
        before = np.bincount(user_of, weights=self.windows < WINDOWS[window], minlength=self.n_users)
        return Histories(self.indptr[:-1], self.indptr[:-1] + before.astype(np.int64), self.items, self.basket_starts,
                         self.basket_ends)

    def whole(self) -> Histories:
        """Every user's whole sequence (what a deployed version knows)."""
        return Histories(self.indptr[:-1], self.indptr[1:], self.items, self.basket_starts, self.basket_ends)

    def cases(self, window: str) -> Cases:
        """The held-out baskets of `window`, each predicted from everything before it."""
        return window_cases(window, self.indptr, self.items, self.windows, self.basket_starts, self.basket_ends,
                            self.n_items)


@dataclass(frozen=True)
class FeaturesMeta:
    """meta.json: sizes, category names and the parameters the features were built with."""

    n_users: int
    n_items: int
    n_interactions: int
    n_train: int
    n_dropped_by_k_core: int
    category_names: list[str]
    density: float
    n_baskets: int  # (user, timestamp) groups
    windows: dict[str, dict[str, int]]  # valid / test -> users, baskets (cases), relevant items, events
    params: dict

    def to_json(self) -> dict:
        return asdict(self)

    def stats(self) -> dict:
        """metrics/features.json."""
        return {"n_users": self.n_users, "n_items": self.n_items, "n_interactions": self.n_interactions,
                "n_train": self.n_train, "density": self.density, "n_baskets": self.n_baskets,
                "windows": self.windows}


@dataclass(frozen=True)
class FeatureTables:
    """What `build_features` returns and `write_features` writes: the tables of the module docstring."""

    sequences: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    catalog: pd.DataFrame
    meta: FeaturesMeta


def basket_order_keys(item_ids: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per item id (BLAKE2b personalized for this use): (n,) str -> (n,) uint64."""
    return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, person=b"basket order").digest(),
                                    "little") for i in item_ids], dtype=np.uint64)


def k_core(user_codes: np.ndarray, item_codes: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of events kept by iterated k-core filtering (each pass can break the other)."""
    keep = np.ones(len(user_codes), dtype=bool)
    while True:
        user_counts = np.bincount(user_codes[keep], minlength=user_codes.max() + 1)
        item_counts = np.bincount(item_codes[keep], minlength=item_codes.max() + 1)
        new_keep = keep & (user_counts[user_codes] >= min_user) & (item_counts[item_codes] >= min_item)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def build_features(interactions: pd.DataFrame, items: pd.DataFrame | None, params: FeaturesParams) -> FeatureTables:
    """Filter, index and split; returns the tables written to `features.dir`."""
    # sort=True makes codes follow the string order of ids: id maps do not depend on row order.
    user_codes, user_ids = pd.factorize(interactions["user_id"], sort=True)
    item_codes, item_ids = pd.factorize(interactions["item_id"], sort=True)
    keep = k_core(user_codes, item_codes, params.min_user_interactions, params.min_item_interactions)
    if not keep.any():
        raise FeaturesError(
            f"k-core filtering (users >= {params.min_user_interactions}, items >= "
            f"{params.min_item_interactions} events) removed every interaction: lower features.min_* params")
    user_codes, item_codes = user_codes[keep], item_codes[keep]
    timestamps = interactions["timestamp"].to_numpy(dtype=np.int64)[keep]

    kept_users = np.unique(user_codes)
    kept_items = np.unique(item_codes)
    user_idx = np.searchsorted(kept_users, user_codes).astype(np.int32)
    item_idx = (np.searchsorted(kept_items, item_codes) + 1).astype(np.int32)  # 0 is padding

    # The storage order inside a basket (one user's events with one timestamp) is a keyed hash of
    # the item id, so the same log in any row order gives the same bytes. No model reads that order
    # (windows.py), but where a basket is longer than an input window some of its items must be
    # left out, and those should not follow the ids' order (real ids follow release date or entry).
    within = basket_order_keys(np.asarray(item_ids[kept_items]).astype(str))[item_idx - 1]
    order = np.lexsort((item_idx, within, timestamps, user_idx))
    user_idx, item_idx, timestamps = user_idx[order], item_idx[order], timestamps[order]
    windows = assign_windows(user_idx, timestamps, params.split, params.valid_quantile, params.test_quantile,
                             params.tail_fraction, params.tail_max_baskets)
    basket_starts, basket_ends = basket_bounds(user_idx, timestamps)
    indptr = np.r_[0, np.cumsum(np.bincount(user_idx, minlength=len(kept_users)))].astype(np.int64)
    window_stats = {}
    for name in WINDOWS:
        cases = window_cases(name, indptr, item_idx, windows, basket_starts, basket_ends, len(kept_items))
        check_window(cases, params.min_window_users, params.split)
        window_stats[name] = {"users": len(np.unique(cases.users)), "baskets": cases.n_cases,
                              "relevant_items": len(cases.targets), "events": int((windows == WINDOWS[name]).sum())}

    catalog = np.asarray(item_ids[kept_items], dtype=object)
    if params.include_metadata_items and items is not None and len(items):
        # Items the metadata knows but no kept event mentions join after the others: text-aware
        # models can recommend them (cold-start), every other model never sees them score.
        known = set(catalog.tolist())
        cold = sorted({str(i) for i in items["item_id"].dropna()} - known)
        catalog = np.concatenate([catalog, np.asarray(cold, dtype=object)])
    n_items = len(catalog)
    train_counts = np.bincount(item_idx[windows == TRAIN], minlength=n_items + 1).astype(np.int64)
    item_table = pd.DataFrame({
        "item_idx": np.arange(n_items + 1, dtype=np.int32),
        "item_id": np.concatenate([[""], catalog]),
        "train_count": train_counts,
    })
    category_names: list[str] = []
    if items is not None and len(items):
        metadata = items.drop_duplicates("item_id", keep="last").set_index("item_id")
        titles = metadata["title"].reindex(item_table["item_id"]).fillna("").astype(str).to_numpy()
        cats = metadata["categories"].reindex(item_table["item_id"])
        cats = [sorted(c) if isinstance(c, (list, np.ndarray)) else [] for c in cats]
        tags = metadata["tags"].reindex(item_table["item_id"]) if "tags" in metadata else [None] * (n_items + 1)
        tags = [list(t) if isinstance(t, (list, np.ndarray)) else [] for t in tags]
        category_names = sorted({c for row in cats for c in row})
    else:
        titles = np.full(n_items + 1, "", dtype=object)
        cats = [[] for _ in range(n_items + 1)]
        tags = [[] for _ in range(n_items + 1)]
    catalog_table = item_table[["item_idx", "item_id"]].assign(title=titles.astype(str), categories=cats, tags=tags)

    sequences = pd.DataFrame({"user_idx": user_idx, "item_idx": item_idx, "timestamp": timestamps, "window": windows})
    users = pd.DataFrame({"user_idx": np.arange(len(kept_users), dtype=np.int32),
                          "user_id": np.asarray(user_ids[kept_users], dtype=object).astype(str)})
    meta = FeaturesMeta(
        n_users=len(kept_users),
        n_items=int(n_items),
        n_interactions=len(sequences),
        n_train=int((windows == TRAIN).sum()),
        n_dropped_by_k_core=int((~keep).sum()),
        category_names=category_names,
        density=float(len(sequences) / (len(kept_users) * max(n_items, 1))),
        n_baskets=int((basket_starts == np.arange(len(basket_starts))).sum()),
        windows=window_stats,
        params=params.model_dump(exclude={"dir", "stats"}),
    )
    return FeatureTables(sequences, users, item_table, catalog_table, meta)


def write_features(tables: FeatureTables, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("sequences", "users", "items", "catalog"):
        getattr(tables, name).to_parquet(out_dir / f"{name}.parquet", index=False, compression="zstd")
    (out_dir / "meta.json").write_text(json.dumps(tables.meta.to_json(), indent=2, sort_keys=True) + "\n")


def load_features(directory: str | Path) -> Features:
    directory = Path(directory)
    seq = pd.read_parquet(directory / "sequences.parquet")
    users = pd.read_parquet(directory / "users.parquet")
    items = pd.read_parquet(directory / "items.parquet")
    catalog = pd.read_parquet(directory / "catalog.parquet")
    meta = json.loads((directory / "meta.json").read_text())
    user_idx = seq["user_idx"].to_numpy()
    indptr = np.concatenate([[0], np.cumsum(np.bincount(user_idx, minlength=len(users)))]).astype(np.int64)
    timestamps = seq["timestamp"].to_numpy(dtype=np.int64)
    starts, ends = basket_bounds(user_idx, timestamps)
    category_names = meta["category_names"]
    categories = None
    if category_names:
        position = {name: j for j, name in enumerate(category_names)}
        categories = np.zeros((len(items), len(category_names)), dtype=bool)
        for row, cats in enumerate(catalog["categories"]):
            categories[row, [position[c] for c in cats]] = True
    return Features(
        user_ids=users["user_id"].to_numpy(dtype=object).astype(str),
        item_ids=items["item_id"].to_numpy(dtype=object).astype(str),
        titles=catalog["title"].to_numpy(dtype=object).astype(str),
        indptr=indptr,
        items=seq["item_idx"].to_numpy(dtype=np.int32),
        timestamps=timestamps,
        windows=seq["window"].to_numpy(dtype=np.int8),
        basket_starts=starts,
        basket_ends=ends,
        train_counts=items["train_count"].to_numpy(dtype=np.int64),
        categories=categories,
        category_names=category_names,
    )
