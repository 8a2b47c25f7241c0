"""Forward passes at production rates: micro-batches and reused history encodings answer exactly what
one request alone and from scratch answers; a full queue answers 503; concurrent requests share
batches through the real ASGI app."""
from __future__ import annotations

import asyncio
import random

import httpx
import numpy as np
import pytest
import torch

from recmoo_dag import store
from recmoo_dag.batch_scores import Pending
from recmoo_dag.generator import save_generator
from recmoo_dag.model import SeqRecModel
from recmoo_dag.recommender import Recommended, Recommender
from recmoo_dag.serve import create_app
from recmoo_dag.stages import deploy
from tests.deploy_support import FRONT, LOOSE, base_project, copy_project, write_front


def deployed(kind: str, tmp_path, tmp_path_factory, monkeypatch):
    """The tiny project with generator `kind`, deployed with the strongly diversified FRONT[2]."""
    monkeypatch.chdir(tmp_path)
    params = copy_project(base_project(tmp_path_factory), tmp_path, LOOSE)
    save_generator(params.train.model_dir, kind, ease_lambda=100.0, blend_weight=0.5)
    write_front(params, [FRONT[2]])
    deploy.main(params)
    return params


@pytest.fixture
def served(tmp_path, tmp_path_factory, monkeypatch):
    return deployed("model", tmp_path, tmp_path_factory, monkeypatch)


def fixed_requests(recommender: Recommender, n: int = 48, seed: int = 3) -> list[tuple]:
    """(user_id, recent_items, k, exclude): known users with short and long sessions (past the
    window), strangers, anonymous sessions, exclusions, and known users whose exclusions empty their
    candidates (scored again from the whole sequence)."""
    rng = random.Random(seed)
    b = recommender.bundle
    users, items = [str(u) for u in b.user_ids], [str(i) for i in b.item_ids[1:]]
    window = recommender.window
    out = []
    for r in range(n):
        user = [rng.choice(users), rng.choice(users), f"stranger-{r}", None][r % 4]
        recent = rng.sample(items, rng.choice([1, 2, 5, window - 1, window + 3]))
        exclude = rng.sample(items, rng.choice([0, 0, 3]))
        out.append((user, recent, rng.choice([1, 5, 10, 40]), exclude))
    full = np.flatnonzero((b.cand_items != 0).all(axis=1))  # more unseen items lie beyond these rows
    for u in full[::7]:  # every candidate excluded: the whole sequence is scored again
        out.append((users[u], [], 5, [str(i) for i in b.item_ids[b.cand_items[u]]]))
    return out


def same_answers(batched: list[Recommended], alone: list[Recommended]) -> None:
    for got, want in zip(batched, alone, strict=True):
        assert (got.source, [i["item_id"] for i in got.items]) == (want.source, [i["item_id"] for i in want.items])
        np.testing.assert_allclose([i["score"] for i in got.items], [i["score"] for i in want.items],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["model", "ease", "blend"])
def test_batched_and_cached_answers_equal_one_request_alone(kind, tmp_path, tmp_path_factory, monkeypatch):
    params = deployed(kind, tmp_path, tmp_path_factory, monkeypatch)
    recommender = Recommender.load(store.version_dir(params.deploy.store), params.serve.session_window, 1 << 24)
    requests = fixed_requests(recommender)
    alone = [recommender.recommend(*request) for request in requests]  # unbatched, nothing cached
    pending = [recommender.prepare(*request) for request in requests]
    assert all(isinstance(p, Pending) for p in pending)
    assert {p.source for p in pending} == {"session", "user"}
    cold = [answer for start in range(0, len(pending), 16) for answer in recommender.answer(pending[start:start + 16])]
    same_answers(cold, alone)
    cached = {key[0] for key in recommender.scorer.cache.entries}
    assert cached == ({"keys"} if kind == "model" else {"ease"} if kind == "ease" else {"keys", "ease"})
    # Warm: the same requests in another order and other batches, now read from the cache.
    order = np.random.default_rng(0).permutation(len(pending))
    warm = recommender.answer([pending[i] for i in order])
    same_answers(warm, [alone[i] for i in order])


