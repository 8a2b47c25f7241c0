"""Dynamic micro-batching of the requests that need a forward pass.

As Triton's dynamic batcher and Ray Serve's `@serve.batch`: a request waits in a bounded queue; one
task takes the oldest with up to `max_batch` - 1 more, and runs the whole batch in one call
(`Recommender.answer`: one forward pass, one re-ranking per pool size), off the event loop unless
it is a lone request.

Where a batch runs. With `serve.forward_process`, in the version's forward process
(recmoo_dag/forward_process.py) while the worker's event loop has other work: when it answered a
request without a forward pass (a known user, the popularity fallback, POST /events) since the
batcher last ran a batch. Such a loop holds the GIL for long stretches, and a batch on a thread
waits for it (the mixed loads' p99: 29-34 ms on the thread, 20-24 ms this way). A loop with nothing
else to do does not, and there the process is the longer way, by two wake-ups across processes (a
lone session's p99: 2.4-2.8 ms on the thread, 3.1-5.5 ms in the process). Such a batch runs on the
batcher's single executor thread, where torch, NumPy's large kernels and the compiled re-ranker
release the GIL, so the loop takes in the next batch meanwhile; or, when it is a lone request and
none waits behind it, as the batch before was, on the loop itself: nothing could arrive to batch
with it that the loop would not read ~1 ms later, and it spares two thread switches, which showed in
a lone session's slowest requests (twelve runs each: median p99 2.6 -> 2.1 ms, p50 1.79 -> 1.69 ms).
Two lone batches running, not one, because a busy loop may still leave one batch without other work
before it (3 of ~240 batches at 16 clients), and a batch on the loop holds up everything else.
All three ways give the same lists.

How long to wait for more. Clients that each wait for their answer before asking again come back
together, a little after their batch is answered; a batcher that starts at once takes the first of
them alone, and the rest wait a whole batch (measured with 16 clients on 2 workers: batches of 2.6
to 5 on average, many of 1). So the batcher waits, at most `wait_ms`, until as many requests are queued
as its last batch held (Triton's delay with a preferred batch size, the size learned from the
traffic): a lone client (batches of one) never waits, and concurrent ones are answered together.

A full queue refuses at once (`Overloaded`: the service answers 503 with Retry-After): a request
then waits at most `queue_size / max_batch` batches ahead of it, never an unbounded time.
Requests of different versions (a swap mid-queue) are answered by their own version, in separate
calls; a client that went away is skipped before its batch runs.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from recmoo_dag.batch_scores import Pending
from recmoo_dag.recommender import Recommended, Recommender


class Overloaded(Exception):
    """The batch queue is full: answer 503 with Retry-After."""


class MicroBatcher:
    def __init__(self, max_batch: int, wait_ms: float, queue_size: int):
        self.max_batch, self.wait_s, self.queue_size = max_batch, wait_ms / 1000.0, queue_size
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="recmoo-batch")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.expected = 1  # the last batch's size: how many requests to wait for
        # Requests the worker answered without a forward pass (the app counts them), and how many of
        # them it had answered when the last batch ran: a difference means the loop has other work.
        self.answered_inline = self.inline_at_last_batch = 0
        self.last_lone = False  # the last batch was a lone request on a quiet loop

    def _start(self) -> None:
        # Bound to the running loop at the first request (a test client may bring a new loop).
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[Recommender, Pending, asyncio.Future]] = asyncio.Queue(self.queue_size)
        self.gathered = asyncio.Event()  # set when `expected` requests are queued: stop waiting
        self.worker = self.loop.create_task(self._run())

    async def submit(self, recommender: Recommender, pending: Pending) -> Recommended:
        """`pending`'s answer from `recommender`, computed in a batch; Overloaded when the queue is full."""
        if self.loop is not asyncio.get_running_loop():
            self._start()
        answer = self.loop.create_future()
        try:
            self.queue.put_nowait((recommender, pending, answer))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.queue_size} requests already wait for a forward pass") from None
        if self.queue.qsize() >= self.expected - 1:  # with the one the worker holds
            self.gathered.set()
        return await answer

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.wait_s > 0 and self.queue.qsize() < self.expected - 1:
                self.gathered.clear()
                try:
                    async with asyncio.timeout(self.wait_s):
                        await self.gathered.wait()
                except TimeoutError:
                    pass
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.expected = len(batch)
            await self._answer([entry for entry in batch if not entry[2].done()])  # done: the client left

    async def _answer(self, batch: list[tuple[Recommender, Pending, asyncio.Future]]) -> None:
        # Where it runs: see the docstring.
        busy = self.answered_inline != self.inline_at_last_batch
        self.inline_at_last_batch = self.answered_inline
        was_lone = self.last_lone
        self.last_lone = not busy and len(batch) == 1 and self.queue.empty()
        where = "process" if busy else "loop" if was_lone and self.last_lone else "thread"
        for recommender in dict.fromkeys(entry[0] for entry in batch):  # versions in order of arrival
            group = [entry for entry in batch if entry[0] is recommender]
            try:
                answers = await recommender.answer_async([pending for _, pending, _ in group], self.executor, where)
            except Exception as err:  # noqa: BLE001  each waiting request gets the error (a 500), the batcher lives on
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, _, future), answer in zip(group, answers):
                if not future.done():
                    future.set_result(answer)
