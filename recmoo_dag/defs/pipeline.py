"""The DVC pipeline as plain data: stages, their paths, the stage graph and dvc.lock hashes.

dvc.yaml is the one definition of the pipeline. It is read with DVC's own API, so `${...}`
templating from params.yaml is resolved exactly as `dvc repro` resolves it; Dagster only mirrors it.
No dagster import here: this module is the bridge's DVC side and is tested on its own.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from recmoo_dag.lineage import dvc_lock_stages

CODE_LIKE = (".py", ".json")  # deps that are code or settings, not data: part of the code version


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    desc: str | None
    deps: tuple[str, ...]  # path deps as written in dvc.yaml (templating resolved), params files excluded
    outs: tuple[str, ...]  # every out, metrics and plots included
    params: dict  # {"params.yaml": {key: value}}: the values this stage reads now
    upstream: tuple[str, ...]  # stages whose outs this stage reads
    code_version: str


def load_pipeline(project: str | Path) -> dict[str, Stage]:
    """Stages of `project`/dvc.yaml in a topological order (upstream first)."""
    from dvc.repo import Repo  # imported here: `import recmoo_dag.defs.pipeline` stays cheap

    project = Path(project).resolve()
    with Repo(str(project)) as repo:
        read = _params_reader()
        raw = []
        for stage in repo.index.stages:
            if not getattr(stage, "cmd", None):
                continue  # `.dvc` files of tracked data are inputs, not stages
            path_deps = [_rel(d.def_path) for d in stage.deps if not _is_params(d)]
            params = {_rel(d.def_path): read(d) for d in stage.deps if _is_params(d)}
            outs = [_rel(o.def_path) for o in stage.outs]
            raw.append((stage.name, stage.cmd, stage.desc, path_deps, outs, params))

    producers = {out: name for name, _, _, _, outs, _ in raw for out in outs}
    stages = {}
    for name, cmd, desc, deps, outs, params in raw:
        upstream = sorted({producer for dep in deps for out, producer in producers.items()
                           if producer != name and overlaps(dep, out)})
        own = code_version(project, cmd, params, [d for d in deps if d.endswith(CODE_LIKE)])
        stages[name] = Stage(name, cmd if isinstance(cmd, str) else " && ".join(cmd), desc,
                             tuple(deps), tuple(outs), params, tuple(upstream), own)
    ordered = {name: stages[name] for name in _topological(stages)}
    for name, stage in ordered.items():  # upstream first: each folds in its parents' final versions
        chained = hashlib.sha256("\n".join([stage.code_version, *(ordered[u].code_version for u in stage.upstream)])
                                 .encode()).hexdigest()[:16]
        ordered[name] = replace(stage, code_version=chained)
    return ordered


def overlaps(a: str, b: str) -> bool:
    """One path is the other or lies inside it: how DVC links a dep to the out that produces it."""
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def downstream(stages: dict[str, Stage], roots: set[str]) -> list[str]:
    """`roots` and every stage that (transitively) reads their outs, in pipeline order."""
    chosen = set(roots)
    for name, stage in stages.items():  # topological order: parents are decided first
        if chosen.intersection(stage.upstream):
            chosen.add(name)
    return [name for name in stages if name in chosen]


def readers_of(stages: dict[str, Stage], path: str) -> set[str]:
    """Stages with a dep on `path` or on a folder holding it (the incoming folder: ingest)."""
    return {name for name, stage in stages.items() if any(overlaps(dep, path) for dep in stage.deps)}


def code_version(project: Path, cmd, params: dict, sources: list[str]) -> str:
    """What DVC compares to decide a re-run, minus the data: the command, the params values read and
    the stage's own .py deps (and JSON deps such as the tuned values, params by another name).
    load_pipeline folds each stage's upstream code versions into its own, so a change marks the
    stage *and everything downstream of it* stale ("code version changed"): what `dvc repro` would
    re-run, where Dagster's own staleness would wait for the upstream to re-materialize first."""
    digest = hashlib.sha256(json.dumps([cmd, params], sort_keys=True, default=str).encode())
    for source in sorted(sources):
        path = project / source
        digest.update(source.encode() + (path.read_bytes() if path.is_file() else b"<missing>"))
    return digest.hexdigest()[:16]


