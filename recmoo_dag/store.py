"""The deployed store: immutable version folders and one atomic pointer to the one being served.

    deployments/                 (deploy.store; git-ignored and not a DVC out, so `dvc repro` never wipes it)
      versions/v0001/ v0002/ ... complete, self-contained, never modified after publish
      versions/.tmp-*            a version being written (or left by a killed publish; removed later)
      CURRENT -> versions/v0002  symlink: the version being served
      decisions.jsonl            one line per deploy/rollback decision, appended
      .lock                      flock: one publisher or rollback at a time

Crash safety (a process killed at any instant leaves the old or the new version fully in place):
1. the new version is written and fsynced under a temporary name nobody reads;
2. it is renamed to its final name (rename is atomic within a filesystem);
3. a new symlink is created under a temporary name and `os.replace`d onto CURRENT (atomic too).
Readers resolve CURRENT once and then read only that immutable folder, so they never see a mix.
Before step 3 CURRENT still names the old version; after it, the new one. A kill between 2 and 3
leaves a complete but never-served folder, which stays in the history and can be chosen explicitly.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recmoo_dag.errors import StoreError

CURRENT = "CURRENT"
VERSIONS = "versions"
DECISIONS = "decisions.jsonl"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^v(\d{4,})$")

Hook = Callable[[str], None]  # called with a step name; tests use it to kill the process mid-publish


def version_name(number: int) -> str:
    return f"v{number:04d}"


def parse_version(text: str | int) -> str:
    """'3', 3, 'v3' and 'v0003' all name version v0003."""
    digits = str(text).strip().lower().removeprefix("v")
    if not digits.isdigit():
        raise StoreError(f"{text!r} is not a version (expected e.g. v0003 or 3)")
    return version_name(int(digits))


def list_versions(store: str | Path) -> list[str]:
    """Complete versions (final name and a manifest), oldest first."""
    root = Path(store) / VERSIONS
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if _NAME.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(names, key=lambda name: int(name[1:]))


def current_version(store: str | Path) -> str | None:
    """The served version's name, or None before the first deployment."""
    try:
        target = os.readlink(Path(store) / CURRENT)
    except FileNotFoundError:
        return None
    return Path(target).name


def version_dir(store: str | Path, version: str | None = None) -> Path:
    """Folder of `version` (default: the current one); fails with a message if there is none."""
    store = Path(store)
    name = parse_version(version) if version is not None else current_version(store)
    if name is None:
        raise StoreError(f"{store}: nothing deployed yet (run `recmoo deploy`)")
    path = store / VERSIONS / name
    if not (path / MANIFEST).is_file():
        known = ", ".join(list_versions(store)) or "none"
        raise StoreError(f"{store}: no complete version {name} (versions: {known})")
    return path


def read_manifest(store: str | Path, version: str | None = None) -> dict:
    return json.loads((version_dir(store, version) / MANIFEST).read_text())


@contextmanager
def locked(store: str | Path) -> Iterator[None]:
    """Serialize publishers and rollbacks; the kernel drops the lock if the holder is killed."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    with open(store / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish(store: str | Path, build: Callable[[Path, str], None], hook: Hook | None = None) -> str:
    """Write a new version with `build(folder, name)` and make it current; returns its name.

    `build` writes every file of the version, MANIFEST included, into a staging folder; the rename
    is what makes it visible. Call under `locked(store)`: the caller decided against the current
    champion, which must not change before the switch.
    """
    hook = hook or (lambda step: None)
    store = Path(store)
    root = store / VERSIONS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a killed publish: never visible, safe to remove
        shutil.rmtree(stale, ignore_errors=True)
    existing = [int(m.group(1)) for p in root.iterdir() if (m := _NAME.match(p.name))]
    name = version_name(max(existing, default=0) + 1)
    staging = root / f".tmp-{name}-{os.getpid()}"
    staging.mkdir()
    hook("staging")
    build(staging, name)
    if not (staging / MANIFEST).is_file():
        raise StoreError(f"publish: the build of {name} wrote no {MANIFEST}")
    _fsync_tree(staging)
    hook("built")
    os.rename(staging, root / name)
    _fsync_dir(root)
    hook("renamed")
    switch(store, name, hook)
    return name


def switch(store: str | Path, name: str, hook: Hook | None = None) -> None:
    """Point CURRENT at versions/`name` atomically (a new symlink replaces the old in one rename)."""
    store = Path(store)
    link = store / f".{CURRENT}.tmp-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(f"{VERSIONS}/{name}", link)  # relative: the store can be moved or copied
    if hook:
        hook("linked")
    os.replace(link, store / CURRENT)
    _fsync_dir(store)
    if hook:
        hook("switched")


def rollback(store: str | Path, version: str | None = None) -> tuple[str | None, str]:
    """Serve `version` again (default: the newest version older than the current one).

    Returns (previous current, new current). The versions themselves are never touched.
    """
    store = Path(store)
    with locked(store):
        now = current_version(store)
        versions = list_versions(store)
        if version is None:
            if now is None:
                raise StoreError(f"{store}: nothing deployed, nothing to roll back")
            older = [v for v in versions if int(v[1:]) < int(now[1:])]
            if not older:
                raise StoreError(f"{store}: {now} is the oldest version; name one to roll forward to "
                                 f"(versions: {', '.join(versions)})")
            target = older[-1]
        else:
            target = version_dir(store, version).name
        switch(store, target)
        log_decision(store, {"event": "rollback", "from": now, "to": target})
    return now, target


def log_decision(store: str | Path, record: dict) -> None:
    """Append one JSON line to the decision log (an audit trail, not needed to serve)."""
    with open(Path(store) / DECISIONS, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_decisions(store: str | Path) -> list[dict]:
    path = Path(store) / DECISIONS
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    try:
        records += [json.loads(lines[-1])] if lines else []
    except json.JSONDecodeError:  # a process killed mid-append tears at most the last line
        pass
    return records


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder below `folder` so the rename publishes data, not empty inodes."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
