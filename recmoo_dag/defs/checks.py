"""Blocking asset checks: when one fails, nothing downstream of its asset runs in that run.

So bad data never reaches training, a generator that loses to popularity never reaches the search, a
front that loses to the MMR sweep never reaches deployment, and the deployed policy keeps serving.
Each check is a tiny function of the stage's JSON report (the file the stage already writes); it
is attached only when dvc.yaml has the stage, and it finds the report among the stage's outs.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from dagster import AssetCheckResult, AssetChecksDefinition, Failure, MetadataValue, asset_check

from recmoo_dag.defs.pipeline import Stage
from recmoo_dag.objectives import label
from recmoo_dag.results import Comparison, DeployReport, SearchMetrics


def validation_passed(report: dict) -> AssetCheckResult:
    """The great-expectations suite passed (reports/validation.json)."""
    failures = report.get("failures") or []
    return AssetCheckResult(passed=bool(report["success"]), metadata={
        "summary": MetadataValue.text(str(report.get("summary", ""))),
        "failed expectations": len(failures),
    })


def generator_beats_popularity(metrics: dict) -> AssetCheckResult:
    """The chosen candidate generator's NDCG@k on valid is above the popularity baseline's
    (metrics/train.json)."""
    report = Comparison.from_json(metrics)
    generator, popularity = report.valid_ndcg[report.generator], report.pop.valid.ndcg
    ndcg = label("ndcg", report.k)
    metadata = {"generator": MetadataValue.text(report.generator), f"generator valid {ndcg}": generator,
                f"popularity valid {ndcg}": popularity, "margin": generator - popularity}
    if report.generator in report.vs_ease:  # EASE itself has no ratio to EASE
        ratio, (low, high) = report.vs_ease[report.generator]["valid"]
        metadata[f"generator / EASE valid {ndcg}"] = MetadataValue.text(f"{ratio:.3f}x [{low:.3f}, {high:.3f}]")
    return AssetCheckResult(passed=generator > popularity, metadata=metadata)


def front_beats_mmr(search: dict) -> AssetCheckResult:
    """The Pareto front is non-empty and its hypervolume on valid beats the MMR sweep's at the same
    budget (metrics/search.json)."""
    report = SearchMetrics.from_json(search)
    front, mmr = report.hypervolume["nsga"], report.hypervolume["mmr_sweep"]
    return AssetCheckResult(passed=report.front_size > 0 and front > mmr, metadata={
        "front size": report.front_size, "front hypervolume": front, "MMR sweep hypervolume": mmr})


def deploy_gate(deploy: dict) -> AssetCheckResult:
    """A policy that passed the gate is served: the new one promoted, or the champion kept
    (metrics/deploy.json). Fails when nothing is served."""
    report = DeployReport.from_json(deploy)
    return AssetCheckResult(passed=report.promoted or report.version is not None, metadata={
        "deployed version": MetadataValue.text(str(report.version)), "promoted": report.promoted,
        "gate decision": MetadataValue.text(report.reason),
        "true ratio the gate certifies (gate.power)": MetadataValue.text(certifiable(report))})


def certifiable(report: DeployReport) -> str:
    """gate.power in words: the true ratio per bound that the test window certifies that often."""
    if math.isnan(report.power):  # a report of the code before gate.power
        return "not stated"
    if report.needed is None:
        return "no candidate"
    return f"{report.power:.0%} of the time: " + ", ".join(
        f"{label(name, report.k)} {value:.3f}" for name, value in report.needed.items())


# stage -> (report file among its outs, check). A stage missing from dvc.yaml gets no check.
BLOCKING_CHECKS: dict[str, tuple[str, Callable[[dict], AssetCheckResult]]] = {
    "validate": ("validation.json", validation_passed),
    "train": ("train.json", generator_beats_popularity),
    "search": ("search.json", front_beats_mmr),
    "deploy": ("deploy.json", deploy_gate),
}


def build_checks(project: Path, stages: dict[str, Stage]) -> list[AssetChecksDefinition]:
    return [stage_check(project, stages[name], filename, check)
            for name, (filename, check) in BLOCKING_CHECKS.items() if name in stages]


def stage_check(project: Path, stage: Stage, filename: str,
                check: Callable[[dict], AssetCheckResult]) -> AssetChecksDefinition:
    report = report_path(stage, filename)

    @asset_check(asset=stage.name, name=check.__name__, description=check.__doc__, blocking=True)
    def _check() -> AssetCheckResult:
        path = project / report
        if not path.is_file():
            raise Failure(f"{report}: missing, so check {check.__name__} cannot run "
                          f"(stage {stage.name} writes it)")
        try:
            return check(json.loads(path.read_text()))
        except KeyError as err:
            raise Failure(f"{report}: no key {err.args[0]!r} (written by stage {stage.name}; "
                          f"the check is {check.__name__} in recmoo_dag/defs/checks.py)") from err

    return _check


def report_path(stage: Stage, filename: str) -> str:
    """The out of `stage` named `filename` (declared in dvc.yaml, so DVC tracks what the check reads)."""
    for out in stage.outs:
        if Path(out).name == filename:
            return out
    raise ValueError(f"dvc.yaml: stage {stage.name!r} has no out named {filename!r}; its blocking check "
                     f"needs it (recmoo_dag/defs/checks.py BLOCKING_CHECKS); outs: {list(stage.outs)}")