def locked_outs(project: str | Path, stage: str) -> dict[str, str]:
    """{out path: DVC hash} recorded in dvc.lock for `stage` ({} before its first run)."""
    entry = lock_entry(project, stage)
    return {out["path"]: out.get("md5") or out.get("etag") or out.get("checksum", "")
            for out in entry.get("outs", [])}


def data_version(outs: dict[str, str]) -> str:
    """One version for a stage's outputs: a hash of DVC's own out hashes (changes iff an out changed)."""
    joined = "\n".join(f"{path}={md5}" for path, md5 in sorted(outs.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:24]


def _params_reader():
    """`dep.read_params()` of DVC's ParamsDependency (flattened: {"train.lr": value}), each params
    file parsed once with DVC's own loader: DVC parses the whole file again for every stage, and
    with 11 stages that was half of the time a code location takes to load."""
    import dpath
    from dvc.utils.serialize import load_path

    parsed: dict[str, dict] = {}

    def read(dep) -> dict:
        if not dep.exists:
            return {}
        if dep.fs_path not in parsed:
            parsed[dep.fs_path] = load_path(dep.fs_path, dep.repo.fs)
        config = parsed[dep.fs_path]
        if not dep.params:
            return config
        found = {}
        for key in dep.params:
            try:
                found[key] = dpath.get(config, key, separator=".")
            except KeyError:
                continue
        return found

    return read


def _is_params(dep) -> bool:
    return type(dep).__name__ == "ParamsDependency"


def _rel(path) -> str:
    return Path(str(path)).as_posix().removeprefix("./")


def _topological(stages: dict[str, Stage]) -> list[str]:
    done: list[str] = []
    pending = dict(stages)  # dvc.yaml order, kept among stages that are ready together
    while pending:
        ready = [name for name, stage in pending.items() if set(stage.upstream) <= set(done)]
        if not ready:
            raise ValueError(f"dvc.yaml: cycle among stages {sorted(pending)}")
        done.extend(ready)
        for name in ready:
            del pending[name]
    return done


def dvc_status(project: str | Path) -> dict[str, str]:
    """{stage: why `dvc repro` would re-run it}, from DVC's own status (changed deps, params, outs
    or command), e.g. {"train": "changed deps: params.yaml train (modified)"}."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        raw = repo.status()
    reasons = {}
    for key, entries in raw.items():
        parts = []
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "always changed"
                parts.append(entry)
                continue
            for kind, changes in entry.items():
                described = []
                for path, change in changes.items():
                    if isinstance(change, dict):  # params: {key or section: "modified" | "new" | "deleted"}
                        described.extend(f"{path} {name} ({what})" for name, what in change.items())
                    else:
                        described.append(f"{path} ({change})")
                parts.append(f"{kind}: {', '.join(described)}")
        reasons[key.split(":")[-1]] = "; ".join(parts)
    return reasons


def would_rerun(stages: dict[str, Stage], changed: set[str]) -> list[str]:
    """The stages DVC reports changed and everything downstream of them, in pipeline order."""
    return downstream(stages, changed & set(stages))


def lock_entry(project: str | Path, stage: str) -> dict:
    """The stage's entry of dvc.lock ({} before its first run): its cmd, deps, params and outs with hashes."""
    return dvc_lock_stages(project).get(stage, {})


def merge_lock_entries(project: str | Path, entries: dict[str, dict]) -> None:
    """Write other workspaces' dvc.lock entries (stage -> entry) into this one's, so DVC knows the
    hashes of outputs it did not produce and can pull them from the remote."""
    lock = Path(project) / "dvc.lock"
    data = {"schema": "2.0", "stages": {**dvc_lock_stages(project), **entries}}
    lock.write_text(yaml.safe_dump(data, sort_keys=False))
