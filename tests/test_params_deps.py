"""dvc.yaml names exactly the params.yaml keys each stage reads, and changing a key makes exactly
the stages that read it stale (DVC's own status), so `dvc repro` re-runs what a change touches."""
from __future__ import annotations

import copy
import shutil

import pandas as pd
import pytest
import yaml

from recmoo_dag.config import load_params
from recmoo_dag.synth import write_synthetic_log
from tests.conftest import REPO, deep_update, write_params
from tests.defs_support import TINY
from tests.params_trace import reads_of

pytestmark = pytest.mark.slow
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
DICT_VALUED = ("min_ratio", "weights", "tolerance")  # keyed by objective: one param each
# Keys a stage reads only in a configuration the two traced runs below do not use.
CONDITIONAL = {
    "ingest": {"data.generic.names": "the column names of a log file without a header row"},
    "search": {"item_text.dir": "the similarity space of items without categories (policy.similarity auto/text)",
               "train.model_dir": "the similarity space of items with neither categories nor texts",
               "deploy.shortlist": "policies that meet the bounds on a split's selection users, to confirm"},
    "deploy": {"item_text.dir": "the similarity space of items without categories",
               "deploy.shortlist": "policies that meet the bounds on a split's selection users, to confirm"},
}
# A second configuration: a generic CSV log of the user's own, with tags and tag names; tuning off;
# a generation budget with a stall criterion; bounds no policy meets, so the fallback decides, after
# trying a second split of the valid users (TINY confirms on no held-out users).
OWN_LOG = {
    "data": {"source": "local", "dataset_dir": "data/raw/mine", "format": "generic",
             "generic": {"pattern": "ratings.csv", "user_col": "userId", "item_col": "movieId",
                         "items": {"pattern": "movies.csv", "item_id_col": "movieId", "categories_col": "genres"},
                         "tags": {"pattern": "tagged.csv", "item_col": "movieId", "tag_col": "tagId"},
                         "tag_names": {"pattern": "names.csv", "id_col": "tagId", "name_col": "name"}}},
    "tune": {"enabled": False},
    "search": {"n_evals": None, "n_gen": 3, "stall_generations": 2},
    "deploy": {"min_ratio": {"ndcg": 1.5}, "confirm_share": 0.5, "splits": 2},
}


def leaves(tree: dict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in DICT_VALUED:
            found |= leaves(value, f"{prefix}{key}.")
        else:
            found.add(prefix + key)
    return found


PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
KEYS = sorted(leaves(PARAMS))


def declared(stage: str) -> set[str]:
    """The keys a stage's params list covers (a section covers every key below it)."""
    names = STAGES[stage].get("params", [])
    return {key for key in KEYS if any(key == name or key.startswith(name + ".") for name in names)}


def traced_reads(root, overrides: dict) -> dict[str, set[str]]:
    """Every stage's main run in pipeline order in `root` (the working directory) on traced params."""
    import importlib

    params = load_params(write_params(root, deep_update(copy.deepcopy(TINY), overrides)))
    return {name: reads_of(importlib.import_module(f"recmoo_dag.stages.{name}").main, params) for name in STAGES}


def write_own_log(folder) -> None:
    ratings, _ = write_synthetic_log(folder, n_users=120, n_items=80, n_events=3000, n_categories=6, seed=3,
                                     fmt="movielens-csv")
    frame = pd.read_csv(ratings)
    frame[["userId", "movieId"]].head(300).assign(tagId=lambda f: f["movieId"] % 7).to_csv(
        folder / "tagged.csv", index=False)
    pd.DataFrame({"tagId": range(7), "name": [f"tag {i}" for i in range(7)]}).to_csv(folder / "names.csv", index=False)


def test_dvc_yaml_lists_exactly_the_params_each_stage_reads(tmp_path, monkeypatch):
    reads: dict[str, set[str]] = {name: set() for name in STAGES}
    for run, overrides in (("synthetic", {}), ("own_log", OWN_LOG)):
        root = tmp_path / run
        root.mkdir()
        monkeypatch.chdir(root)
        if overrides:
            write_own_log(root / "data" / "raw" / "mine")
        for name, keys in traced_reads(root, overrides).items():
            assert keys <= declared(name), f"{name} reads {sorted(keys - declared(name))}, not in dvc.yaml"
            reads[name] |= keys
    for name in STAGES:
        expected = reads[name] | set(CONDITIONAL.get(name, {}))
        assert declared(name) == expected, (f"{name}: dvc.yaml lists {sorted(declared(name) - expected)} that "
                                            f"no run reads, misses {sorted(expected - declared(name))}")


def changed(value):
    """Another value of the same kind, for DVC to see a change."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    if isinstance(value, dict):
        return {**value, next(iter(value)): 0.5}
    return 1  # null


def test_changing_a_key_makes_exactly_its_readers_stale(repro_project, tmp_path, monkeypatch):
    """On a project `dvc repro` brought up to date, each key in turn: the stages DVC's params
    dependencies report changed are the stages that list the key, and no other."""
    from dvc.dependency import param
    from dvc.repo import Repo

    project = tmp_path / "project"
    shutil.copytree(repro_project, project, symlinks=True)
    path = project / "params.yaml"
    written = yaml.safe_load(path.read_text())
    parse, parsed = param.load_path, {}

    def parse_once(file, fs, **kwargs):  # DVC parses params.yaml for every stage; once per version suffices
        version = (file, path.read_bytes())
        if version not in parsed:
            parsed[version] = parse(file, fs, **kwargs)
        return parsed[version]

    monkeypatch.setattr(param, "load_path", parse_once)
    with Repo(str(project)) as repo:
        assert repo.status() == {}
        stages = [stage for stage in repo.index.stages if stage.name in STAGES]
        params_deps = {stage.name: [d for d in stage.deps if isinstance(d, param.ParamsDependency)] for stage in stages}
        wrong = {}
        for key in KEYS:
            edited = copy.deepcopy(written)
            *parents, leaf = key.split(".")
            node = edited
            for part in parents:
                node = node[part]
            node[leaf] = changed(node[leaf])
            path.write_text(yaml.safe_dump(edited, sort_keys=False))
            stale = {name for name, deps in params_deps.items() if any(dep.status() for dep in deps)}
            readers = {name for name in STAGES if key in declared(name)}
            if stale != readers:
                wrong[key] = {"stale": sorted(stale), "readers": sorted(readers)}
    assert wrong == {}
