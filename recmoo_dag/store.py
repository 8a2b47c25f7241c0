"""The deployed store: immutable version folders and one atomic pointer to the one being served.

    deployments/                 (deploy.store; git-ignored and not a DVC out, so `dvc repro` never wipes it)
      versions/v0001/ v0002/ ... complete, self-contained, never modified after publish
      versions/.tmp-*            a version being written (or left by a killed publish; removed later)
      CURRENT -> versions/v0002  symlink: the version being served
      decisions.jsonl            one line per deploy/rollback decision, appended (a torn last line,
                                 from a writer killed mid-append, is skipped by readers and ended by
                                 the next writer)
      .lock                      flock: one publisher or rollback at a time

Crash safety (a process killed at any instant leaves the old or the new version fully in place):
1. the new version is written and fsynced under a temporary name nobody reads;
2. it is renamed to its final name (rename is atomic within a filesystem);
3. a new symlink is created under a temporary name and `os.replace`d onto CURRENT (atomic too).
Readers resolve CURRENT once and then read only that immutable folder, so they never see a mix.
Before step 3 CURRENT still names the old version; after it, the new one. A kill between 2 and 3
leaves a complete but never-served folder, which stays in the history and can be chosen explicitly.

A store that cannot be written (disk full, read-only, a file where a folder must be) is a StoreError
naming the store and the OS's reason; a failed publish removes its staging folder and leaves CURRENT
as it was.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from recmoo_dag.errors import StoreError, quote
from recmoo_dag.io import fsync_dir, fsync_file

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
    with _lock_file(Path(store)) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_file(store: Path) -> TextIO:
    """The store's lock file, opened for `flock` (the store is created on first use)."""
    try:
        store.mkdir(parents=True, exist_ok=True)
        return open(store / ".lock", "a")
    except OSError as err:  # read-only, or a file where the store's folder should be
        raise _cannot(store, "lock the store", err) from err


def publish(store: str | Path, build: Callable[[Path, str], None], hook: Hook | None = None) -> str:
    """Write a new version with `build(folder, name)` and make it current; returns its name.

    `build` writes every file of the version, MANIFEST included, into a staging folder; the rename
    is what makes it visible. Call under `locked(store)`: the caller decided against the current
    champion, which must not change before the switch. Any failure before the rename removes the
    staging folder; an OSError of writing it (disk full, read-only) becomes a StoreError.
    """
    hook = hook or (lambda step: None)
    store = Path(store)
    root = store / VERSIONS
    name, staging = "a new version", None
    try:
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
        fsync_dir(root)
    except BaseException as err:
        # A full disk must not stay full of a half-written version (and a bug or Ctrl-C leaves none either).
        # After the rename there is no staging folder: the complete version stays, as after a kill.
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise _cannot(store, f"publish {name}", err) from err
        raise
    hook("renamed")
    switch(store, name, hook)
    return name


def switch(store: str | Path, name: str, hook: Hook | None = None) -> None:
    """Point CURRENT at versions/`name` atomically (a new symlink replaces the old in one rename)."""
    store = Path(store)
    link = store / f".{CURRENT}.tmp-{os.getpid()}"
    try:
        link.unlink(missing_ok=True)
        os.symlink(f"{VERSIONS}/{name}", link)  # relative: the store can be moved or copied
        if hook:
            hook("linked")
        os.replace(link, store / CURRENT)
        fsync_dir(store)
    except OSError as err:
        if link.is_symlink():
            link.unlink()
        raise _cannot(store, f"switch to {name}", err) from err
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
    """Append one JSON line to the decision log (an audit trail, not needed to serve).

    A writer killed mid-append leaves a last line without its newline: this record then starts on a
    fresh line, or it would be glued to the torn one and lost with it.
    """
    path = Path(store) / DECISIONS
    line = json.dumps(record, sort_keys=True, default=str).encode() + b"\n"
    try:
        with open(path, "a+b") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end:
                handle.seek(end - 1)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            handle.write(line)  # append mode: written at the end wherever the read left off
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise _cannot(Path(store), f"append to {DECISIONS} (the decision is not recorded)", err) from err


def read_decisions(store: str | Path) -> list[dict]:
    """Every record of the decision log, oldest first. A line that is not a JSON object (torn by a
    writer killed mid-append) is skipped with a warning naming the file and line."""
    path = Path(store) / DECISIONS
    if not path.is_file():
        return []
    records = []
    # "replace": a torn line must not make the whole log unreadable, even one cut inside a character
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            warnings.warn(f"{path}:{number}: skipped a torn or malformed record (a writer killed mid-append?): "
                          f"{quote(line)}", stacklevel=2)
    return records


def _cannot(store: Path, doing: str, err: OSError) -> StoreError:
    """The OS's reason a store write failed, as one line that says what is still served and what to do."""
    files = " -> ".join(str(f) for f in (err.filename, err.filename2) if f)
    try:
        served = f"; {current_version(store) or 'nothing'} is still served"
    except OSError:  # a file where the store's folder should be: there is no CURRENT to read
        served = ""
    fix = _FIXES.get(err.errno)
    return StoreError(f"{store}: cannot {doing}: {err.strerror or err}{f' ({files})' if files else ''}{served}"
                      f"{f' ({fix}, then re-run)' if fix else ''}")


_FIXES = {
    errno.ENOSPC: "free space on the store's filesystem",
    errno.EDQUOT: "free space within the disk quota",
    errno.EFBIG: "raise the file size limit (ulimit -f)",
    errno.EROFS: "mount the store's filesystem writable, or point deploy.store elsewhere",
    errno.EACCES: "make the store writable by this user",
    errno.EPERM: "make the store writable by this user",
}


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder below `folder` so the rename publishes data, not empty inodes."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            fsync_file(path)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)
