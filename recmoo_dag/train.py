"""Training the transformer with Lightning: next-basket examples, the LightningModule, fit().

The model learns from the train window only (every basket of every user's sequence but the first,
each item of it predicted from the basket before: a full-softmax next-basket loss) for a budget of
optimizer steps, with a linear learning-rate warm-up. Every `train.eval_every_steps` steps (a
"round": what Lightning calls an epoch here) it is scored on valid NDCG@k (k = policy.k): each valid
basket from its history, each user's mean, over the users (a seeded sample of them on a large log;
full ranking). A validation only counts as an improvement when its gain over the best so far,
paired user by user, exceeds `train.min_improvement_se` standard errors of that
gain: on ~1k users NDCG@k moves by several percent between rounds by chance alone, and a lucky
round must neither be crowned nor reset the patience. Training stops after `train.patience` rounds
without an improvement (or at the budget), and the last improvement's weights are what downstream
uses. Test is touched once, by the final report.

Runs are reproducible: the batch order and the dropout masks of a round depend only on (seed,
round), so a run resumed from `last.ckpt` ends with the same weights, byte for byte, as one that
was never interrupted. Checkpoints (Lightning's pickled .ckpt, for --resume only) are read back with
weights_only=True; the artifact downstream reads is safetensors + JSON (recmoo_dag/model.py).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from recmoo_dag.batches import SequenceData
from recmoo_dag.config import ModelParams, TrainParams
from recmoo_dag.errors import InputError
from recmoo_dag.features import Features
from recmoo_dag.io import atomic_write
from recmoo_dag.metrics import basket_accuracy, target_ranks
from recmoo_dag.model import SeqRecModel, pca_initialization
from recmoo_dag.uncertainty import per_user
from recmoo_dag.windows import sample_users

SELECTED = "valid/improvements"  # how many validations were significant improvements: what checkpoints follow
LAST, BEST = "last", "best"


def monitor(k: int) -> str:
    """The logged metric early stopping, checkpoints and tuning's pruner follow: valid NDCG@k."""
    return f"valid/ndcg@{k}"
# Params that change the trajectory of training: a checkpoint written under others cannot be resumed.
# (max_steps is one: it sets the length of the cosine schedule.) Paths, threads, the stopping rule and
# evaluation batch sizes may change between a run and its resumption.
TRAJECTORY_KEYS = ("batch_size", "lr", "lr_schedule", "warmup_steps", "max_steps", "eval_every_steps",
                   "weight_decay", "label_smoothing", "accelerator", "devices", "strategy", "num_nodes", "precision")


# ---------------------------------------------------------------------------------------------
# The LightningModule: loss, validation metric, optimizer
# ---------------------------------------------------------------------------------------------