def test_cached_history_keys_give_the_scores_of_the_whole_window():
    """SeqRecModel.encode after the cached keys and values of a prefix == the whole window at once."""
    torch.manual_seed(0)
    model = SeqRecModel(n_items=30, d_model=16, n_heads=2, n_layers=2, dropout=0.0, max_len=12).eval()
    seq = torch.tensor([[0, 0, 5, 6, 7, 8, 9, 3, 4]])
    baskets = torch.tensor([[-1, -1, 0, 0, 1, 2, 2, 3, 4]])  # a history of 3 baskets, then 2 recent items
    whole = model.score_next(seq, baskets)
    with torch.no_grad():
        _, presents = model.encode(seq[:, :7], baskets[:, :7])
        hidden, _ = model.encode(seq[:, 7:], baskets[:, 7:], presents, baskets[:, :7])
        torch.testing.assert_close(model.scores_of(hidden[:, -1]), whole, rtol=1e-5, atol=1e-5)


def test_a_live_profile_is_the_history_profile(served):
    """ItemTerms.profile (one sequence, in the event loop) == ItemTerms.profiles (a Histories, as the search)."""
    recommender = Recommender.load(store.version_dir(served.deploy.store))
    b = recommender.bundle
    for u in range(len(b.user_ids)):
        np.testing.assert_allclose(recommender.terms.profile(b.history[b.indptr[u]:b.indptr[u + 1]]),
                                   recommender.profiles[u], rtol=1e-6, atol=1e-7)


def session_bodies(recommender: Recommender, n: int) -> list[dict]:
    rng = random.Random(5)
    users, items = [str(u) for u in recommender.bundle.user_ids], [str(i) for i in recommender.bundle.item_ids[1:]]
    return [{"user_id": rng.choice(users), "recent_items": rng.sample(items, 1 + r % 6), "k": 10} for r in range(n)]


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


@pytest.mark.parametrize("forward_process", [True, False])
def test_concurrent_sessions_share_batches_through_the_app(served, monkeypatch, forward_process):
    settings = served.serve.model_copy(update={"max_batch": 8, "batch_wait_ms": 20.0, "queue_size": 64,
                                               "forward_process": forward_process})
    app = create_app(served.deploy.store, settings)
    sizes, ways, answer_async = [], set(), Recommender.answer_async

    def recorded(self, batch, executor, way):
        sizes.append(len(batch))
        ways.add((len(batch) > 1, way))
        return answer_async(self, batch, executor, way)

    monkeypatch.setattr(Recommender, "answer_async", recorded)
    reference = app.state.live.get()
    assert (reference.forwards is not None) == forward_process
    bodies = session_bodies(reference, 24)

    async def scenario():
        async with asgi_client(app) as client:
            return await asyncio.gather(*(client.post("/recommend", json=body) for body in bodies))

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert sum(sizes) == len(bodies) and max(sizes) > 1 and max(sizes) <= 8
    assert (True, "thread") in ways and ways <= {(True, "thread"), (False, "thread"), (False, "loop")}  # sessions only
    for body, response in zip(bodies, responses):
        want = reference.recommend(body["user_id"], body["recent_items"], body["k"])
        assert [i["item_id"] for i in response.json()["items"]] == [i["item_id"] for i in want.items]


