"""What a stage wrote, as Dagster metadata: DVC hashes plus whatever its report files say.

Generic on purpose: the files are the stage's outs from dvc.yaml, rendered by type, so a new
stage gets its metadata without a line here. JSON reports give their scalars (rows, users, items,
validation success, hypervolumes, deployed version, gate decision) and, when nested, a table
(model vs baselines); a PNG becomes a markdown image; a CSV (the Pareto front) a markdown table.
"""
from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

from dagster import MetadataValue

LOCK_KEY = "dvc/lock"
MAX_SCALARS = 24  # per JSON file: the rest stays readable in the table and in the file itself
MAX_TABLE_ROWS = 60
MAX_IMAGE_BYTES = 2 << 20  # a base64 image travels in the event log: keep it small


def stage_metadata(project: Path, outs: tuple[str, ...], hashes: dict[str, str], lock: dict | None = None) -> dict:
    """The stage's outs with DVC's md5s, its dvc.lock entry (what a worker elsewhere needs to pull
    these outs from the DVC remote), and what its report files say."""
    meta: dict = {"dvc/outs": MetadataValue.md(_md_table(
        ["out", "DVC md5"], [[f"`{path}`", f"`{md5}`"] for path, md5 in sorted(hashes.items())]))}
    if lock:
        meta[LOCK_KEY] = MetadataValue.json(lock)
    for path in report_files(project, outs):
        render = {".json": _json_meta, ".png": _png_meta, ".csv": _csv_meta}[path.suffix]
        meta.update(render(path, path.stem))
    return meta


def report_files(project: Path, outs: tuple[str, ...]) -> list[Path]:
    """JSON/PNG/CSV outs of a stage; inside an out folder only pictures and tables (not data dumps)."""
    found = []
    for out in outs:
        path = project / out
        if path.is_file() and path.suffix in (".json", ".png", ".csv"):
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".png", ".csv")))
    return found


def _json_meta(path: Path, prefix: str) -> dict:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        return {}
    meta: dict = {}
    for key, value in _scalars(data)[:MAX_SCALARS]:
        meta[f"{prefix}.{key}"] = MetadataValue.text(value) if isinstance(value, str) else value
    rows = _numeric_rows(data)
    if len(rows) >= 2:  # e.g. model.valid, baselines.pop.valid, ...: one row each, metrics as columns
        columns = sorted({c for _, values in rows for c in values})
        meta[f"{prefix}.table"] = MetadataValue.md(_md_table(
            ["", *columns], [[name, *(_fmt(values.get(c)) for c in columns)] for name, values in rows]))
    return meta


def _scalars(data: dict, max_depth: int = 2) -> list[tuple[str, object]]:
    """Leaves that are numbers, booleans or short strings, top-level facts first; deeper ones are
    in the table or the file (a GX result nests its run metadata five levels down)."""
    found, level = [], [("", data)]
    for _ in range(max_depth):
        deeper = []
        for prefix, node in level:
            for key, value in node.items():
                name = f"{prefix}{key}"
                if isinstance(value, dict):
                    deeper.append((f"{name}.", value))
                elif isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) < 500):
                    found.append((name, value))
                elif _is_interval(value):  # "ndcg@10_ci": [low, high]
                    found.append((name, f"[{value[0]:.4g}, {value[1]:.4g}]"))
        level = deeper
    return found


def _is_interval(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)


def _numeric_rows(data: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """Innermost dicts whose values are all numbers, named by their path."""
    rows, leaves = [], {}
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(_numeric_rows(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            leaves[key] = value
        elif _is_interval(value):
            leaves[key] = f"[{value[0]:.4g}, {value[1]:.4g}]"
    if leaves and prefix and len(leaves) == len(data):
        rows.insert(0, (prefix.rstrip("."), leaves))
    return rows


def _png_meta(path: Path, prefix: str) -> dict:
    if path.stat().st_size > MAX_IMAGE_BYTES:
        return {f"{prefix}.png": MetadataValue.path(str(path))}
    encoded = base64.b64encode(path.read_bytes()).decode()
    return {f"{prefix}.png": MetadataValue.md(f"![{path.name}](data:image/png;base64,{encoded})")}


def _csv_meta(path: Path, prefix: str) -> dict:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    shown = [[_fmt(cell) for cell in row] for row in body[:MAX_TABLE_ROWS]]
    hidden = len(body) - len(shown)
    note = f"\n\n{hidden} more rows in `{path.name}`" if hidden else ""
    return {f"{prefix}.rows": len(body), f"{prefix}.table": MetadataValue.md(_md_table(header, shown) + note)}


def _fmt(value) -> str:
    if value is None:
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}" if not float(number).is_integer() else str(int(number))


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
