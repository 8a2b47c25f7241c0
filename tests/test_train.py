"""Training: causal-LM windows, reproducible batches, the stage's outputs, determinism, resume, DDP."""
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recmoo_dag.config import Params
from recmoo_dag.errors import InputError
from recmoo_dag.stages.train import main as run
from recmoo_dag.train import BucketBatchSampler, EpochPermutation, training_windows
from tests.conftest import REPO
from tests.model_support import tiny_project


def test_windows_predict_every_next_item_once():
    # user 0: 1 2 3 4 5 6 7 (6 targets, max_len 4 -> windows [1..3 -> 2..4] and [3..6 -> 4..7]); user 1: 8 9
    indptr = np.array([0, 7, 9])
    items = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    inputs, targets = training_windows(indptr, items, max_len=4)
    assert inputs.tolist() == [[3, 4, 5, 6], [0, 0, 1, 2], [0, 0, 0, 8]]
    assert targets.tolist() == [[4, 5, 6, 7], [0, 0, 2, 3], [0, 0, 0, 9]]


def test_windows_cover_each_event_after_the_first_exactly_once():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 40, 30)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, 100, indptr[-1])
    _, targets = training_windows(indptr, items, max_len=7)
    expected = np.concatenate([items[s + 1:e] for s, e in itertools.pairwise(indptr)])
    assert sorted(targets[targets > 0].tolist()) == sorted(expected.tolist())


def test_batches_depend_only_on_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(1, 50, 203)

    def batches(epoch, rank=0, world_size=1):
        sampler = EpochPermutation(203, seed=3)
        sampler.set_epoch(epoch)
        batch_sampler = BucketBatchSampler(sampler, lengths, batch_size=16, bucket=4, rank=rank,
                                           world_size=world_size)
        out = list(batch_sampler)
        assert len(out) == len(batch_sampler)
        return out

    first = batches(0)
    assert sorted(i for b in first for i in b) == list(range(203))  # every window once per epoch
    assert first == batches(0) and first != batches(1)
    shards = [batches(0, rank, 2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1])  # equal step counts, or DDP hangs
    seen = [i for shard in shards for b in shard for i in b]
    assert len(seen) == len(set(seen))  # disjoint
    assert all(len(b) == 16 for shard in shards for b in shard)


def _outputs(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in
            ("models/model/model.safetensors", "models/model/config.json", "metrics/train_epochs.csv")}


def test_run_writes_the_contract_and_is_byte_reproducible(tmp_path, monkeypatch):
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        run(tiny_project(tmp_path / name))
        runs.append(_outputs(tmp_path / name))
    assert runs[0] == runs[1]  # same seed, same data: byte-identical weights, config and log

    metrics = json.loads((tmp_path / "b" / "metrics" / "train.json").read_text())
    assert set(metrics) == {"model", "baselines", "train_seconds", "epochs"}
    assert set(metrics["baselines"]) == {"pop", "ease"}
    for report in (metrics["model"], metrics["baselines"]["pop"], metrics["baselines"]["ease"]):
        assert set(report) == {"valid", "test"}
        for context in report.values():
            assert set(context) == {"ndcg@10", "hr@10", "mrr"} and all(0 <= v <= 1 for v in context.values())
    assert metrics["epochs"] == 4.0 and isinstance(metrics["epochs"], float) and metrics["train_seconds"] > 0
    assert metrics["model"]["valid"]["ndcg@10"] > metrics["baselines"]["pop"]["valid"]["ndcg@10"]

    rows = list(csv.DictReader((tmp_path / "b" / "metrics" / "train_epochs.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    # The valid NDCG logged during training (users sharded, batched, trimmed) is the one the final
    # full evaluation of the best weights reports.
    best_logged = max(float(r["valid_ndcg@10"]) for r in rows)
    assert metrics["model"]["valid"]["ndcg@10"] == pytest.approx(best_logged, abs=1e-6)
    ckpts = tmp_path / "b" / "models" / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} == {"last.ckpt", "best.ckpt"}
    checkpoint = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)  # no pickle needed
    assert checkpoint["epoch"] == 3


def test_resume_refuses_a_checkpoint_of_other_params(project):
    params = tiny_project(Path.cwd(), {"train": {"max_epochs": 2}})
    run(params)
    weights = Path(params.train.model_dir, "model.safetensors").read_bytes()

    def changed(**train) -> Params:
        return Params.model_validate({**params.model_dump(by_alias=True), "train": {**params.train.model_dump(), **train}})

    with pytest.raises(InputError, match="another training run.*without --resume"):
        run(changed(lr=0.01), resume=True)
    # Bookkeeping is not the run's identity: a finished run resumes into the very same model.
    run(changed(patience=3, eval_batch_size=7, threads=2), resume=True)
    assert Path(params.train.model_dir, "model.safetensors").read_bytes() == weights
    assert len(Path(params.train.epochs_log).read_text().splitlines()) == 3  # header + 2 epochs


def _cli(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recmoo_dag.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    slow = {"train": {"max_epochs": 6, "patience": 6}}
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        params = tiny_project(tmp_path / name, slow)
    monkeypatch.chdir(tmp_path / "whole")
    run(params)  # the uninterrupted reference, in-process (the same bytes as the CLI, and no start-up cost)

    killed = tmp_path / "killed"
    proc = _cli(killed, "train")
    log = killed / "metrics" / "train_epochs.csv"
    deadline = time.monotonic() + 240
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):  # header + epochs 0, 1 done
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = torch.load(killed / "models" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 0 <= last["epoch"] < 5  # really interrupted, with something to resume from
    assert not (killed / "models" / "model").exists()

    out = _finish(_cli(killed, "train", "--resume"))
    assert f"epoch {last['epoch'] + 1:3d}" in out and "epoch   0" not in out  # continued, not restarted
    assert _outputs(killed) == _outputs(tmp_path / "whole")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    tiny_project(tmp_path, {"train": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 2}})
    out = _finish(_cli(tmp_path, "train"))
    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert metrics["epochs"] == 2
    rows = list(csv.DictReader((tmp_path / "metrics" / "train_epochs.csv").open()))
    assert len(rows) == 2, out
    # Each process ranked half of the users; the summed metric equals one process ranking them all.
    best_logged = max(float(r["valid_ndcg@10"]) for r in rows)
    assert metrics["model"]["valid"]["ndcg@10"] == pytest.approx(best_logged, abs=1e-6)
    assert metrics["model"]["valid"]["ndcg@10"] > metrics["baselines"]["pop"]["valid"]["ndcg@10"]
