"""Push and pull of every DVC artifact through an S3-API server on loopback (moto in server mode).

Takes a project where `dvc repro` has run (default: this checkout, e.g. after `make pipeline` on
MovieLens-100K), copies its git history and DVC cache into a scratch folder (the project itself is
never touched), pushes everything to a fresh bucket, then pulls into a fresh git clone with an
empty cache and checks that `dvc status -c` is clean, every artifact byte-identical, and that
`dvc status` asks for nothing but `deploy` (the served policy and `metrics/deploy.json` are each
machine's serving state: git-ignored, so a clone deploys for itself). Prints one table: artifacts,
bytes, push and pull seconds.

    .venv/bin/python benchmarks/bench_remote.py [--project PATH]
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from recmoo_dag.defs.pipeline import load_pipeline
from tests.defs_support import artifact_digests
from tests.scaleout_support import add_remote, s3_server


def dvc(cwd: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} in {cwd} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def timed(cwd: Path, *args: str) -> float:
    start = time.perf_counter()
    dvc(cwd, *args)
    return time.perf_counter() - start


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=REPO)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    project = args.project.resolve()
    outs = [out for stage in load_pipeline(project).values() for out in stage.outs]
    with tempfile.TemporaryDirectory(prefix="recmoo-remote-") as scratch, s3_server() as s3:
        source, clone = Path(scratch) / "a", Path(scratch) / "b"
        subprocess.run(["git", "clone", "-q", str(project), str(source)], check=True)
        shutil.copytree(project / ".dvc" / "cache", source / ".dvc" / "cache")
        for name in ("dvc.lock", "params.yaml", "dvc.yaml"):  # the run's state, committed or not
            shutil.copy(project / name, source / name)
        dvc(source, "checkout", "--quiet")
        add_remote(dvc, source, s3)
        push = timed(source, "push")
        subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
        for name in ("dvc.lock", "params.yaml", "dvc.yaml"):
            shutil.copy(source / name, clone / name)
        add_remote(dvc, clone, s3)
        pull = timed(clone, "pull")
        identical = artifact_digests(clone, outs) == artifact_digests(source, outs)
        in_sync = "Cache and remote 'shared' are in sync" in dvc(clone, "status", "--cloud")
        pending = sorted(json.loads(dvc(clone, "status", "--json")))
        size = folder_bytes(clone / ".dvc" / "cache")
    print(f"| project | outs | cache MB | push s | pull s | push + pull s | identical | status -c clean | stages to run |\n"
          f"|---|---|---|---|---|---|---|---|---|\n"
          f"| {project.name} | {len(outs)} | {size / 1e6:.1f} | {push:.1f} | {pull:.1f} | {push + pull:.1f} "
          f"| {identical} | {in_sync} | {', '.join(pending) or 'none'} |")


if __name__ == "__main__":
    main()