def test_a_full_queue_answers_503_with_retry_after_and_lookups_still_answer(served, monkeypatch):
    settings = served.serve.model_copy(update={"max_batch": 1, "batch_wait_ms": 0.0, "queue_size": 1})
    app = create_app(served.deploy.store, settings)
    answer_async = Recommender.answer_async
    first, second, third = session_bodies(app.state.live.get(), 3)
    user = first["user_id"]

    async def scenario():
        started, release = asyncio.Event(), asyncio.Event()

        async def held(self, batch, *where):  # the batcher holds its first batch until released
            started.set()
            await release.wait()
            return await answer_async(self, batch, *where)

        monkeypatch.setattr(Recommender, "answer_async", held)
        async with asgi_client(app) as client:
            running = asyncio.create_task(client.post("/recommend", json=first))
            await asyncio.wait_for(started.wait(), 30)  # the first is being answered
            queued = asyncio.create_task(client.post("/recommend", json=second))
            while app.state.batcher.queue.qsize() < 1:  # the second takes the queue's one place
                await asyncio.sleep(0.001)
            refused = await client.post("/recommend", json=third)
            lookup = await client.post("/recommend", json={"user_id": user, "k": 5})  # no forward pass
            health = await client.get("/health")
            release.set()
            return refused, lookup, health, await running, await queued

    refused, lookup, health, *answered = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "wait for a forward pass" in refused.json()["detail"]
    assert lookup.status_code == 200 and lookup.json()["source"] == "user"
    assert health.status_code == 200
    assert [r.status_code for r in answered] == [200, 200]
    assert all(r.json()["source"] == "session" for r in answered)


def test_a_failed_batch_answers_500_to_each_of_its_requests_and_the_batcher_goes_on(served, monkeypatch):
    """recmoo_dag/batcher.py: an error while a batch is answered reaches every request of that batch,
    and the next batch is answered as usual."""
    settings = served.serve.model_copy(update={"max_batch": 8, "batch_wait_ms": 0.0, "forward_process": False})
    app = create_app(served.deploy.store, settings)
    answer_async, sizes = Recommender.answer_async, []
    first, second, third, fourth = session_bodies(app.state.live.get(), 4)

    async def scenario():
        started, release = asyncio.Event(), asyncio.Event()

        async def failing_second(self, batch, *where):  # holds the first batch; the second one fails
            sizes.append(len(batch))
            if len(sizes) == 1:
                started.set()
                await release.wait()
            if len(sizes) == 2:
                raise RuntimeError("the forward pass failed")
            return await answer_async(self, batch, *where)

        monkeypatch.setattr(Recommender, "answer_async", failing_second)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500, as a server answers it
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            running = asyncio.create_task(client.post("/recommend", json=first))
            await asyncio.wait_for(started.wait(), 30)
            queued = [asyncio.create_task(client.post("/recommend", json=body)) for body in (second, third)]
            while app.state.batcher.queue.qsize() < 2:  # both wait behind the held batch: one batch next
                await asyncio.sleep(0.001)
            release.set()
            answered = await asyncio.wait_for(asyncio.gather(running, *queued), 30)  # none left waiting
            return answered, await asyncio.wait_for(client.post("/recommend", json=fourth), 30)

    answered, after = asyncio.run(scenario())
    assert sizes == [1, 2, 1]
    assert [r.status_code for r in answered] == [200, 500, 500]
    assert after.status_code == 200 and after.json()["source"] == "session"


def test_a_batch_runs_in_the_forward_process_only_while_the_loop_has_other_work(served, monkeypatch):
    """recmoo_dag/batcher.py: a batch goes to the forward process when the worker answered a request
    without a forward pass since the last batch ran; a lone request after a lone one runs on the loop
    itself; the rest on the batcher's thread."""
    app = create_app(served.deploy.store, served.serve.model_copy(update={"batch_wait_ms": 0.0}))
    where, answer_async = [], Recommender.answer_async

    def recorded(self, batch, executor, way):
        where.append(way)
        return answer_async(self, batch, executor, way)

    monkeypatch.setattr(Recommender, "answer_async", recorded)
    sessions = session_bodies(app.state.live.get(), 4)

    async def scenario():
        async with asgi_client(app) as client:
            statuses = [(await client.post("/recommend", json=sessions[0])).status_code]  # alone
            statuses.append((await client.post("/recommend", json={"user_id": sessions[0]["user_id"]})).status_code)
            statuses.append((await client.post("/recommend", json=sessions[1])).status_code)  # after a lookup
            statuses.append((await client.post("/recommend", json=sessions[2])).status_code)  # alone again
            await client.get("/health")  # answers no request of the batcher's kind: not counted
            statuses.append((await client.post("/recommend", json=sessions[3])).status_code)
            return statuses

    assert asyncio.run(scenario()) == [200] * 5
    assert where == ["thread", "process", "thread", "loop"]
