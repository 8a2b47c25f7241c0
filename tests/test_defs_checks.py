"""The blocking checks and the metadata renderers on hand-made reports (no DVC, no runs)."""
import base64
import json

import pytest
from dagster import Failure

from recmoo_dag.defs.checks import (
    BLOCKING_CHECKS,
    deploy_gate,
    front_beats_mmr,
    generator_beats_popularity,
    report_path,
    stage_check,
    validation_passed,
)
from recmoo_dag.defs.pipeline import Stage
from recmoo_dag.defs.reports import stage_metadata
from recmoo_dag.objectives import JUDGED, OBJECTIVES
from recmoo_dag.results import Accuracy, Comparison, DeployReport, Evaluation, SearchMetrics

PNG_1PX = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
                           "AAAABJRU5ErkJggg==")


def stage(name="validate", outs=("reports/validation.json",)) -> Stage:
    return Stage(name, f"recmoo {name}", None, (), tuple(outs), {}, (), "0" * 16)


def test_validation_passed():
    assert validation_passed({"success": True, "summary": "15/15 passed"}).passed
    failed = validation_passed({"success": False, "summary": "3/15 failed", "failures": [{}, {}, {}]})
    assert not failed.passed and failed.metadata["failed expectations"].value == 3


def accuracy(ndcg: float) -> Accuracy:
    values = {"ndcg": ndcg, "hr": 2 * ndcg, "recall": 2 * ndcg, "mrr": ndcg}
    return Accuracy(10, values, {name: (v * 0.9, v * 1.1) for name, v in values.items()}, ndcg, 50, 120)


def evaluation(valid_ndcg: float) -> Evaluation:
    return Evaluation(accuracy(valid_ndcg), accuracy(0.1))


def comparison(pop: float, chosen: str = "ease") -> dict:
    vs_ease = {kind: {"valid": (1.0, (0.9, 1.1)), "test": (1.0, (0.9, 1.1))} for kind in ("model", "blend", "pop")}
    return Comparison(evaluation(0.04), evaluation(pop), evaluation(0.12), evaluation(0.11), chosen, 100.0, 0.5,
                      {0.5: 0.11}, vs_ease).to_json()


def test_generator_beats_popularity():
    checked = generator_beats_popularity(comparison(pop=0.05))
    assert checked.passed and checked.metadata["generator"].value == "ease"
    blend = generator_beats_popularity(comparison(pop=0.05, chosen="blend"))
    assert blend.metadata["generator / EASE valid ndcg@10"].value == "1.000x [0.900, 1.100]"
    assert checked.metadata["generator valid ndcg@10"].value == 0.12
    assert not generator_beats_popularity(comparison(pop=0.12)).passed  # a tie is not a win


def search_metrics(front_size: int, nsga: float) -> dict:
    volumes = {"nsga": nsga, "mmr_sweep": 0.3, "random": 0.35, "grid": 0.2}
    window = dict.fromkeys(OBJECTIVES, 0.5)
    return SearchMetrics(100, 1.0, front_size, front_size, volumes, volumes, volumes,
                         {"valid": window, "test": window}, 50, 120, 0.05, 0.05).to_json()


def test_front_beats_mmr():
    assert front_beats_mmr(search_metrics(12, 0.4)).passed
    assert not front_beats_mmr(search_metrics(0, 0.4)).passed
    assert not front_beats_mmr(search_metrics(12, 0.3)).passed


def deploy_report(version: str | None, promoted: bool, reason: str) -> dict:
    figures, intervals = dict.fromkeys(JUDGED, 0.5), dict.fromkeys(JUDGED, (0.45, 0.55))
    ratios, ratio_intervals = dict.fromkeys(JUDGED, 1.0), dict.fromkeys(JUDGED, (0.98, 1.02))
    return DeployReport(10, version, {"pool": 10}, None, figures, intervals, figures, intervals, ratios,
                        ratio_intervals, ratios, ratio_intervals, promoted, reason, 0.8,
                        {"ndcg": 0.978, "ild": 1.057}).to_json()


def test_deploy_gate():
    assert deploy_gate(deploy_report("v2", True, "first deployment")).passed
    kept = deploy_gate(deploy_report("v1", False, "regresses; v1 kept"))
    assert kept.passed and kept.metadata["deployed version"].value == "v1"
    assert kept.metadata["true ratio the gate certifies (gate.power)"].value == "80% of the time: ndcg@10 0.978, ild@10 1.057"
    assert not deploy_gate(deploy_report(None, False, "no policy")).passed
    older = deploy_report("v1", False, "kept")
    del older["gate"]["power"]  # a report of the code before gate.power is still read
    assert deploy_gate(older).metadata["true ratio the gate certifies (gate.power)"].value == "not stated"


def test_check_reads_the_stage_report_and_names_missing_keys(tmp_path):
    check = stage_check(tmp_path, stage(), "validation.json", validation_passed)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "validation.json").write_text(json.dumps({"success": True, "summary": "ok"}))
    assert check().passed
    (tmp_path / "reports" / "validation.json").write_text(json.dumps({"summary": "no verdict"}))
    with pytest.raises(Failure, match="reports/validation.json: .*'success'"):
        check()


def test_report_path_finds_the_file_among_outs():
    train = stage("train", ("models/model", "metrics/train.json"))
    assert report_path(train, "train.json") == "metrics/train.json"
    with pytest.raises(ValueError, match="stage 'train' has no out named 'train.json'"):
        report_path(stage("train", ("models/model", "metrics/other.json")), "train.json")
    assert set(BLOCKING_CHECKS) == {"validate", "train", "search", "deploy"}


def test_metadata_from_json_png_and_csv(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").write_text(json.dumps({
        "epochs": 3, "model": {"valid": {"ndcg@10": 0.1, "hr@10": 0.2}},
        "baselines": {"pop": {"valid": {"ndcg@10": 0.05, "hr@10": 0.1}}}}))
    (tmp_path / "reports" / "search").mkdir(parents=True)
    (tmp_path / "reports" / "search" / "front.png").write_bytes(PNG_1PX)
    front = "policy,ndcg@10,ild@10\np0,0.1234567,0.5\np1,0.1,0.6\n"
    (tmp_path / "reports" / "search" / "front.csv").write_text(front)
    meta = stage_metadata(tmp_path, ("metrics/train.json", "reports/search"), {"metrics/train.json": "abc"})
    assert "`abc`" in meta["dvc/outs"].value and meta["train.epochs"] == 3
    table = meta["train.table"].value
    assert "| model.valid | 0.2 | 0.1 |" in table and "| baselines.pop.valid | 0.1 | 0.05 |" in table
    assert meta["front.png"].value.startswith("![front.png](data:image/png;base64,iVBOR")
    assert meta["front.rows"] == 2 and "| p0 | 0.1235 | 0.5 |" in meta["front.table"].value
