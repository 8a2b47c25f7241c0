"""Training: causal-LM windows, reproducible batches, the stage's outputs, determinism, resume, DDP."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recmoo_dag.batches import StepStream, training_windows
from recmoo_dag.config import Params
from recmoo_dag.errors import InputError
from recmoo_dag.stages.train import main as run
from recmoo_dag.windows import histories_of
from tests.conftest import REPO
from tests.model_support import tiny_project


def test_windows_predict_every_next_basket_once():
    # one item per basket: user 0 1..7 (max_len 4: windows 4..7 and 1..4), user 1 8 9
    history = histories_of(np.array([0, 7, 9]), np.arange(1, 10), np.ones(9, dtype=bool))
    items, baskets, context = training_windows(history, max_len=4)
    assert items.tolist() == [[4, 5, 6, 7], [1, 2, 3, 4], [0, 0, 8, 9]]
    assert baskets.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [-1, -1, 0, 1]]
    assert context.tolist() == [[-1, 0, 1, 2], [-1, 0, 1, 2], [-1, -1, -1, 2]]


def test_a_basket_is_predicted_whole_from_the_baskets_before_it():
    # baskets {1}, {2, 3}, {4, 5, 6}, {7}; max_len 4 lets a basket enter a window with 2 events
    history = histories_of(np.array([0, 7]), np.arange(1, 8), np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool))
    items, baskets, context = training_windows(history, max_len=4)
    assert items.tolist() == [[0, 4, 5, 7], [2, 3, 4, 5], [1, 2, 3, 6], [0, 1, 2, 3]]
    assert baskets.tolist() == [[-1, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 2], [-1, 0, 1, 1]]
    # 7 from {4, 5}; 4 and 5 from {2, 3}; 6, the rest of its basket, after the same history; 2 and 3 from {1}
    assert context.tolist() == [[-1, -1, -1, 2], [-1, -1, 1, 1], [-1, -1, -1, 2], [-1, -1, 1, 1]]
    targets = items[context >= 0]
    inputs = items[np.arange(len(items))[:, None].repeat(4, 1)[context >= 0], context[context >= 0]]
    # no target is ever predicted from a state that has seen an item of its own basket
    assert sorted(zip(targets.tolist(), inputs.tolist())) == [(2, 1), (3, 1), (4, 3), (5, 3), (6, 3), (7, 5)]


def test_windows_make_every_basket_after_the_first_a_target_exactly_once():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 40, 30)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, 100, indptr[-1])
    opens = rng.random(indptr[-1]) < 0.4  # baskets of 1 to ~10 events
    history = histories_of(indptr, items, opens)
    windows, _, context = training_windows(history, max_len=7)
    firsts = history.basket_starts[indptr[:-1][lengths > 0]]
    first_ends = history.basket_ends[firsts]
    expected = np.concatenate([items[e:end] for e, end in zip(first_ends, indptr[1:][lengths > 0])])
    assert sorted(windows[context >= 0].tolist()) == sorted(expected.tolist())


def test_rounds_are_fixed_step_counts_of_an_endless_seeded_stream():
    lengths = np.random.default_rng(0).integers(1, 50, 203)  # 13 batches of 16 per pass (the last one short)

    def rounds(first, last, rank=0, world_size=1, steps=5):
        out = []
        for epoch in range(first, last):
            stream = StepStream(lengths, batch_size=16, bucket=4, steps=steps, seed=3, rank=rank,
                                world_size=world_size)
            stream.sampler.set_epoch(epoch)  # what Lightning calls at every round
            batches = list(stream)
            assert len(batches) == len(stream) == steps
            out.extend(batches)
        return out

    stream = rounds(0, 6)  # 30 steps: two whole passes and 4 batches of a third
    assert sorted(i for b in stream[:13] for i in b) == list(range(203))  # every window once per pass
    assert sorted(i for b in stream[13:26] for i in b) == list(range(203))
    assert stream[:13] != stream[13:26]  # each pass shuffled anew
    assert rounds(2, 6) == stream[10:]  # a round depends on (seed, round) alone: resumable mid-stream
    assert rounds(0, 3, steps=10) == stream  # and not on how the stream is cut into rounds
    shards = [rounds(0, 2, rank, 2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 10  # equal step counts, or DDP hangs
    assert all(len(b) == 16 for shard in shards for b in shard)
    first_pass = [i for shard in shards for b in shard[:6] for i in b]
    assert len(first_pass) == len(set(first_pass))  # disjoint within a pass


def test_an_improvement_must_beat_the_noise_of_the_paired_gain():
    from recmoo_dag.model import SeqRecModel
    from recmoo_dag.train import SeqRecModule

    module = SeqRecModule(SeqRecModel(10, 8, 2, 1, 0.0, 5), k=10, lr=1e-3, lr_schedule="constant", warmup_steps=0, total_steps=10,
                          weight_decay=0.0, label_smoothing=0.0, min_improvement_se=1.0, seed=0, compile=False)
    assert module._improves(0.0, 0.0, 100)  # the first validation is the best so far
    module.best_gains = np.zeros(100)
    rng = np.random.default_rng(0)
    noisy = rng.normal(0.001, 0.2, 100)  # +0.001 on average, +-0.2 per user: luck, not progress
    steady = np.full(100, 0.01) + rng.normal(0, 0.01, 100)  # +0.01 for nearly everyone
    assert not module._improves(noisy.sum(), (noisy ** 2).sum(), 100)
    assert module._improves(steady.sum(), (steady ** 2).sum(), 100)
    assert not module._improves(-steady.sum(), (steady ** 2).sum(), 100)


def test_warm_up_ramps_the_learning_rate_then_cosine_decays_it():
    from recmoo_dag.model import SeqRecModel
    from recmoo_dag.train import SeqRecModule

    module = SeqRecModule(SeqRecModel(10, 8, 2, 1, 0.0, 5), k=10, lr=1.0, lr_schedule="cosine", warmup_steps=4, total_steps=20,
                          weight_decay=0.0, label_smoothing=0.0, min_improvement_se=1.0, seed=0, compile=False)
    factor = module.configure_optimizers()["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [round(factor(s), 3) for s in (0, 1, 3)] == [0.2, 0.4, 0.8]
    assert factor(4) == 1.0 and factor(12) == pytest.approx(0.5) and factor(20) == pytest.approx(0.0, abs=1e-12)


def _outputs(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in
            ("models/model/model.safetensors", "models/model/config.json", "models/model/generator.json",
             "metrics/train_steps.csv")}


def test_run_writes_the_contract_and_is_byte_reproducible(tmp_path, monkeypatch):
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        run(tiny_project(tmp_path / name))
        runs.append(_outputs(tmp_path / name))
    assert runs[0] == runs[1]  # same seed, same data: byte-identical weights, config and log

    metrics = json.loads((tmp_path / "b" / "metrics" / "train.json").read_text())
    assert set(metrics) == {"model", "baselines", "blend", "generator", "vs_ease", "choice", "train_seconds", "steps",
                            "best_step", "item_text"}
    assert metrics["item_text"] == {"chosen": "none", "valid_ndcg@10": {}}  # tuning off: the variant as written
    assert set(metrics["baselines"]) == {"pop", "ease"}
    for report in (metrics["model"], metrics["baselines"]["pop"], metrics["baselines"]["ease"], metrics["blend"]):
        assert set(report) == {"valid", "test"}
        for window in report.values():
            measures = ("ndcg@10", "hr@10", "recall@10", "mrr")
            assert set(window) == {*measures, *(f"{m}_ci" for m in measures), "ndcg@10_per_basket", "users", "baskets"}
            for measure in measures:  # each value inside its interval, inside [0, 1]
                low, high = window[f"{measure}_ci"]
                assert 0 <= low <= window[measure] <= high <= 1, measure
    # The choice is a test against EASE on valid: anything else must beat it.
    assert set(metrics["vs_ease"]) == {"model", "blend", "pop"}
    if metrics["generator"] != "ease":
        assert metrics["vs_ease"][metrics["generator"]]["valid"]["ndcg@10"] > 1.0
    assert json.loads((tmp_path / "b" / "models" / "model" / "generator.json").read_text())["kind"] == metrics["generator"]
    assert metrics["steps"] == 40 and metrics["train_seconds"] > 0
    assert metrics["model"]["valid"]["ndcg@10"] > metrics["baselines"]["pop"]["valid"]["ndcg@10"]

    rows = list(csv.DictReader((tmp_path / "b" / "metrics" / "train_steps.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    # The valid NDCG logged during training (users sharded, batched, trimmed) at the last improvement
    # is the one the final full evaluation of the kept weights reports.
    kept = next(r for r in rows if int(r["improvements"]) == int(rows[-1]["improvements"]))
    assert int(kept["step"]) == metrics["best_step"]
    assert metrics["model"]["valid"]["ndcg@10"] == pytest.approx(float(kept["valid_ndcg@10"]), abs=1e-6)
    ckpts = tmp_path / "b" / "models" / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} == {"last.ckpt", "best.ckpt"}
    checkpoint = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)  # no pickle needed
    assert checkpoint["epoch"] == 3 and checkpoint["global_step"] == 40


def test_resume_refuses_a_checkpoint_of_other_params(project):
    params = tiny_project(Path.cwd(), {"train": {"max_steps": 20}})
    run(params)
    weights = Path(params.train.model_dir, "model.safetensors").read_bytes()

    def changed(**train) -> Params:
        return Params.model_validate({**params.model_dump(by_alias=True), "train": {**params.train.model_dump(), **train}})

    with pytest.raises(InputError, match="another training run.*without --resume"):
        run(changed(warmup_steps=3), resume=True)
    # Bookkeeping is not the run's identity: a finished run resumes into the very same model.
    run(changed(patience=3, eval_batch_size=7, threads=2), resume=True)
    assert Path(params.train.model_dir, "model.safetensors").read_bytes() == weights
    assert len(Path(params.train.steps_log).read_text().splitlines()) == 3  # header + 2 validations


def _cli(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recmoo_dag.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    slow = {"train": {"max_steps": 60, "patience": 6}}
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        params = tiny_project(tmp_path / name, slow)
    monkeypatch.chdir(tmp_path / "whole")
    run(params)  # the uninterrupted reference, in-process (the same bytes as the CLI, and no start-up cost)

    killed = tmp_path / "killed"
    proc = _cli(killed, "train")
    log = killed / "metrics" / "train_steps.csv"
    deadline = time.monotonic() + 240
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):  # header + two validations done
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = torch.load(killed / "models" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 0 <= last["epoch"] < 5  # really interrupted, with something to resume from
    assert not (killed / "models" / "model").exists()

    out = _finish(_cli(killed, "train", "--resume"))
    assert f"step {last['global_step'] + 10:5d}" in out and "step    10" not in out  # continued, not restarted
    assert _outputs(killed) == _outputs(tmp_path / "whole")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    tiny_project(tmp_path, {"train": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_steps": 20}})
    out = _finish(_cli(tmp_path, "train"))
    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert metrics["steps"] == 20
    rows = list(csv.DictReader((tmp_path / "metrics" / "train_steps.csv").open()))
    assert len(rows) == 2, out
    # Each process ranked half of the users; the summed metric equals one process ranking them all.
    kept = next(r for r in rows if int(r["step"]) == metrics["best_step"])
    assert metrics["model"]["valid"]["ndcg@10"] == pytest.approx(float(kept["valid_ndcg@10"]), abs=1e-6)
    assert metrics["model"]["valid"]["ndcg@10"] > metrics["baselines"]["pop"]["valid"]["ndcg@10"]


@pytest.mark.slow
@pytest.mark.scaleout
def test_two_nodes_with_torchrun_train_one_model_as_good_as_one_process(tmp_path):
    """Lightning DDP across two simulated nodes (two torchrun launches, --nnodes 2, gloo on CPU):
    one model is written, and its valid NDCG@10 is within the noise of a one-process run."""
    budget = {"train": {"max_steps": 60, "eval_every_steps": 20, "patience": 6}}
    (tmp_path / "single").mkdir()
    tiny_project(tmp_path / "single", budget)
    _finish(_cli(tmp_path / "single", "train"))
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    tiny_project(nodes, {"train": {**budget["train"], "accelerator": "cpu", "devices": 1, "strategy": "ddp",
                                   "num_nodes": 2}})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launches = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
         str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "recmoo_dag.cli", "train"],
        cwd=nodes, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}) for rank in (0, 1)]
    outputs = [_finish(launch) for launch in launches]
    assert "train:" in outputs[0] and "train:" not in outputs[1]  # node 0 reports and writes, node 1 trains
    assert {p.name for p in (nodes / "models" / "model").iterdir()} == {"model.safetensors", "config.json",
                                                                        "generator.json"}
    single = json.loads((tmp_path / "single" / "metrics" / "train.json").read_text())["model"]["valid"]["ndcg@10"]
    multi = json.loads((nodes / "metrics" / "train.json").read_text())["model"]["valid"]["ndcg@10"]
    # 120 users: NDCG@10's standard error is ~0.3 / sqrt(120) ~ 0.03; two ranks see twice the batches.
    assert abs(multi - single) < 3 * 0.3 / np.sqrt(120), (single, multi)
