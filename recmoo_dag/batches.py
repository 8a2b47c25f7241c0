"""The transformer's training data: windows of whole baskets cut from every train sequence, and
the seeded stream of length-bucketed batches Lightning draws them from (a round of a fixed number of
steps depends on (seed, round) alone, which is what makes a resumed run replay an uninterrupted one).
Validation is on held-out valid baskets (the cases of windows.py), each from its own history.
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from numba import njit
from torch.utils.data import DataLoader, Sampler

from recmoo_dag.evaluate import left_padded, seen_mask
from recmoo_dag.features import Features
from recmoo_dag.windows import Histories

BUCKET_BATCHES = 32  # length-sorting span: ML-100K's ~18 batches of 64 pad to 1.06x its real tokens


def training_windows(history: Histories, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next-basket examples of every train sequence, in windows of at most max_len events.

    A window is a run of whole baskets; every basket in it but the first is a target, predicted
    from the state of the basket before it, and the next window back ends with that first basket,
    so every basket of a user but the first is a target exactly once and the most recent window has
    the longest context. A basket of more than max_len // 2 events enters a window with its first
    max_len // 2 only; as a target, its other events come in windows of their own after the same
    context. Left-padded with 0.
    -> items (W, L) int64, baskets (W, L) int64 (-1 at padding), context (W, L) int64: the position
    (in the window) of the last event of the basket that predicts this one, -1 where nothing is
    predicted.
    """
    rows, positions, baskets, context = _windows(history.starts, history.ends, history.basket_starts,
                                                 history.basket_ends, max_len)
    n = int(rows.max()) + 1 if len(rows) else 0
    lengths = np.bincount(rows, minlength=n)  # (W,)
    column = max_len - np.repeat(lengths, lengths) + (np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths,
                                                                                      lengths))  # left padding
    out_items = np.zeros((n, max_len), dtype=np.int64)
    out_baskets = np.full((n, max_len), -1, dtype=np.int64)
    out_context = np.full((n, max_len), -1, dtype=np.int64)
    out_items[rows, column] = history.items[positions]
    out_baskets[rows, column] = baskets
    shift = max_len - np.repeat(lengths, lengths)  # context positions are counted from the window's start
    out_context[rows, column] = np.where(context >= 0, context + shift, -1)
    return out_items, out_baskets, out_context


