"""The transformer's training data: next-item windows of every train sequence, and the seeded stream
of length-bucketed batches Lightning draws them from (a round of a fixed number of steps depends on
(seed, round) alone, which is what makes a resumed run replay an uninterrupted one).
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from recmoo_dag.evaluate import left_padded, seen_mask
from recmoo_dag.features import PADDING_ITEM, Features

BUCKET_BATCHES = 32  # length-sorting span: ML-100K's ~18 batches of 64 pad to 1.06x its real tokens


def training_windows(indptr: np.ndarray, items: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Causal-LM examples of every sequence: inputs s_0..s_{n-2} predict targets s_1..s_{n-1}.

    Sequences longer than max_len + 1 are cut into windows from the end, so every event is a target
    exactly once and the most recent window has the longest context. Left-padded with 0.
    -> inputs (W, max_len) int64, targets (W, max_len) int64 (0 where there is nothing to predict).
    """
    n_targets = np.diff(indptr) - 1  # (U,) events after each user's first
    n_windows = -(-np.maximum(n_targets, 0) // max_len)  # (U,) ceil; users with a single event give none
    user = np.repeat(np.arange(len(n_targets)), n_windows)  # (W,)
    back = np.arange(len(user)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # (W,) 0 = most recent
    end = indptr[user + 1] - back * max_len  # (W,) one past the last target of each window
    positions = end[:, None] - max_len + np.arange(max_len)  # (W, L) absolute positions of the targets
    real = positions >= (indptr[user] + 1)[:, None]  # (W, L) a user's first event is never a target
    targets = np.where(real, items[np.maximum(positions, 0)], PADDING_ITEM)
    inputs = np.where(real, items[np.maximum(positions - 1, 0)], PADDING_ITEM)
    return inputs.astype(np.int64), targets.astype(np.int64)


class Round:
    """The round counter Lightning advances: it calls set_epoch on a batch sampler's `sampler`
    attribute (never on the batch sampler itself), so StepStream keeps its round here."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class StepStream(Sampler[list[int]]):
    """Batches of windows for `steps` optimizer steps per round, cut from an endless stream of passes.

    Pass p over the windows is shuffled from (seed, p) alone: the shuffled order is sorted by length
    inside chunks of `bucket` batches (a batch then pads to its longest row, not max_len), cut into
    batches, and the batches are shuffled again. Round r (Lightning's epoch r, set through
    `sampler.set_epoch`) is the stream's batches [r * steps, (r + 1) * steps) per process: with
    several processes the stream holds full batches only and each takes every world_size-th one. A
    round is thus a fixed number of steps whatever the data's size, and it depends on (seed, r) alone.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, bucket: int, steps: int, seed: int, rank: int,
                 world_size: int):
        self.lengths, self.batch_size, self.bucket, self.steps = lengths, batch_size, bucket, steps
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.sampler = Round()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def batches_of_pass(self, p: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, p])
        order = rng.permutation(len(self.lengths))  # (n,)
        chunk = self.batch_size * self.bucket
        order = np.concatenate([part[np.argsort(-self.lengths[part], kind="stable")]
                                for part in np.split(order, np.arange(chunk, len(order), chunk))])
        batches = np.split(order, np.arange(self.batch_size, len(order), self.batch_size))
        if self.world_size > 1:  # equal, full batches on every process, or DDP hangs
            batches = [b for b in batches if len(b) == self.batch_size]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        per_pass = len(self.batches_of_pass(0))
        first = self.sampler.epoch * self.steps * self.world_size + self.rank  # this process's first stream index
        indices = range(first, first + self.steps * self.world_size, self.world_size)
        passes = {p: self.batches_of_pass(p) for p in {i // per_pass for i in indices}}
        return iter([passes[i // per_pass][i % per_pass].tolist() for i in indices])

    def __len__(self) -> int:
        return self.steps


class SequenceData(L.LightningDataModule):
    """Train windows from the train split, `round_steps` batches per round; validation = each
    user's train history -> valid item."""

    def __init__(self, features: Features, max_len: int, batch_size: int, round_steps: int, eval_batch_size: int,
                 seed: int, eval_users: np.ndarray):
        super().__init__()
        self.features, self.max_len, self.seed, self.round_steps = features, max_len, seed, round_steps
        self.eval_users = eval_users  # the validation users early stopping reads (all, or a sample)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.history = features.history_before("valid")  # (indptr, items) of the train split
        self.inputs, self.targets = training_windows(*self.history, max_len)  # (W, L) each
        self.lengths = (self.inputs != PADDING_ITEM).sum(axis=1)  # (W,)

    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        stream = StepStream(self.lengths, self.batch_size, BUCKET_BATCHES, self.round_steps, self.seed, rank,
                            world_size)
        if self.trainer:
            # Lightning builds a resumed run's first iterator before it calls set_epoch: start from the
            # restored round counter (the one set_epoch passes), or round 0's batches would be replayed.
            stream.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        # Own generator: creating an iterator would otherwise draw from the global RNG that dropout uses,
        # and a resumed run creates its first iterator at another moment than an uninterrupted one.
        return DataLoader(range(len(self.inputs)), batch_sampler=stream, collate_fn=self._train_batch,
                          generator=torch.Generator())

    def _train_batch(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows)
        width = self.lengths[rows].max()  # trim the padding no row of this batch needs
        return (torch.from_numpy(self.inputs[rows, -width:]),  # (B, width)
                torch.from_numpy(self.targets[rows, -width:]))  # (B, width)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        users = self.eval_users[rank::world_size]  # each process scores its share of users
        # Longest histories first: each batch then trims to its own longest row (metrics are order-free).
        users = users[np.argsort(-np.diff(self.history[0])[users], kind="stable")]
        return DataLoader(users, batch_size=self.eval_batch_size, collate_fn=self._valid_batch,
                          generator=torch.Generator())

    def _valid_batch(self, users: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users = np.asarray(users)
        indptr, items = self.history
        seq = left_padded(indptr, items, users, self.max_len)  # (B, L)
        seq = seq[:, -max(1, (seq != PADDING_ITEM).sum(axis=1).max()):]  # (B, width)
        return (torch.from_numpy(seq), torch.from_numpy(self.features.valid_targets[users].astype(np.int64)),
                torch.from_numpy(seen_mask(indptr, items, users, self.features.n_items)))  # (B, I + 1)
