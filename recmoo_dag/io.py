"""File helpers shared by the stages: atomic writes (a crash never leaves half a file) and hashes."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from recmoo_dag.errors import DataError, InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (raw logs and model weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_in_progress(name: str) -> bool:
    """Hidden files and temp names are files still being written by a producer."""
    return name.startswith(".") or name.endswith((".tmp", ".part"))


def files_under(path: Path) -> list[Path]:
    """A file, or every regular file below a folder except hidden and in-progress ones, sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(path).parts) and not is_in_progress(p.name))


def confined(files: list[Path], folder: Path) -> list[Path]:
    """`files` found below `folder`, each refused unless it resolves inside `folder`. The folder
    itself was checked to lie inside the project (config.confine_paths); a symlink below it that
    leaves would have ingest read, and fetch hash and record, files from anywhere on the machine."""
    inside = Path(folder).resolve()
    for file in files:
        target = file.resolve()
        if not target.is_relative_to(inside):
            raise DataError(f"{file}: a symlink to {target}, outside {folder}: refused (copy the file in instead)")
    return files


def file_key(file: Path, root: Path) -> str:
    """How a file is named in a record: relative to the project, absolute when params gave it so."""
    return file.as_posix() if file.is_absolute() and not root.is_absolute() else file.relative_to(root).as_posix()


def hash_files(paths: tuple[str, ...] | list[str], root: Path = Path(".")) -> dict[str, dict]:
    """{relative file path: {"sha256", "bytes"}} of every file under `paths` (relative to root)."""
    hashes = {}
    for rel in paths:
        target = root / rel
        if not target.exists():
            raise InputError(f"{target} does not exist (run the stage that writes it)")
        for file in files_under(target):
            hashes[file_key(file, root)] = {"sha256": sha256_file(file), "bytes": file.stat().st_size}
    return hashes


def combined_digest(files: dict[str, dict]) -> str:
    """One hash for a set of files: sha256 over sorted 'path sha256' lines."""
    lines = "".join(f"{path} {info['sha256']}\n" for path, info in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` then rename onto `path`: readers see the old file or the new, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs should look like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk: what a rename or an acknowledgement promises is then durable."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a file created, renamed or removed in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, payload: dict) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_parquet(path: str | Path, frame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False, compression="zstd"))