@njit(cache=True)
def _windows(starts, ends, basket_starts, basket_ends, max_len):  # pragma: no cover - compiled
    """The windows of `training_windows` as flat rows: (window, event position, basket in window,
    context position in window or -1) per event of every window. An event is in at most two main
    windows and each chunk window holds at most max_len events for cap of them: 5 slots per event
    bound the output."""
    cap = max(1, max_len // 2)
    n_events = 0
    for u in range(len(starts)):
        n_events += ends[u] - starts[u]
    size = 5 * n_events + max_len
    out_rows = np.empty(size, np.int64)
    out_positions = np.empty(size, np.int64)
    out_baskets = np.empty(size, np.int64)
    out_context = np.empty(size, np.int64)
    firsts = np.empty(max(1, n_events), np.int64)
    used = 0
    window = 0
    for u in range(len(starts)):
        n = 0  # the user's baskets, oldest first, by their first event
        e = starts[u]
        while e < ends[u]:
            firsts[n] = e
            n += 1
            e = basket_ends[e]
        last = n - 1
        while last >= 1:
            first = last  # walk back over whole (capped) baskets while they fit
            total = min(basket_ends[firsts[last]] - firsts[last], cap)
            while first >= 1 and total + min(basket_ends[firsts[first - 1]] - firsts[first - 1], cap) <= max_len:
                first -= 1
                total += min(basket_ends[firsts[first]] - firsts[first], cap)
            column = 0
            previous_last = -1
            for b in range(first, last + 1):
                size_b = min(basket_ends[firsts[b]] - firsts[b], cap)
                for j in range(size_b):
                    out_rows[used] = window
                    out_positions[used] = firsts[b] + j
                    out_baskets[used] = b - first
                    out_context[used] = previous_last if b > first else -1
                    used += 1
                column += size_b
                previous_last = column - 1
            window += 1
            # the rest of an oversized target basket, chunk by chunk, after the same context
            for b in range(first + 1, last + 1):
                full = basket_ends[firsts[b]] - firsts[b]
                done = cap
                while done < full:
                    chunk = min(cap, full - done)
                    context_first = b - 1  # whole (capped) baskets before b that fit beside the chunk
                    room = min(basket_ends[firsts[b - 1]] - firsts[b - 1], cap)
                    while context_first >= 1 and room + min(basket_ends[firsts[context_first - 1]]
                                                            - firsts[context_first - 1], cap) + chunk <= max_len:
                        context_first -= 1
                        room += min(basket_ends[firsts[context_first]] - firsts[context_first], cap)
                    column = 0
                    for c in range(context_first, b):
                        size_c = min(basket_ends[firsts[c]] - firsts[c], cap)
                        for j in range(size_c):
                            out_rows[used] = window
                            out_positions[used] = firsts[c] + j
                            out_baskets[used] = c - context_first
                            out_context[used] = -1
                            used += 1
                        column += size_c
                    for j in range(chunk):
                        out_rows[used] = window
                        out_positions[used] = firsts[b] + done + j
                        out_baskets[used] = b - context_first
                        out_context[used] = column - 1
                        used += 1
                    window += 1
                    done += chunk
            last = first
    return out_rows[:used], out_positions[:used], out_baskets[:used], out_context[:used]


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
    """Train windows of the train events, `round_steps` batches per round; validation = the valid
    cases of `eval_users` (each basket from its history: the train events and earlier valid baskets)."""

    def __init__(self, features: Features, max_len: int, batch_size: int, round_steps: int, eval_batch_size: int,
                 seed: int, eval_users: np.ndarray):
        super().__init__()
        self.features, self.max_len, self.seed, self.round_steps = features, max_len, seed, round_steps
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.items, self.baskets, self.context = training_windows(features.history_before("valid"), max_len)  # (W, L)
        self.lengths = (self.baskets >= 0).sum(axis=1)  # (W,)
        cases = features.cases("valid")
        self.cases = cases.subset(np.flatnonzero(np.isin(cases.users, eval_users)))  # what early stopping reads

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
        return DataLoader(range(len(self.items)), batch_sampler=stream, collate_fn=self._train_batch,
                          generator=torch.Generator())

    def _train_batch(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows)
        width = self.lengths[rows].max()  # trim the padding no row of this batch needs
        context = self.context[rows, -width:]  # (B, width) positions counted in the full window
        return (torch.from_numpy(self.items[rows, -width:]),  # (B, width)
                torch.from_numpy(self.baskets[rows, -width:]),  # (B, width)
                torch.from_numpy(np.where(context >= 0, context - (self.max_len - width), -1)))  # (B, width)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        users = np.unique(self.cases.users)[rank::world_size]  # each process scores its share of users
        rows = np.flatnonzero(np.isin(self.cases.users, users))
        # Longest histories first: each batch then trims to its own longest row (metrics are order-free).
        rows = rows[np.argsort(-self.cases.history.lengths[rows], kind="stable")]
        return DataLoader(rows, batch_size=self.eval_batch_size, collate_fn=self._valid_batch,
                          generator=torch.Generator())

    def _valid_batch(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        rows = np.asarray(rows)
        seq, baskets = left_padded(self.cases.history, rows, self.max_len)  # (B, L) each
        width = max(1, (baskets >= 0).sum(axis=1).max())
        sub = self.cases.subset(rows)
        return (torch.from_numpy(seq[:, -width:]), torch.from_numpy(baskets[:, -width:]),
                torch.from_numpy(seen_mask(self.cases.history, rows, self.features.n_items)),  # (B, I + 1)
                torch.from_numpy(sub.target_indptr), torch.from_numpy(sub.targets.astype(np.int64)),
                torch.from_numpy(self.cases.users[rows]))
