"""Forward passes in a process of their own (recmoo_dag/forward_process.py): the same lists as in the
worker; a child that dies is replaced, costing only the batch that found it dead; a child ends with
its version; a version the child cannot load is refused like any broken version."""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import time

import pytest

from recmoo_dag import store
from recmoo_dag.forward_process import ForwardProcess, ForwardProcessError
from recmoo_dag.recommender import Recommender
from tests.test_serve_batching import deployed, fixed_requests, same_answers


@pytest.fixture
def served(tmp_path, tmp_path_factory, monkeypatch):
    return deployed("blend", tmp_path, tmp_path_factory, monkeypatch)


def load(params, forward_threads: int) -> Recommender:
    return Recommender.load(store.version_dir(params.deploy.store), params.serve.session_window, 1 << 24,
                            forward_threads)


def answered(recommender: Recommender, batch: list) -> list:
    """A batch answered as the service's batcher has it answered."""
    return asyncio.run(recommender.answer_async(batch))


def gone(process, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process.is_alive()


def test_batches_answered_apart_equal_one_request_alone_in_the_worker(served):
    apart, here = load(served, 1), load(served, 0)
    assert apart.forwards is not None and here.forwards is None
    requests = fixed_requests(here)
    alone = [here.recommend(*request) for request in requests]
    pending = [apart.prepare(*request) for request in requests]
    batched = [answer for start in range(0, len(pending), 16) for answer in answered(apart, pending[start:start + 16])]
    same_answers(batched, alone)
    assert {answer.version for answer in batched} == {here.version}
    same_answers(answered(apart, pending[::-1]), alone[::-1])  # its cache of encoded histories, warm


def test_a_dead_child_costs_one_batch_and_is_replaced(served):
    recommender = load(served, 1)
    pending = [recommender.prepare(*request) for request in fixed_requests(recommender, n=8)]
    before = answered(recommender, pending)
    first = recommender.forwards.process
    os.kill(first.pid, signal.SIGKILL)
    assert gone(first)
    with pytest.raises(ForwardProcessError, match=r"ended \(exit code -9\); a new one is loading"):
        answered(recommender, pending)
    assert recommender.forwards.process.pid != first.pid
    same_answers(answered(recommender, pending), before)  # the new child's load awaited, not blocking the loop


def test_a_child_ends_with_its_version(served):
    recommender = load(served, 1)
    process = recommender.forwards.process
    del recommender
    gc.collect()
    assert gone(process)
    assert process.exitcode == 0  # it saw its pipe close and returned, nobody killed it


def test_a_child_started_with_sigterm_ignored_still_ends_when_terminated(served):
    """SIG_IGN survives exec: a worker that inherited an ignored SIGTERM must not hand it to its child,
    or the worker's exit (multiprocessing terminates daemonic children, then joins them) never ends."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        forwards = ForwardProcess(store.version_dir(served.deploy.store), served.serve.session_window, 0, 1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    forwards.wait_ready()
    forwards.process.terminate()
    assert gone(forwards.process)
    assert forwards.process.exitcode == -signal.SIGTERM


def test_a_version_the_child_cannot_load_is_refused(served, tmp_path):
    forwards = ForwardProcess(tmp_path / "no-such-version", served.serve.session_window, 0, 1)
    with pytest.raises(ForwardProcessError, match="cannot load"):
        forwards.wait_ready()
    assert gone(forwards.process)


def test_a_reply_nobody_waits_for_is_not_taken_for_the_next_batch(served):
    """A batch whose wait was cancelled (its event loop ended mid-batch) leaves its reply in the pipe;
    the next batch gets its own answers, not that reply."""
    recommender = load(served, 1)
    requests = fixed_requests(recommender, n=8)
    first, second = ([recommender.prepare(*request) for request in half] for half in (requests[:4], requests[4:]))

    async def abandoned():
        waiting = asyncio.ensure_future(recommender.answer_async(first))
        await asyncio.sleep(0)  # sent; now awaiting the reply
        waiting.cancel()

    asyncio.run(abandoned())
    same_answers(answered(recommender, second), [recommender.recommend(*request) for request in requests[4:]])
