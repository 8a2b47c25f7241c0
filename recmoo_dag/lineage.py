"""Lineage of a deployed version: what it was built from, and whether that is still what is on disk.

A manifest records, for every artifact of the chain raw files -> ingested -> validated -> features
-> model -> candidates -> front -> deployed policy, the sha256 of each of its files; plus the params
and their hash, the git commit and dirty flag, Python and key package versions, DVC's hashes and
params per stage from dvc.lock, and timestamps.

`verify` recomputes every hash still on disk, against two records: the manifest's sha256s (what was
deployed) and dvc.lock's md5s (what DVC built and committed). The second catches bytes that reached the
project without DVC computing them, e.g. an object a DVC remote served altered (`dvc pull` trusts a
remote unless the remote sets `verify true`, and `dvc status` trusts the cache). It also checks the
sentence model's files against item_text's record and the params the stages read against today's.
What it cannot prove: that dvc.lock and git themselves were not rewritten together with the data (sign
commits for that), or anything about a file that is no longer on disk (reported, not checked).

sha256 (not DVC's md5) is the manifest's own hash so the record stands without DVC.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import yaml

from recmoo_dag.io import combined_digest, file_key, files_under, hash_files, sha256_file

# What `recmoo lineage` shows of the environment; the manifest records them all.
KEY_PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "pymoo", "lightning", "safetensors", "pydantic",
                "fastapi", "uvicorn", "dvc", "dagster", "great-expectations")


@dataclass(frozen=True)
class Artifact:
    """One link of the chain: a name, the DVC stage that writes it, and its files or folders."""

    name: str
    stage: str
    paths: tuple[str, ...]


def params_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def git_state(root: Path = Path(".")) -> dict:
    """{"commit", "dirty"}; both None outside a git work tree (e.g. an exported tarball)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], check=False, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit.strip() if commit else None, "dirty": bool(status.strip()) if status is not None else None}


def environment() -> dict:
    packages = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": packages}


def dvc_lock_stages(root: str | Path = Path(".")) -> dict[str, dict]:
    """{stage: its dvc.lock entry (cmd, deps, params, outs with hashes)} of `root`/dvc.lock; {} without one.
    The one reader of dvc.lock: lineage, Dagster's metadata and the remote workers all go through it."""
    path = Path(root) / "dvc.lock"
    if not path.is_file():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get("stages") or {}


def dvc_lock_hashes(root: Path = Path(".")) -> dict:
    """{stage: {"cmd", "deps": {path: md5}, "outs": {path: md5}, "params": [key, ...]}} from dvc.lock
    ({} without one); the params keys are those each stage read (their values are the manifest's)."""
    entry = lambda items: {i["path"]: i.get("md5") for i in items or []}
    return {name: {"cmd": stage.get("cmd"), "deps": entry(stage.get("deps")), "outs": entry(stage.get("outs")),
                   "params": sorted(key for keys in (stage.get("params") or {}).values() for key in keys)}
            for name, stage in dvc_lock_stages(root).items()}


