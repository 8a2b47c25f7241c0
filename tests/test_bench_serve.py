"""benchmarks/bench_serve.py, which measures the service's targets, runs on a project without training."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy_support import base_project

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\s*1\s+(\S+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+\d+\s+(\d+)")  # workers scenario clients p50 p99 req/s errors


@pytest.mark.slow
def test_bench_serve_measures_every_load_scenario_on_a_scratch_deployment(tmp_path_factory, tmp_path):
    """`--scratch` deploys an untrained model of the configured architecture, with candidates, prices and
    one policy, into a temporary store, and every scenario of the load table answers without an error,
    under the in-process reference that says how fast the machine ran. The scratch deployment once
    broke unnoticed when the policy gained variables (a front row without them)."""
    params = base_project(tmp_path_factory) / "params.yaml"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_serve.py"), "--scratch", "--params",
                           str(params), "--workers", "1", "--requests", "60", "--repeats", "1", "--clients", "4",
                           "--session-clients", "1", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert re.search(r"a lone session costs \d+\.\d+ ms in this process", done.stdout), done.stdout
    rows = [ROW.match(line).groups() for line in done.stdout.splitlines() if ROW.match(line)]
    assert {(scenario, clients) for scenario, clients, _ in rows} == {
        ("user", "1"), ("user", "4"), ("session", "1"), ("session", "4"), ("mixed", "4"), ("mixed+ev", "4")}, done.stdout
    assert all(errors == "0" for _, _, errors in rows), done.stdout
    assert not any(tmp_path.iterdir())  # the scratch store and the events' project lived in a temporary folder
