"""A deployed version's folder: everything the service needs, written by `deploy`, read by `serve`.

    policy.json      the decision variables (policy.VARIABLE_NAMES), the list length k, the rule that chose it
    model/           model.safetensors + config.json + generator.json, copied from the train stage
    ease.safetensors EASE's weights fit on every user's whole sequence (when the generator uses EASE)
    catalog.npz      item_ids, titles (I + 1,) str; train_counts (I + 1,); item_vectors (I + 1, d);
                     n_users (): the user count that scales novelty, as in the search
    users.npz        user_ids (U,) str; indptr (U + 1,), history (E,): every user's full sequence;
                     opens (E,) bool: where a basket (the events of one timestamp) starts;
                     cand_items (U, N) int32, cand_scores (U, N) float32: the generator's top-N unseen
                     items after the full sequence (precomputed: known users cost no forward pass)
    exposure.json    the exposure prices the policy weighs (exposure.ExposurePrices), in catalog order
    manifest.json    lineage and decision (recmoo_dag/lineage.py); written last

Plain arrays and JSON only: np.load(allow_pickle=False), safetensors for the weights.
The folder never changes after publish, so a loaded Bundle is a consistent snapshot. A version
deployed before generators existed has no generator.json: it serves with the transformer, as then;
one deployed before baskets has no `opens`: each event is its own basket, as then; one deployed
before exposure prices has no exposure.json: every price is 0, and its policy has no weight on them.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from recmoo_dag.errors import StoreError
from recmoo_dag.exposure import ExposurePrices, load_prices
from recmoo_dag.generator import GENERATOR_FILE, Generator, load_generator
from recmoo_dag.model import CONFIG_FILE, WEIGHTS_FILE, load_model

POLICY_FILE = "policy.json"
MODEL_DIR = "model"
EASE_FILE = "ease.safetensors"
CATALOG_FILE = "catalog.npz"
USERS_FILE = "users.npz"
EXPOSURE_FILE = "exposure.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Bundle:
    folder: Path
    variables: dict[str, float]  # the policy's decision variables by name
    k: int  # list length the policy was chosen for
    item_ids: np.ndarray  # (I + 1,) str, "" at the padding index 0
    titles: np.ndarray  # (I + 1,) str, "" when unknown
    train_counts: np.ndarray  # (I + 1,) int64
    item_vectors: np.ndarray  # (I + 1, d) float32: similarity and calibration space of the search
    n_users: int  # users of the training data: scales self-information exactly as in the search
    user_ids: np.ndarray  # (U,) str
    indptr: np.ndarray  # (U + 1,) int64
    history: np.ndarray  # (E,) int32 full time-ordered sequences
    opens: np.ndarray  # (E,) bool True where a basket starts: what the transformer reads as one step
    cand_items: np.ndarray  # (U, N) int32, 0 = padding (fewer than N unseen items)
    cand_scores: np.ndarray  # (U, N) float32, -inf at padding
    ease: np.ndarray | None  # (I + 1, I + 1) float32 EASE fit on the full sequences, or None
    prices: ExposurePrices  # per catalog item

    @property
    def model_dir(self) -> Path:
        return self.folder / MODEL_DIR

    def generator(self) -> Generator:
        """The generator this version was deployed with (the transformer alone for older versions)."""
        if (self.model_dir / GENERATOR_FILE).is_file():
            return load_generator(self.model_dir)
        return Generator("model", load_model(self.model_dir), 0.0, 1.0)


def write_bundle(folder: Path, model_dir: str | Path, variables: dict[str, float], k: int, rule: str,
                 item_ids: np.ndarray, titles: np.ndarray, train_counts: np.ndarray, item_vectors: np.ndarray,
                 n_users: int, user_ids: np.ndarray, indptr: np.ndarray, history: np.ndarray, opens: np.ndarray,
                 cand_items: np.ndarray, cand_scores: np.ndarray, ease: np.ndarray | None,
                 prices: ExposurePrices) -> None:
    """Everything but the manifest; `folder` is the store's staging folder (see store.publish)."""
    (folder / MODEL_DIR).mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE, GENERATOR_FILE):
        shutil.copyfile(Path(model_dir) / name, folder / MODEL_DIR / name)
    if ease is not None:
        save_file({"weights": np.ascontiguousarray(ease, dtype=np.float32)}, str(folder / EASE_FILE))
    (folder / EXPOSURE_FILE).write_text(json.dumps(prices.to_json(), sort_keys=True) + "\n")
    (folder / POLICY_FILE).write_text(json.dumps({"variables": variables, "k": k, "rule": rule},
                                                 indent=2, sort_keys=True) + "\n")
    with open(folder / CATALOG_FILE, "wb") as handle:
        np.savez(handle, item_ids=np.asarray(item_ids, dtype=str), titles=np.asarray(titles, dtype=str),
                 train_counts=np.asarray(train_counts, dtype=np.int64),
                 item_vectors=np.asarray(item_vectors, dtype=np.float32), n_users=np.int64(n_users))
    with open(folder / USERS_FILE, "wb") as handle:
        np.savez(handle, user_ids=np.asarray(user_ids, dtype=str), indptr=np.asarray(indptr, dtype=np.int64),
                 history=np.asarray(history, dtype=np.int32), opens=np.asarray(opens, dtype=bool),
                 cand_items=np.asarray(cand_items, dtype=np.int32),
                 cand_scores=np.asarray(cand_scores, dtype=np.float32))


def read_bundle(folder: str | Path) -> Bundle:
    folder = Path(folder)
    for name in (POLICY_FILE, CATALOG_FILE, USERS_FILE, f"{MODEL_DIR}/{WEIGHTS_FILE}", f"{MODEL_DIR}/{CONFIG_FILE}"):
        if not (folder / name).is_file():
            raise StoreError(f"{folder / name}: incomplete deployed version (re-run `recmoo deploy`)")
    policy = json.loads((folder / POLICY_FILE).read_text())
    ease = load_file(str(folder / EASE_FILE))["weights"] if (folder / EASE_FILE).is_file() else None
    prices = load_prices(folder / EXPOSURE_FILE) if (folder / EXPOSURE_FILE).is_file() else None
    with np.load(folder / CATALOG_FILE, allow_pickle=False) as catalog, \
            np.load(folder / USERS_FILE, allow_pickle=False) as users:
        return Bundle(
            folder=folder, variables=policy["variables"], k=int(policy["k"]),
            item_ids=catalog["item_ids"], titles=catalog["titles"], train_counts=catalog["train_counts"],
            item_vectors=catalog["item_vectors"], n_users=int(catalog["n_users"]),
            user_ids=users["user_ids"], indptr=users["indptr"], history=users["history"],
            opens=users["opens"] if "opens" in users else np.ones(len(users["history"]), dtype=bool),
            cand_items=users["cand_items"], cand_scores=users["cand_scores"], ease=ease,
            prices=prices or ExposurePrices.none(len(catalog["item_ids"])))
