"""What the item texts buy, per log: the transformer with none / init / fuse text, cold-start items,
embedding time, and the deployed policy's diversity measured in text space. One table.

For each log (MovieLens-100K; ml-latest-small and Last.fm-2K from ../shared/datasets/, skipped with a
message when absent) a scratch project runs the data stages and item_text, then trains each variant
with the params as written (tuning off, so only model.item_text differs) and reports test NDCG@10 and
HR@10, the variant the valid split would choose, and that choice against id-only on test.

Cold-start protocol (README "Item texts"): the items whose first event falls in the last 10% of the
log's timeline are new; every event of theirs leaves the training data, their metadata stays (they
join the catalog with no history, features.include_metadata_items). Each of their events is a test
case: the user's known (older-item) sequence, the new items as candidates, the event's item as the
target. HR@10 and NDCG@10 for fuse, for id-only, and for popularity (new items have none: its
expected score is a random order, 10 / number of new items).

Then search and deploy with policy.similarity: text, for the ILD@10 of the served policy in text space.

    .venv/bin/python benchmarks/bench_item_text.py [--logs ml-100k ml-latest-small lastfm-2k]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_datasets import LOGS, SHARED, STAGES, env, project

from recmoo_dag.config import load_params
from recmoo_dag.evaluate import left_padded
from recmoo_dag.features import build_features, load_features, write_features
from recmoo_dag.item_text import embed, item_texts
from recmoo_dag.metrics import basket_accuracy
from recmoo_dag.results import DeployReport, TrainReport
from recmoo_dag.train import fit

VARIANTS = ("none", "init", "fuse")
NEW_SHARE = 0.10  # the last tenth of the timeline brings the new items


def stages(root: Path, *names: str) -> None:
    for name in names:
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", name], cwd=root, env=env(root),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{root}: {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def set_params(root: Path, **dotted) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in dotted.items():
        section, name = key.split("__")
        params[section][name] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def variants(root: Path) -> dict:
    out = {}
    for variant in VARIANTS:
        set_params(root, model__item_text=variant, tune__enabled=False)
        stages(root, "tune", "train")
        model = TrainReport.from_json(json.loads((root / "metrics" / "train.json").read_text())).comparison.model
        out[variant] = {window: (getattr(model, window).ndcg, getattr(model, window).hr) for window in ("valid", "test")}
        print(f"  {variant:<5} valid NDCG@10 {out[variant]['valid'][0]:.4f}  test {out[variant]['test'][0]:.4f}",
              flush=True)
    return out


def cold_start(root: Path) -> dict:
    """The protocol of the module docstring, on the validated tables."""
    params = load_params(root / "params.yaml")
    interactions = pd.read_parquet(root / params.validation.interactions)
    items = pd.read_parquet(root / params.validation.items)
    first_seen = interactions.groupby("item_id")["timestamp"].min()
    cut = interactions["timestamp"].quantile(1 - NEW_SHARE)
    new_ids = set(first_seen[first_seen > cut].index) & set(items["item_id"])
    warm = interactions[~interactions["item_id"].isin(new_ids)]
    tables = build_features(warm, items[items["item_id"].isin(set(warm["item_id"]) | new_ids)],
                            params.features.model_copy(update={"include_metadata_items": True}))
    folder = root / "coldstart"
    write_features(tables, folder)
    features = load_features(folder)
    new = np.flatnonzero(np.isin(features.item_ids, list(new_ids)))  # (C,) item indices of the new items
    texts = item_texts(tables.catalog, params.item_text.fields, params.item_text.max_tags)
    vectors, _ = embed(texts, params.item_text.model, params.item_text.batch_size, params.item_text.threads, "auto")
    user_index = {user: u for u, user in enumerate(features.user_ids)}
    item_index = {item: i for i, item in enumerate(features.item_ids)}
    cases = interactions[interactions["item_id"].isin(new_ids) & interactions["user_id"].isin(user_index)]
    users = cases["user_id"].map(user_index).to_numpy()
    targets = cases["item_id"].map(item_index).to_numpy()
    result = {"new_items": len(new), "cases": len(cases),
              "popularity": {"hr@10": min(10, len(new)) / len(new),
                             "ndcg@10": float(np.mean([1 / np.log2(r + 2) for r in range(min(10, len(new)))])
                                              * min(10, len(new)) / len(new))}}
    for variant in ("none", "fuse"):
        model = params.model.model_copy(update={"item_text": variant})
        train = params.train.model_copy(update={"checkpoint_dir": str(folder / "ckpt"),
                                                "steps_log": str(folder / f"steps_{variant}.csv")})
        net = fit(features, model, train, params.policy.k, params.seed, f"cold-{variant}", text_vectors=vectors).model
        ranks, whole = [], features.whole()
        for rows in np.array_split(np.arange(len(users)), max(1, len(users) // 256)):
            seq, baskets = left_padded(whole, users[rows], net.max_len)
            with torch.no_grad():
                scores = net.score_next(torch.from_numpy(seq), torch.from_numpy(baskets)).numpy()[:, new]  # (B, C) new items
            target = scores[np.arange(len(rows)), np.searchsorted(new, targets[rows])]
            ranks.append((scores >= target[:, None]).sum(axis=1) - 1)
        ranks = np.concatenate(ranks)
        per_event = basket_accuracy(ranks, np.arange(len(ranks) + 1), 10)  # each event its own case
        result[variant] = {"hr@10": float(per_event["hr"].mean()), "ndcg@10": float(per_event["ndcg"].mean())}
        print(f"  cold-start {variant}: HR@10 {result[variant]['hr@10']:.4f} on {len(ranks)} events", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", nargs="*", default=["ml-100k", "ml-latest-small", "lastfm-2k"])
    parser.add_argument("--workdir", default="/tmp/recmoo-item-text")
    args = parser.parse_args()
    rows = []
    for name in args.logs:
        overrides, folder = LOGS[name]
        if folder and not (SHARED / folder).is_dir():
            print(f"{name}: skipped, {SHARED / folder} is absent (the shared datasets are not part of the project)")
            continue
        print(f"{name}:", flush=True)
        root = project(Path(args.workdir) / name, overrides, folder, [])
        start = time.perf_counter()
        stages(root, *STAGES[:STAGES.index("item_text") + 1])
        embedding = json.loads((root / "metrics" / "item_text.json").read_text())
        row = {"log": name, "embed_s_per_1000": embedding["encode_seconds_per_1000_items"],
               "items": embedding["items"], "variants": variants(root)}
        best = max(VARIANTS, key=lambda v: row["variants"][v]["valid"][0])
        set_params(root, model__item_text=best, policy__similarity="text")
        stages(root, *STAGES[STAGES.index("item_text") + 1:])  # the chosen variant tuned, trained, searched, deployed
        deployed = DeployReport.from_json(json.loads((root / "metrics" / "deploy.json").read_text()))
        row.update(chosen=best, ild_text={"deployed": deployed.deployed["ild"],
                                          "accuracy_only": deployed.accuracy_only["ild"]},
                   cold=cold_start(root), seconds=time.perf_counter() - start)
        rows.append(row)
        (Path(args.workdir) / "results.jsonl").open("a").write(json.dumps(row) + "\n")
    print("\ntest split (variants trained with the params as written; 'chosen' is the best on valid)")
    header = (f"{'log':<16}{'none':>15}{'init':>15}{'fuse':>15}{'chosen':>8}{'vs none':>8} | {'cold HR@10: fuse':>17}"
              f"{'id-only':>9}{'pop':>8}{'new':>6} | {'emb s/1k':>9} | {'ILD text: served':>17}{'acc-only':>9}")
    print(header + "\n" + "-" * len(header))
    for r in rows:
        v = r["variants"]
        pair = lambda x: f"{x[0]:.4f}/{x[1]:.3f}"
        c = r["cold"]
        print(f"{r['log']:<16}{pair(v['none']['test']):>15}{pair(v['init']['test']):>15}{pair(v['fuse']['test']):>15}"
              f"{r['chosen']:>8}{v[r['chosen']]['test'][0] / v['none']['test'][0]:>8.3f} | {c['fuse']['hr@10']:>17.4f}"
              f"{c['none']['hr@10']:>9.4f}{c['popularity']['hr@10']:>8.4f}{c['new_items']:>6} | {r['embed_s_per_1000']:>9.2f}"
              f" | {r['ild_text']['deployed']:>17.4f}{r['ild_text']['accuracy_only']:>9.4f}")
    print("(NDCG@10/HR@10 pairs; cold-start: ranked among the new items only; pop = a random order of them)")


if __name__ == "__main__":
    main()
