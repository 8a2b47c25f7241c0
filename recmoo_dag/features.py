"""From validated interactions to model-ready features.

k-core filtering, stable id maps (item index 0 is padding), the time-ordered leave-one-out split of
SASRec (Kang & McAuley 2018) and RecBole (per user: last event -> test, second-to-last -> valid,
the rest -> train), item popularity from train only, and item categories when metadata exists.

On disk (`features.dir`), all Parquet/JSON:
  sequences.parquet  user_idx, item_idx, timestamp, split (0 train, 1 valid, 2 test), sorted by user then time
  users.parquet      user_idx, user_id
  items.parquet      item_idx, item_id, train_count (row 0 is the padding item)
  catalog.parquet    item_idx, item_id, title, categories, tags: what the metadata says (item_text reads
                     only this file, so texts are embedded again only when they change)
  meta.json          sizes, category names, parameters and the input's hash
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recmoo_dag.config import FeaturesParams
from recmoo_dag.errors import FeaturesError

TRAIN, VALID, TEST = 0, 1, 2
PADDING_ITEM = 0
STRATA = 10  # activity groups of a user sample: deciles of history length


@dataclass(frozen=True)
class Features:
    """Model-ready view of the data: every user's time-ordered item sequence in CSR form."""

    user_ids: np.ndarray  # (U,) str
    item_ids: np.ndarray  # (I + 1,) str, item_ids[0] == "" is padding
    titles: np.ndarray  # (I + 1,) str, "" when unknown
    indptr: np.ndarray  # (U + 1,) int64: user u's events are items[indptr[u]:indptr[u + 1]]
    items: np.ndarray  # (N,) int32 item index, time-ordered within each user
    timestamps: np.ndarray  # (N,) int64
    train_counts: np.ndarray  # (I + 1,) int64 occurrences in the train split, 0 for padding
    categories: np.ndarray | None  # (I + 1, C) bool multi-hot, None without item metadata
    category_names: list[str]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Real items, padding excluded; valid indices are 1..n_items."""
        return len(self.item_ids) - 1

    @property
    def valid_targets(self) -> np.ndarray:  # (U,) the second-to-last item of every user
        return self.items[self.indptr[1:] - 2]

    @property
    def test_targets(self) -> np.ndarray:  # (U,) the last item of every user
        return self.items[self.indptr[1:] - 1]

    def history_before(self, window: str) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, items) of what is known before `window`: the train events before valid, train and
        valid before test."""
        drop = {"valid": 2, "test": 1}[window]
        lengths = np.diff(self.indptr) - drop
        keep = np.ones(len(self.items), dtype=bool)
        for back in range(1, drop + 1):
            keep[self.indptr[1:] - back] = False
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), self.items[keep]


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
    params: dict

    def to_json(self) -> dict:
        return asdict(self)

    def stats(self) -> dict:
        """metrics/features.json."""
        return {"n_users": self.n_users, "n_items": self.n_items, "n_interactions": self.n_interactions,
                "n_train": self.n_train, "density": self.density}


@dataclass(frozen=True)
class FeatureTables:
    """What `build_features` returns and `write_features` writes: the tables of the module docstring."""

    sequences: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    catalog: pd.DataFrame
    meta: FeaturesMeta


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

    # Ties on timestamp (common: ML-100K rates many films in the same second) break by item index,
    # which follows the id string order, so the split is deterministic whatever the file order.
    order = np.lexsort((item_idx, timestamps, user_idx))
    user_idx, item_idx, timestamps = user_idx[order], item_idx[order], timestamps[order]

    counts = np.bincount(user_idx, minlength=len(kept_users))
    ends = np.cumsum(counts)
    split = np.zeros(len(user_idx), dtype=np.int8)
    split[ends - 1] = TEST
    split[ends - 2] = VALID

    catalog = np.asarray(item_ids[kept_items], dtype=object)
    if params.include_metadata_items and items is not None and len(items):
        # Items the metadata knows but no kept event mentions join after the others: text-aware
        # models can recommend them (cold-start), every other model never sees them score.
        known = set(catalog.tolist())
        cold = sorted({str(i) for i in items["item_id"].dropna()} - known)
        catalog = np.concatenate([catalog, np.asarray(cold, dtype=object)])
    n_items = len(catalog)
    train_counts = np.bincount(item_idx[split == TRAIN], minlength=n_items + 1).astype(np.int64)
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

    sequences = pd.DataFrame({"user_idx": user_idx, "item_idx": item_idx, "timestamp": timestamps, "split": split})
    users = pd.DataFrame({"user_idx": np.arange(len(kept_users), dtype=np.int32),
                          "user_id": np.asarray(user_ids[kept_users], dtype=object).astype(str)})
    meta = FeaturesMeta(
        n_users=len(kept_users),
        n_items=int(n_items),
        n_interactions=len(sequences),
        n_train=int((split == TRAIN).sum()),
        n_dropped_by_k_core=int((~keep).sum()),
        category_names=category_names,
        density=float(len(sequences) / (len(kept_users) * max(n_items, 1))),
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
        timestamps=seq["timestamp"].to_numpy(dtype=np.int64),
        train_counts=items["train_count"].to_numpy(dtype=np.int64),
        categories=categories,
        category_names=category_names,
    )


def sample_users(activity: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of n users, stratified by activity: the users, ordered by
    history length, are cut into STRATA equal groups and each group gives its share (largest
    remainders), so heavy and light users are both in it. All users when n is None or >= U."""
    n_users = len(activity)
    if n is None or n >= n_users:
        return np.arange(n_users)
    groups = np.array_split(np.argsort(activity, kind="stable"), STRATA)
    exact = n * np.array([len(g) for g in groups]) / n_users
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]] += 1
    rng = np.random.default_rng([seed, n])
    return np.sort(np.concatenate([rng.choice(g, q, replace=False) for g, q in zip(groups, quota)]))
