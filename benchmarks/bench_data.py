"""Seconds and peak RSS of ingest, validate and features on MovieLens-100K and synthetic logs.

Each stage runs in a fresh process through the same CLI that dvc.yaml calls, so the figures
include interpreter start-up and imports, as a `dvc repro` would. Prints a table.

    python benchmarks/bench_data.py [--sizes 1000000 10000000] [--skip-ml100k]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Only the light config import here: Linux carries a parent's peak RSS into children it execs,
# so this process must stay small (the synthetic log is written by a child, too).

STAGES = ("ingest", "validate", "features")
# Runs one stage in-process and reports this process's peak RSS (ru_maxrss is KiB on Linux).
RUNNER = ("import json, resource, sys; from recmoo_dag.cli import main; code = main(sys.argv[1:]); "
          "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def run_stage(stage: str, workdir: Path) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, stage, "--params", "params.yaml"], cwd=workdir,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed in {workdir}:\n{proc.stderr[-2000:]}")
    rss_kib = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RSS")))
    return seconds, rss_kib / 1024**2


def prepare(workdir: Path, raw_dir: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["raw_dir"] = params["data"]["dataset_dir"] = str(raw_dir)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def bench(label: str, raw_dir: Path, workdir: Path) -> dict:
    prepare(workdir, raw_dir)
    row = {"dataset": label}
    for stage in STAGES:
        row[stage] = run_stage(stage, workdir)
    row["rows"] = json.loads((workdir / "metrics" / "ingest.json").read_text())["rows"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--skip-ml100k", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_ml100k:
            ml = REPO / "data" / "raw" / "ml-100k"
            if not (ml / "ml-100k.inter").is_file():
                subprocess.run([sys.executable, "-m", "recmoo_dag.cli", "fetch"], cwd=REPO, check=True)
            (tmp / "ml100k").mkdir()
            rows.append(bench("MovieLens-100K", ml, tmp / "ml100k"))
        for size in args.sizes:
            work = tmp / f"synth{size}"
            raw = work / "raw"
            subprocess.run([sys.executable, "-m", "recmoo_dag.cli", "synth", "--users", str(max(1000, size // 100)),
                            "--items", str(max(500, size // 500)), "--events", str(size), "--categories", "20",
                            "--seed", "0", "--out", str(raw)], check=True, capture_output=True)
            rows.append(bench(f"synthetic {size / 1e6:g}M", raw, work))
            shutil.rmtree(work)
    header = f"{'dataset':<16}{'rows':>11}" + "".join(f"{s + ' s':>12}{s + ' GB':>13}" for s in STAGES)
    print(header + f"{'total s':>10}{'peak GB':>9}")
    for row in rows:
        cells = "".join(f"{row[s][0]:>12.2f}{row[s][1]:>13.2f}" for s in STAGES)
        total = sum(row[s][0] for s in STAGES)
        peak = max(row[s][1] for s in STAGES)
        print(f"{row['dataset']:<16}{row['rows']:>11,}{cells}{total:>10.2f}{peak:>9.2f}")


if __name__ == "__main__":
    main()
