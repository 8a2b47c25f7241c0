"""Timestamp ties are sets: a raw log whose rows are permuted inside equal (user, timestamp) groups
gives byte-identical features, model, candidates and metrics. A log dated to the hour has most of
its events in such groups, so any order the pipeline read inside them would show here. Nor may the
file's row order or the clock's origin matter: the same log with its rows shuffled and every
timestamp moved by a constant gives the same bytes but for the stored timestamps."""
import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmoo_dag.config import load_params
from recmoo_dag.stages import candidates, features, ingest, train, tune
from recmoo_dag.synth import synthesize
from tests.conftest import deep_update, write_params
from tests.defs_support import WALL_CLOCK_KEYS
from tests.model_support import TINY_MODEL

pytestmark = pytest.mark.slow
# The model's hashes of the feature bytes it read, stored timestamps included: what the digests
# compare are those bytes themselves and everything made from them.
INPUT_FINGERPRINTS = {"data_hash", "run"}


def hourly_log(seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A synthetic MovieLens-style log dated to the hour: events minutes apart share a timestamp."""
    interactions, items = synthesize(n_users=120, n_items=80, n_events=4000, n_categories=6, seed=seed)
    log = interactions.rename(columns={"user_id": "userId", "item_id": "movieId"})
    log["timestamp"] = log["timestamp"] // 3600 * 3600
    movies = pd.DataFrame({"movieId": items["item_id"], "title": items["title"],
                           "genres": items["categories"].str.join("|")})
    return log[["userId", "movieId", "rating", "timestamp"]], movies


def permuted_inside_ties(log: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same rows, each (user, timestamp) group in a random order of its own, groups in place."""
    key = np.random.default_rng(seed).random(len(log))
    group = log.groupby(["userId", "timestamp"], sort=False).ngroup().to_numpy()
    first_row = pd.Series(np.arange(len(log))).groupby(group).transform("min").to_numpy()
    return log.iloc[np.lexsort((key, first_row))].reset_index(drop=True)


def run_pipeline(root: Path, log: pd.DataFrame, movies: pd.DataFrame, clock_free: bool = False) -> dict[str, str]:
    """ingest -> (validated = ingested) -> features -> train -> candidates in `root`; the digest of
    every file they write (JSON reports without their wall-clock keys). `clock_free`: the stored
    timestamps counted from the log's first, and the JSON reports without the input fingerprints."""
    settings = deep_update(copy.deepcopy(TINY_MODEL), {
        "data": {"source": "local", "dataset_dir": "data/raw/mine", "format": "movielens-csv"},
        "features": {"min_user_interactions": 5, "min_item_interactions": 3}})
    params = load_params(write_params(root, settings))
    folder = root / params.data.dataset_dir
    folder.mkdir(parents=True)
    log.to_csv(folder / "ratings.csv", index=False)
    movies.to_csv(folder / "movies.csv", index=False)
    ingest.main(params)
    for source, dest in ((params.data.interactions, params.validation.interactions),
                         (params.data.items, params.validation.items)):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    for stage in (features, tune, train, candidates):
        stage.main(params)
    written = {}
    for out in (params.features.dir, params.train.model_dir, params.candidates.path, params.train.metrics):
        for path in sorted(p for p in (root / out).rglob("*") if p.is_file()) if (root / out).is_dir() else [root / out]:
            data = path.read_bytes()
            if clock_free and path.name == "sequences.parquet":
                table = pd.read_parquet(path)
                data = table.assign(timestamp=table["timestamp"] - table["timestamp"].min()).to_csv().encode()
            elif path.suffix == ".json":
                payload = json.loads(data)
                left_out = WALL_CLOCK_KEYS | (INPUT_FINGERPRINTS if clock_free else set())
                data = json.dumps({k: v for k, v in payload.items() if k not in left_out}, sort_keys=True).encode()
            written[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return written


def test_rows_permuted_inside_timestamp_ties_give_identical_bytes(tmp_path, monkeypatch):
    log, movies = hourly_log()
    same_second = log.duplicated(["userId", "timestamp"], keep=False).mean()
    assert same_second > 0.5  # most events share their timestamp with another of their user's
    permuted = permuted_inside_ties(log, seed=1)
    assert not permuted.equals(log)
    every_column = ["userId", "timestamp", "movieId", "rating"]
    assert permuted.sort_values(every_column).reset_index(drop=True).equals(
        log.sort_values(every_column).reset_index(drop=True))
    runs = []
    for name, rows in (("as_logged", log), ("permuted", permuted)):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        runs.append(run_pipeline(tmp_path / name, rows, movies))
    assert {"models/model/model.safetensors", "data/candidates/candidates.npz", "metrics/train.json",
            "data/features/sequences.parquet"} <= set(runs[0])
    assert runs[0] == runs[1]


def test_row_order_and_clock_origin_change_nothing(tmp_path, monkeypatch):
    log, movies = hourly_log(seed=12)
    moved = log.sample(frac=1.0, random_state=3).reset_index(drop=True)
    moved["timestamp"] += 9 * 86400 + 3600  # nine days and an hour later
    runs = []
    for name, rows in (("as_logged", log), ("moved", moved)):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        runs.append(run_pipeline(tmp_path / name, rows, movies, clock_free=True))
    assert "data/features/sequences.parquet" in runs[0]
    assert runs[0] == runs[1]
