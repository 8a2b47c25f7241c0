"""`recmoo validate`: the data-quality suite on the ingested table; the validated copies are written
only when it passes. `recmoo validate PATH...` checks log batches before they are dropped in."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from recmoo_dag.config import Params
from recmoo_dag.data import read_interactions
from recmoo_dag.errors import DataError, ValidationFailed
from recmoo_dag.io import write_json, write_parquet
from recmoo_dag.validation import validate_interactions, without_repeats


def main(params: Params) -> None:
    rules = params.validation
    interactions = pd.read_parquet(params.data.interactions)
    report = validate_interactions(interactions, rules, whole_dataset=True, source=params.data.interactions)
    write_json(rules.report, report.to_json())
    if not report.success:
        raise ValidationFailed(f"{report.line()} (full report: {rules.report})")
    write_parquet(rules.interactions, without_repeats(interactions))
    write_parquet(rules.items, pd.read_parquet(params.data.items))
    print(f"validate: {report.summary.splitlines()[0]}")


def check_files(params: Params, paths: list[str], fmt: str | None = None) -> int:
    """Check log batches with the stage's schema and row rules (size minimums are for the whole
    dataset). Every file is checked; one line each, `recmoo validate: error: ...` on stderr for a
    file that fails; exit status 1 when any does."""
    fmt = fmt or params.data.format
    failed = 0
    for path in paths:
        try:
            frame = read_interactions(Path(path), fmt, params.data.generic)
        except DataError as err:
            print(f"recmoo validate: error: {err}", file=sys.stderr)
            failed += 1
            continue
        report = validate_interactions(frame, params.validation, whole_dataset=False, source=str(path))
        if report.success:
            print(f"validate: {report.summary}")
        else:
            print(f"recmoo validate: error: {report.line()}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
