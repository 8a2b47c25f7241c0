"""The micro-batcher's timing rule (recmoo_dag/batcher.py): it waits, at most `wait_ms`, until as many
requests are queued as its last batch held; a lone client, whose batches hold one, never waits."""
from __future__ import annotations

import asyncio

from recmoo_dag.batcher import MicroBatcher


class Answering:
    """Answers each request with itself and records the size of every batch it is given."""

    def __init__(self):
        self.sizes: list[int] = []

    async def answer_async(self, batch, executor, where):
        self.sizes.append(len(batch))
        return list(batch)


def test_a_lone_request_never_waits_and_concurrent_ones_are_answered_together():
    recommender = Answering()
    batcher = MicroBatcher(max_batch=8, wait_ms=60_000.0, queue_size=16)

    async def scenario():
        # A wait of a minute would fail every wait_for below if the batcher waited for nobody.
        assert await asyncio.wait_for(batcher.submit(recommender, "alone"), 5) == "alone"
        assert await asyncio.wait_for(batcher.submit(recommender, "alone again"), 5) == "alone again"
        together = await asyncio.wait_for(asyncio.gather(*(batcher.submit(recommender, i) for i in range(3))), 5)
        assert together == [0, 1, 2]
        # The last batch held 3: one request now waits for two more, which come 50 ms later.
        first = asyncio.create_task(batcher.submit(recommender, "first"))
        await asyncio.sleep(0.05)
        assert not first.done()
        rest = [batcher.submit(recommender, name) for name in ("second", "third")]
        return await asyncio.wait_for(asyncio.gather(first, *rest), 5)

    assert asyncio.run(scenario()) == ["first", "second", "third"]
    assert recommender.sizes == [1, 1, 3, 3]


def test_the_wait_for_more_requests_ends_after_wait_ms():
    recommender = Answering()
    batcher = MicroBatcher(max_batch=8, wait_ms=100.0, queue_size=16)

    async def scenario():
        await asyncio.gather(*(batcher.submit(recommender, i) for i in range(4)))  # the last batch held 4
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = await asyncio.wait_for(batcher.submit(recommender, "nobody follows"), 5)
        return answer, loop.time() - start

    answer, waited = asyncio.run(scenario())
    assert answer == "nobody follows"
    assert recommender.sizes == [4, 1]
    assert waited >= 0.09  # it waited for the three it expected, as long as wait_ms allows, then went alone