class SeqRecModule(L.LightningModule):
    """The transformer's training: loss, validation metric and optimizer around a `SeqRecModel`."""

    def __init__(self, model: SeqRecModel, k: int, lr: float, lr_schedule: str, warmup_steps: int, total_steps: int,
                 weight_decay: float, label_smoothing: float, min_improvement_se: float, seed: int, compile: bool):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])  # the architecture travels in the weights, not here
        self.model = model
        # A compiled forward kept out of the module tree, so checkpoints hold one copy of the weights.
        self._compiled = torch.compile(self.model.forward, dynamic=True) if compile else None
        self._cases: list[tuple[np.ndarray, dict]] = []  # a validation's (users, per-case measures) per batch
        self._loss_sum, self._loss_count = torch.zeros(()), 0
        # The best validation so far, per user of this process's shard, and how many improvements led to it.
        self.best_gains: np.ndarray | None = None
        self.improvements, self.best_ndcg = 0, float("nan")

    def on_train_epoch_start(self) -> None:
        # Dropout masks from (seed, round, rank) alone: a resumed round replays exactly.
        torch.manual_seed(self.hparams.seed * 1_000_003 + self.current_epoch * 1009 + self.global_rank)
        self._loss_sum, self._loss_count = torch.zeros((), dtype=torch.float64, device=self.device), 0

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        items, baskets, context = batch  # (B, L) each
        states = (self._compiled or self.model)(items, baskets)  # (B, L, D) each position's basket state
        target = context >= 0  # (B, L) the events of every basket after the window's first
        rows = torch.arange(len(items), device=items.device)[:, None].expand_as(context)  # (B, L)
        hidden = states[rows[target], context[target]]  # (N, D) the state of the basket before each target
        logits = self.model.item_logits(hidden)  # (N, I)
        loss = F.cross_entropy(logits.float(), items[target] - 1, label_smoothing=self.hparams.label_smoothing)
        self._loss_sum += loss.detach() * len(logits)  # a tensor: no host sync per step on a GPU
        self._loss_count += len(logits)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        seq, baskets, seen, target_indptr, targets, users = batch  # (B, L) x2, (B, I + 1), (B + 1,), (T,), (B,)
        scores = self.model.score_next(seq, baskets).masked_fill(seen, float("-inf"))  # (B, I + 1)
        indptr = target_indptr.cpu().numpy()
        rows = np.repeat(np.arange(len(seq)), np.diff(indptr))
        ranks = target_ranks(scores.cpu().numpy(), rows, targets.cpu().numpy())
        self._cases.append((users.cpu().numpy(), basket_accuracy(ranks, indptr, self.hparams.k)))

    def on_validation_epoch_end(self) -> None:
        users = np.concatenate([u for u, _ in self._cases])
        per_case = {name: np.concatenate([m[name] for _, m in self._cases]) for name in ("ndcg", "hr", "rr")}
        self._cases.clear()
        k = self.hparams.k
        shard, compact = np.unique(users, return_inverse=True)  # this process's users, in a fixed order
        means = {name: per_user(values, compact.ravel(), len(shard)) for name, values in per_case.items()}
        gains, n = means["ndcg"], len(shard)  # (n,) each user's NDCG@k
        gain = gains - (self.best_gains if self.best_gains is not None else 0.0)  # (n,) paired with the best
        # Sums, not means, are added across processes: their user shards differ in size.
        local = torch.tensor([means["ndcg"].sum(), means["hr"].sum(), means["rr"].sum(), n, float(self._loss_sum),
                              self._loss_count, gain.sum(), (gain ** 2).sum()], dtype=torch.float64, device=self.device)
        total = self.trainer.strategy.reduce(local, reduce_op="sum").tolist()
        metrics = {f"valid/ndcg@{k}": total[0] / total[3], f"valid/hr@{k}": total[1] / total[3],
                   "valid/mrr": total[2] / total[3], "train/loss": total[4] / max(total[5], 1.0)}
        if not self.trainer.sanity_checking and self._improves(total[6], total[7], total[3]):
            self.best_gains, self.best_ndcg = gains, metrics[monitor(k)]
            self.improvements += 1
        metrics[SELECTED] = float(self.improvements)
        self.log_dict(metrics, sync_dist=False)

    def _improves(self, gain_sum: float, gain_squares: float, n: float) -> bool:
        """The first validation, or a mean paired gain over the best above min_improvement_se standard
        errors of that mean (the same decision on every process: it reads reduced sums only)."""
        if self.best_gains is None:
            return True
        mean = gain_sum / n
        variance = max(gain_squares / n - mean ** 2, 0.0) * n / max(n - 1.0, 1.0)
        return mean > 0 and mean > self.hparams.min_improvement_se * math.sqrt(variance / n)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        best = self.best_gains if self.best_gains is not None else np.zeros(0)
        checkpoint["selection"] = {"best_gains": torch.from_numpy(np.asarray(best, dtype=np.float64)),
                                   "has_best": self.best_gains is not None, "improvements": self.improvements,
                                   "best_ndcg": self.best_ndcg}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["selection"]
        self.best_gains = state["best_gains"].numpy() if state["has_best"] else None
        self.improvements, self.best_ndcg = int(state["improvements"]), float(state["best_ndcg"])

    def configure_optimizers(self) -> dict:
        # Decay matrices only; biases and LayerNorm gains are not what overfits (as in nanoGPT).
        matrices = [p for p in self.parameters() if p.dim() >= 2]
        vectors = [p for p in self.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": self.hparams.weight_decay},
                                       {"params": vectors, "weight_decay": 0.0}], lr=self.hparams.lr)
        warmup, total, cosine = self.hparams.warmup_steps, self.hparams.total_steps, self.hparams.lr_schedule == "cosine"

        def factor(step: int) -> float:
            # Linear warm-up (Goyal et al. 2017): Adam's first steps, with poor second-moment estimates,
            # are what make a large learning rate diverge. Then constant, or cosine decay from the end
            # of the warm-up to 0 at the budget (Loshchilov & Hutter 2017, without restarts).
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(step - warmup, total - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * progress)) if cosine else 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ValidationLog(Callback):
    """One CSV row per validation (for `dvc plots`) and a printed line; its rows travel in the checkpoint.

    Keeping the rows in the checkpoint (not appending to the file) makes a resumed run rewrite the
    exact log of an uninterrupted one, even when it was killed after a row but before a checkpoint.
    """

    def __init__(self, path: str | Path, run: str, k: int):
        self.path, self.run, self.k, self.rows = Path(path), run, k, []
        self.columns = ("step", "train_loss", f"valid_ndcg@{k}", f"valid_hr@{k}", "valid_mrr", "improvements")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = [trainer.global_step, m["train/loss"], m[monitor(self.k)], m[f"valid/hr@{self.k}"], m["valid/mrr"],
               int(m[SELECTED])]
        improved = not self.rows or row[-1] > self.rows[-1][-1]
        self.rows = [r for r in self.rows if r[0] < row[0]] + [row]
        if trainer.is_global_zero:
            self._write()
            print(f"step {row[0]:5d}  train loss {row[1]:.4f}  valid ndcg@{self.k} {row[2]:.4f}  "
                  f"hr@{self.k} {row[3]:.4f}  mrr {row[4]:.4f}{'  improved' if improved else ''}", flush=True)

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([r[0], *(f"{v:.6f}" for v in r[1:-1]), r[-1]] for r in self.rows)
        atomic_write(self.path, lambda tmp: tmp.write_text(buffer.getvalue()))

    def state_dict(self) -> dict:
        return {"run": self.run, "rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [list(r) for r in state["rows"]]


# ---------------------------------------------------------------------------------------------
# fit()
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FitResult:
    model: SeqRecModel  # the weights of the last significant improvement on valid, on CPU, eval mode
    best_valid_ndcg: float  # valid NDCG@k of those weights
    steps: int  # optimizer steps run, a resumed run's earlier ones included
    best_step: int  # the step of those weights
    seconds: float  # wall time of this process's trainer.fit


def resolve_precision(precision: str, accelerator: str) -> str:
    """"auto": bf16 mixed precision on a CUDA GPU that supports it, full fp32 otherwise (CPU bf16 is slow)."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def run_fingerprint(model: ModelParams, train: TrainParams, seed: int, data_hash: str) -> str:
    """Identity of a training trajectory; --resume refuses a checkpoint with another one."""
    trajectory = {"model": model.model_dump(), "train": train.model_dump(include=set(TRAJECTORY_KEYS)),
                  "seed": seed, "data": data_hash}
    return hashlib.sha256(json.dumps(trajectory, sort_keys=True).encode()).hexdigest()[:16]


def fit(features: Features, model: ModelParams, train: TrainParams, k: int, seed: int, run: str, resume: bool = False,
        callbacks: tuple[Callback, ...] = (), text_vectors: np.ndarray | None = None) -> FitResult | None:
    """Train from scratch, validating on valid NDCG@k, (checkpoints cleared) or from `last.ckpt`; None in DDP processes other than rank 0.
    `callbacks` join Lightning's (the tuning stage's pruning); `text_vectors` (I + 1, T), the
    item_text stage's, are needed by model.item_text init and fuse."""
    if model.item_text != "none" and text_vectors is None:
        raise InputError(f"model.item_text {model.item_text!r} needs the item_text stage's vectors (run `recmoo item_text`)")
    text_dim = text_vectors.shape[1] if model.item_text == "fuse" else 0
    ckpt_dir = Path(train.checkpoint_dir)
    last = ckpt_dir / f"{LAST}.ckpt"
    if resume and last.is_file():
        _check_resumable(last, run)
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")  # expected
    elif rank_zero_only.rank == 0:  # DDP workers re-run this function: only the launcher clears
        if resume:
            print(f"train: no checkpoint at {last}, starting from scratch", flush=True)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if train.threads:
        torch.set_num_threads(train.threads)
    if torch.cuda.is_available():  # deterministic cuBLAS needs a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    # Lightning 2.6 calls a torch 2.13-deprecated pytree API itself: nothing to act on here.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    L.seed_everything(seed, workers=True, verbose=False)
    rounds = -(-train.max_steps // train.eval_every_steps)  # the budget, in whole rounds between validations
    net = SeqRecModel(features.n_items, model.d_model, model.n_heads, model.n_layers, model.dropout, model.max_len,
                      model.item_text, text_dim, model.id_dropout)
    module = SeqRecModule(net, k, train.lr, train.lr_schedule, train.warmup_steps, rounds * train.eval_every_steps,
                          train.weight_decay, train.label_smoothing, train.min_improvement_se, seed, train.compile)
    with torch.no_grad():
        if model.item_text == "init":
            net.item_embedding.weight.copy_(pca_initialization(text_vectors, model.d_model))
        elif model.item_text == "fuse":
            net.text_vectors.copy_(torch.from_numpy(np.asarray(text_vectors, dtype=np.float32)))
            net.trained.copy_(torch.from_numpy((features.train_counts > 0).astype(np.float32)))
    eval_users = sample_users(features.history_before("valid").lengths, train.eval_users, seed)
    data = SequenceData(features, model.max_len, train.batch_size, train.eval_every_steps, train.eval_batch_size, seed,
                        eval_users)
    log = ValidationLog(train.steps_log, run, k)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename=BEST, monitor=SELECTED, mode="max", save_top_k=1,
                           save_last=True, enable_version_counter=False)
    stop = EarlyStopping(monitor=SELECTED, mode="max", patience=train.patience, min_delta=0.5)
    trainer = L.Trainer(
        accelerator=train.accelerator, devices=train.devices, strategy=train.strategy, num_nodes=train.num_nodes,
        precision=resolve_precision(train.precision, train.accelerator), max_epochs=rounds,
        max_time=timedelta(seconds=train.max_seconds) if train.max_seconds else None,
        callbacks=[log, stop, best, *callbacks], deterministic=True, logger=False, default_root_dir=ckpt_dir,
        num_sanity_val_steps=0, enable_progress_bar=sys.stdout.isatty(), enable_model_summary=False,
        use_distributed_sampler=False,  # the samplers above shard by rank themselves
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=last if resume and last.is_file() else None, weights_only=True)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None
    checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    net.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
    return FitResult(net.cpu().eval(), checkpoint["selection"]["best_ndcg"], trainer.global_step,
                     int(checkpoint["global_step"]), seconds)


def _check_resumable(path: Path, run: str) -> None:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    written = checkpoint.get("callbacks", {}).get(ValidationLog.__qualname__, {}).get("run")
    if written != run:
        raise InputError(f"{path} was written by another training run (params or data changed: "
                         f"{written} != {run}); run `recmoo train` without --resume to start over")
