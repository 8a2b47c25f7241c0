"""The tuning stage: seeded and deterministic, resumable after a kill, and switchable off."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recmoo_dag.stages import tune
from tests.conftest import REPO
from tests.model_support import tiny_project

# Four quick trials on the tiny project; the second prunes as soon as it can.
QUICK = {"tune": {"enabled": True, "trials": 4, "trial_steps": 40, "startup_trials": 1,
                  "space": {"d_model": [16, 32], "n_layers": [1], "max_len": [10, 20], "batch_size": [32, 64],
                            "item_text": ["none"]}},  # the text variants: tests/test_item_text.py
         "train": {"eval_every_steps": 10}}


def finished_rows(root: Path) -> list[dict]:
    rows = list(csv.DictReader((root / "reports" / "tune" / "trials.csv").open()))
    return [{k: v for k, v in row.items() if k != "number"} for row in rows if row["state"] != "FAIL"]


def test_the_study_is_deterministic_and_its_choice_is_what_train_reads(tmp_path, monkeypatch):
    outputs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        params = tiny_project(tmp_path / name, QUICK)
        tune.main(params)
        outputs.append({path: (tmp_path / name / path).read_bytes()
                        for path in ("models/tuned.json", "reports/tune/trials.csv", "reports/tune/history.png")})
    assert outputs[0] == outputs[1]
    chosen = json.loads(outputs[0]["models/tuned.json"])
    rows = list(csv.DictReader((tmp_path / "a" / "reports" / "tune" / "trials.csv").open()))
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    best = max((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: float(r["value"]))
    assert chosen["model"]["d_model"] == int(best["d_model"]) and chosen["valid_ndcg@10"] == float(best["value"])
    assert rows[0]["lr"] == "0.005" and rows[0]["d_model"] == "16"  # the first trial: the params as written
    assert set(chosen["model"]) == {"d_model", "n_layers", "dropout", "max_len", "item_text"}
    assert set(chosen["train"]) == {"lr", "batch_size", "weight_decay"}
    metrics = json.loads((tmp_path / "a" / "metrics" / "tune.json").read_text())
    assert sum(metrics["trials"].values()) == 4 and metrics["best"] == chosen
    assert metrics["best_trial"] == int(best["number"])

    from recmoo_dag.stages import train  # train reads the chosen values

    train.main(params)
    architecture = json.loads(Path(params.train.model_dir, "config.json").read_text())["architecture"]
    assert {k: architecture[k] for k in chosen["model"]} == chosen["model"]


@pytest.mark.slow
def test_a_killed_study_resumes_where_it_stopped(tmp_path, monkeypatch):
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        params = tiny_project(tmp_path / name, QUICK)
    monkeypatch.chdir(tmp_path / "whole")
    tune.main(params)

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "recmoo_dag.cli", "tune"], cwd=killed, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # two trials finished, the third under way: kill it mid-trial
        assert time.monotonic() < deadline
        if line.startswith("tune: trial 1 "):
            time.sleep(0.3)
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "models" / "tuned.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "recmoo_dag.cli", "tune"], cwd=killed, capture_output=True,
                             text=True, env=env, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "tune: trial 0 " not in resumed.stdout and "tune: trial 1 " not in resumed.stdout  # not re-run
    # The interrupted trial is marked failed; the finished trials are those of the uninterrupted study.
    assert finished_rows(killed) == finished_rows(tmp_path / "whole")
    assert (killed / "models" / "tuned.json").read_bytes() == (tmp_path / "whole" / "models" / "tuned.json").read_bytes()


def test_tuning_off_trains_with_the_params_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_project(tmp_path, {**QUICK, "tune": {"enabled": False}})
    tune.main(params)
    chosen = json.loads(Path("models/tuned.json").read_text())
    assert chosen == {"enabled": False, "model": {"d_model": 16, "n_layers": 1, "dropout": 0.1, "max_len": 20,
                                                  "item_text": "none"},
                      "train": {"lr": 0.005, "batch_size": 32, "weight_decay": 0.1}}
    assert json.loads(Path("metrics/tune.json").read_text())["enabled"] is False
