"""`recmoo item_text`: one text per catalogue item and its sentence embedding (item_text.dir)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
from safetensors.numpy import save_file

from recmoo_dag.config import Params
from recmoo_dag.io import atomic_write, write_json, write_parquet
from recmoo_dag.item_text import MODEL_RECORD, embed, item_texts, texts_digest

VECTORS_FILE, TEXTS_FILE = "vectors.safetensors", "texts.parquet"  # load_vectors reads the first


def main(params: Params) -> None:
    cfg, out = params.item_text, Path(params.item_text.dir)
    catalog = pd.read_parquet(Path(params.features.dir) / "catalog.parquet")
    texts = item_texts(catalog, cfg.fields, cfg.max_tags)
    start = time.perf_counter()
    vectors, record = embed(texts, cfg.model, cfg.batch_size, cfg.threads, cfg.device)
    seconds = time.perf_counter() - start
    atomic_write(out / VECTORS_FILE, lambda tmp: save_file({"vectors": vectors}, str(tmp)))
    write_parquet(out / TEXTS_FILE, catalog[["item_idx", "item_id"]].assign(text=texts))
    encode_seconds = record.pop("encode_seconds")  # wall time: the metrics, not the artifact, carry it
    record = {**record, "texts_sha256": texts_digest(texts), "fields": cfg.fields, "max_tags": cfg.max_tags}
    atomic_write(out / MODEL_RECORD, lambda tmp: tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n"))
    items, without = len(texts) - 1, sum(not text for text in texts[1:])
    write_json(cfg.metrics, {"model": cfg.model, "items": items, "dims": record["dims"], "items_without_text": without,
                             "seconds": round(seconds, 3),
                             "encode_seconds_per_1000_items": round(1000 * encode_seconds / max(items, 1), 3)})
    print(f"item_text: {items} items ({without} without text) embedded by {cfg.model} into {record['dims']} dims "
          f"in {seconds:.1f}s -> {out}")
