"""A version's forward passes in a process of their own, beside the service worker that serves it.

Why a process. A batch run on the micro-batcher's thread (recmoo_dag/batcher.py) shares the worker's
GIL with its event loop: each torch and NumPy call hands it over, and a loop kept busy by known
users' requests holds it for long stretches. In the 80/15/5 mixed load on the 2-core machine, a batch
of ~9 sessions took ~5 ms of CPU and 12-17 ms of wall time there, and sessions had a p99 of 34-43 ms.
In a process of its own the batch runs beside the loop (README "Forward passes at production rates").
The batcher sends a batch here only while the loop has other work (recmoo_dag/batcher.py); without
it, a batch is answered sooner in the worker, on the batcher's thread or, a lone request, on the loop.

What crosses. The batcher sends the batch's `Pending` requests (a few small arrays each) down a pipe
and awaits, on the event loop, the pipe becoming readable; then it reads the answers (`Recommended`:
k ids, titles and scores each). No thread sits between the two: a hand-off to one cost a lone
session ~0.3 ms more (median, measured). The child loads the same version folder into a
`Recommender` of its own and answers with its `answer`, i.e. the code and lists of the in-worker
path, its cache of encoded histories included.

Lifetime. `Recommender.load` starts the child before it reads the version itself, so the two load at
once, and waits for the child's "ready". The child ends when its pipe closes: when the parent drops
the Recommender (a hot swap, once the old version's last batch is answered: the pipe's end closes as
it is freed), exits or is killed. A child that dies is started again. The batch that found it dead
gets an error (the service answers 500), and the next batch waits for the new child to load.
Spawning re-imports the parent's main module, as multiprocessing's spawn always does: a script that
loads a version with a forward process keeps its work under `if __name__ == "__main__":`.
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import traceback
from pathlib import Path

from recmoo_dag.batch_scores import Pending


class ForwardProcessError(RuntimeError):
    """The forward process could not load its version, failed on a batch, or died."""


class ForwardProcess:
    """Answers batches of `Pending` requests for the version in `folder`, in a child process."""

    def __init__(self, folder: str | Path, session_window: int | None, cache_bytes: int, torch_threads: int):
        self.args = (str(folder), session_window, cache_bytes, torch_threads)
        self._start()

    def _start(self) -> None:
        # Spawned, never forked: the parent holds torch's and the loop's threads, which a fork does not copy.
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=serve_forwards, args=(child_end, *self.args), daemon=True,
                                       name=f"recmoo-forward-{Path(self.args[0]).name}")
        self.process.start()
        child_end.close()  # the child's copy is its only one: the child sees EOF when the parent goes
        self.ready = False
        self.sent = 0  # batches sent to this child; its replies carry the number of theirs, "ready" 0

    def wait_ready(self) -> None:
        """Block until the child has loaded the version; ForwardProcessError if it could not."""
        if not self.ready:
            self._reply()
            self.ready = True

    async def answer(self, batch: list[Pending]) -> list:
        """The child's `Recommender.answer(batch)`, awaited on the running loop. One batch at a time
        (the batcher's): the pipe carries one request and its reply."""
        if not self.ready:  # a new child, after one died: its load must not block the loop
            await self._readable()
            self.wait_ready()
        self.sent += 1
        with contextlib.suppress(OSError):  # a dead child: the reply's read says so, and starts another
            self.conn.send((self.sent, batch))
        while True:
            await self._readable()
            number, answers = self._reply()
            # An earlier number: the reply to a batch whose wait was cancelled (its event loop ended
            # mid-batch, as a test client's may). Nobody waits for it any more.
            if number == self.sent:
                return answers

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(fd)

    def _reply(self) -> tuple[int, object]:
        """The child's next reply: (the number of the batch it answers, its answers); an error raised."""
        try:
            status, number, value = self.conn.recv()
        except (EOFError, OSError) as err:
            self.process.join(timeout=1.0)  # its pipe closed: it has exited, or is about to
            code = self.process.exitcode
            self.conn.close()
            self._start()
            raise ForwardProcessError(f"the forward process of {self.args[0]} ended (exit code {code}); "
                                      "a new one is loading") from err
        if status == "error" and number == self.sent:
            raise ForwardProcessError(f"the forward process of {self.args[0]}: {value}")
        return number, value


def serve_forwards(conn, folder: str, session_window: int | None, cache_bytes: int, torch_threads: int) -> None:
    """The child: load the version, say "ready", then answer batches until the pipe closes."""
    import gc

    import torch

    from recmoo_dag.recommender import Recommender

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the service; the child goes with its pipe
    # An ignored SIGTERM survives exec, so a parent that had one ignored would pass it on (a Dagster run
    # in the parent's process leaves SIGTERM on SIGINT's handler, and a background job starts with
    # SIGINT ignored), and multiprocessing's exit, which terminates daemonic children and then joins
    # them, would wait for this one for ever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(torch_threads)
    try:
        recommender = Recommender.load(folder, session_window, cache_bytes)
    except Exception as err:  # noqa: BLE001  the parent reports it and keeps serving the version it has
        with contextlib.suppress(OSError):
            conn.send(("error", 0, f"cannot load: {err}"))
        return
    gc.freeze()  # as each service worker does (serve.app_from_env): no collection walks the loaded objects
    reply = ("ready", 0, None)
    while True:
        try:
            conn.send(reply)
            number, batch = conn.recv()
        except (EOFError, OSError):  # the parent dropped this version, exited or died
            return
        try:
            reply = ("ok", number, recommender.answer(batch))
        except Exception:  # noqa: BLE001  the batch's requests get the error; the child serves the next batch
            reply = ("error", number, traceback.format_exc(limit=-3))
