"""Seconds for the whole pipeline: a Dagster materialization of every asset versus `dvc repro`.

Two fresh copies of the project (this dvc.yaml, params.yaml and code; git + DVC initialised),
same data: one runs `dvc repro`, the other materializes the `pipeline` job in process (each asset
runs its stage with `dvc repro --single-item`). Both start cold, fetch included. Prints a table.

    python benchmarks/bench_dagster.py                       # MovieLens-100K (params.yaml as is)
    python benchmarks/bench_dagster.py --synthetic 300 200 15000
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_copy(dest: Path, synthetic: list[int] | None) -> Path:
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "params.yaml"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "recmoo_dag", dest / "recmoo_dag", ignore=shutil.ignore_patterns("__pycache__"))
    if synthetic:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        params["data"]["source"] = "synthetic"
        params["data"]["synthetic"].update(dict(zip(("users", "items", "events"), synthetic)))
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True, env=env)
    return dest


def time_dvc(project: Path) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed in {project}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def time_dagster(project: Path) -> tuple[float, str]:
    from dagster import DagsterInstance

    from recmoo_dag.defs import build_defs

    start = time.perf_counter()  # includes reading dvc.yaml into definitions
    with DagsterInstance.ephemeral() as instance:
        result = build_defs(project).resolve_job_def("pipeline").execute_in_process(
            instance=instance, raise_on_error=False)
    seconds = time.perf_counter() - start
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    return seconds, "success" if result.success else "failed: " + ", ".join(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", nargs=3, type=int, metavar=("USERS", "ITEMS", "EVENTS"),
                        help="a synthetic log instead of MovieLens-100K")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_dagster_") as tmp:
        dvc_seconds = time_dvc(make_copy(Path(tmp) / "dvc", args.synthetic))
        dagster_seconds, outcome = time_dagster(make_copy(Path(tmp) / "dagster", args.synthetic))
    data = ("synthetic {} users, {} items, {} events".format(*args.synthetic) if args.synthetic
            else "MovieLens-100K")
    print(f"| runner ({data}) | seconds |\n|---|---|")
    print(f"| dvc repro | {dvc_seconds:.1f} |\n| Dagster, every asset (in process) | {dagster_seconds:.1f} |")
    print(f"\nDagster run: {outcome}")


if __name__ == "__main__":
    main()
