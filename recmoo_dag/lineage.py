"""Lineage of a deployed version: what it was built from, and whether that is still what is on disk.

A manifest records, for every artifact of the chain raw files -> ingested -> validated -> features
-> model -> candidates -> front -> deployed policy, the sha256 of each of its files; plus the params
and their hash, the git commit and dirty flag, Python and key package versions, DVC's hashes per
stage from dvc.lock, and timestamps. `verify` recomputes every hash still on disk.

sha256 (not DVC's md5) is the manifest's own hash so the record stands without DVC; DVC's md5s
are kept alongside so the two views can be matched.
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
    """{stage: {"cmd", "deps": {path: md5}, "outs": {path: md5}}} from dvc.lock ({} without one)."""
    entry = lambda items: {i["path"]: i.get("md5") for i in items or []}
    return {name: {"cmd": stage.get("cmd"), "deps": entry(stage.get("deps")), "outs": entry(stage.get("outs"))}
            for name, stage in dvc_lock_stages(root).items()}


def build_lineage(artifacts: list[Artifact], params: dict, root: Path = Path(".")) -> dict:
    """The provenance half of a manifest (the deploy stage adds the decision and the version's files)."""
    chain = []
    for artifact in artifacts:
        # A worker that ran only the last stages holds only the files they read: what it has not got
        # is identified by DVC's hashes in dvc.lock (recorded below), not re-hashed here.
        present = tuple(path for path in artifact.paths if (root / path).exists())
        files = hash_files(present, root)
        chain.append({"name": artifact.name, "stage": artifact.stage, "paths": list(artifact.paths),
                      "sha256": combined_digest(files) if files else None, "files": files,
                      "not_here": [path for path in artifact.paths if path not in present]})
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lineage": chain,
        "params": params,
        "params_sha256": params_digest(params),
        "git": git_state(root),
        "environment": environment(),
        "dvc_lock": dvc_lock_hashes(root),
    }


# ------------------------------------------------------------------------------------------ checks

def verify(manifest: dict, version_folder: Path, root: Path = Path(".")) -> list[str]:
    """Problems found by recomputing every hash still on disk; [] when everything matches.

    The version's own files must all exist and match (they are what is served). Project artifacts
    that were deleted are not problems (nothing on disk to contradict the record); a changed file,
    or a file added to an artifact's folder, is.
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
    return problems


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