def dvc_md5(path: Path) -> str:
    """DVC's md5 of an out, as dvc.lock records it (`hash: md5`, DVC 3): a file's is the md5 of its
    bytes; a folder's is the md5 of the JSON list of its files' {"md5", "relpath"}, sorted by path,
    plus ".dir" (dvc_data.hashfile.tree.Tree.digest)."""
    if path.is_file():
        return _md5_file(path)
    entries = [{"md5": _md5_file(file), "relpath": file.relative_to(path).as_posix()}
               for file in sorted(p for p in path.rglob("*") if p.is_file())]
    entries.sort(key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def lock_mismatches(lock: dict, stages: list[str], root: Path = Path(".")) -> list[str]:
    """Outs of `stages` whose bytes on disk are not those dvc.lock's md5 names (outs not on disk are
    skipped: a worker holds only what it pulled)."""
    problems = []
    for stage in stages:
        for rel, md5 in sorted((lock.get(stage) or {}).get("outs", {}).items()):
            if md5 and (root / rel).exists() and dvc_md5(root / rel) != md5:
                problems.append(f"{rel} (stage {stage}): its bytes are not those dvc.lock's md5 {md5} names: "
                                "changed outside DVC, or pulled from a remote that served other bytes")
    return problems


def lineage_link(artifact: Artifact, root: Path = Path(".")) -> dict:
    """One link of a manifest's chain: the artifact's files with their sha256s."""
    # A worker that ran only the last stages holds only the files they read: what it has not got
    # is identified by DVC's hashes in dvc.lock (recorded in the manifest), not re-hashed here.
    present = tuple(path for path in artifact.paths if (root / path).exists())
    files = hash_files(present, root)
    return {"name": artifact.name, "stage": artifact.stage, "paths": list(artifact.paths),
            "sha256": combined_digest(files) if files else None, "files": files,
            "not_here": [path for path in artifact.paths if path not in present]}


def build_lineage(artifacts: list[Artifact], params: dict, root: Path = Path(".")) -> dict:
    """The provenance half of a manifest (the deploy stage adds the decision and the version's files)."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lineage": [lineage_link(artifact, root) for artifact in artifacts],
        "params": params,
        "params_sha256": params_digest(params),
        "git": git_state(root),
        "environment": environment(),
        "dvc_lock": dvc_lock_hashes(root),
    }


# ------------------------------------------------------------------------------------------ checks

def verify(manifest: dict, version_folder: Path, params_now: dict, root: Path = Path(".")) -> list[str]:
    """Problems found by recomputing every hash still on disk; [] when everything matches.

    The version's own files must all exist and match (they are what is served). Project artifacts
    that were deleted are not problems (nothing on disk to contradict the record); a changed file,
    or a file added to an artifact's folder, is; so is an artifact whose bytes are not those
    dvc.lock's md5 names, a sentence-model file that is not the one item_text used, and a params
    value a stage read that is not today's (`params_now`, dumped as the manifest's `params`).
    """
    problems = []
    for rel, info in sorted(manifest["deployed_files"].items()):
        path = version_folder / rel
        if not path.is_file():
            problems.append(f"deployed {manifest['version']}: {path} is missing")
        elif sha256_file(path) != info["sha256"]:
            problems.append(f"deployed {manifest['version']}: {path} changed (sha256 differs)")
    for link in manifest["lineage"]:
        recorded = link["files"]
        on_disk = {}
        for rel in link["paths"]:
            if (root / rel).exists():
                on_disk.update({file_key(f, root): f for f in files_under(root / rel)})
        for rel, info in sorted(recorded.items()):
            if rel in on_disk and sha256_file(on_disk[rel]) != info["sha256"]:
                problems.append(f"{link['name']} ({link['stage']}): {rel} changed (sha256 differs)")
        for rel in sorted(set(on_disk) - set(recorded)):
            problems.append(f"{link['name']} ({link['stage']}): {rel} is new, not in the manifest")
    lock = manifest.get("dvc_lock", {})
    problems += lock_mismatches(lock, [link["stage"] for link in manifest["lineage"]], root)
    problems += text_model_changes(manifest, root)
    problems += params_changes(manifest["params"], params_now, lock)
    return problems


def text_model_changes(manifest: dict, root: Path) -> list[str]:
    """The sentence model's files against the sha256s item_text recorded (its model.json)."""
    from recmoo_dag.item_text import MODEL_RECORD, model_folder_changes

    problems = []
    for link in manifest["lineage"]:
        if link["stage"] == "item_text":
            record = root / link["paths"][0] / MODEL_RECORD
            if record.is_file():
                problems += [f"item text (item_text): {change}"
                             for change in model_folder_changes(json.loads(record.read_text()))]
    return problems


def params_changes(then: dict, now: dict, lock: dict) -> list[str]:
    """Params values the stages read (dvc.lock's keys; every key without a dvc.lock) that changed."""
    keys = sorted({key for stage in lock.values() for key in stage.get("params", [])}) or sorted(_leaves(then))
    missing = object()
    changed = [(key, _lookup(then, key, missing), _lookup(now, key, missing)) for key in keys]
    return [f"params: {key} is {_short(new)} now, the version was built with {_short(old)}"
            for key, old, new in changed if old != new]


def _lookup(tree: dict, dotted: str, missing):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return missing
        tree = tree[part]
    return tree


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    return [leaf for key, value in tree.items() for leaf in
            (_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"])]


def _short(value) -> str:
    text = "(absent)" if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def missing_files(manifest: dict, root: Path = Path(".")) -> list[str]:
    """Project files of the record that are gone (reported, not failures)."""
    return [rel for link in manifest["lineage"] for rel in link["files"] if not (root / rel).is_file()]


def describe(manifest: dict) -> str:
    """The chain from the deployed policy back to the raw files, one artifact per paragraph."""
    short = lambda digest: (digest or "-")[:12]
    policy = ", ".join(f"{k}={_fmt(v)}" for k, v in manifest["policy"].items())
    gate = manifest.get("gate", {})
    lines = [f"deployed {manifest['version']}  created {manifest['created_at']}",
             f"  policy   {policy}",
             f"  rule     {manifest.get('rule', '-')}; gate: {gate.get('reason', '-')}",
             "  files    " + ", ".join(f"{rel} {short(i['sha256'])}" for rel, i in
                                       sorted(manifest["deployed_files"].items()))]
    lock = manifest.get("dvc_lock", {})
    for link in reversed(manifest["lineage"]):
        md5s = lock.get(link["stage"], {}).get("outs", {})
        dvc = ", ".join(f"{p} md5 {short(md5s[p])}" for p in link["paths"] if p in md5s)
        lines.append(f"  <- {link['name']:<12} stage {link['stage']:<12} sha256 {short(link['sha256'])}"
                     + (f"  (dvc.lock: {dvc})" if dvc else ""))
        for rel, info in sorted(link["files"].items()):
            lines.append(f"       {rel}  {short(info['sha256'])}  {info['bytes']:,} B")
        if link.get("not_here"):
            lines.append(f"       not on the worker that deployed: {', '.join(link['not_here'])} (dvc.lock's hashes above)")
    git, env = manifest["git"], manifest["environment"]
    dirty = {True: " (dirty tree)", False: " (clean tree)", None: ""}[git.get("dirty")]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    lines += [f"  params   sha256 {short(manifest['params_sha256'])}",
              f"  git      {git.get('commit') or 'not a git checkout'}{dirty}",
              f"  python   {env['python']} on {env['platform']}",
              f"  packages {packages}"]
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
