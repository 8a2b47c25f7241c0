"""Abuse of the port: slow, idle and oversized clients are dropped and /health answers throughout.

One real `recmoo serve` (uvicorn, httptools) on loopback, with 1 s deadlines and a cap of 200
connections so that each attack is small and short: 180 attackers, a few seconds.
"""
from __future__ import annotations

import asyncio
import copy
import json
import resource
import socket
import threading
import time

import pytest

from recmoo_dag.errors import ConfigError
from recmoo_dag.serve_http import raise_descriptor_limit
from tests.conftest import REPO, deep_update
from tests.deploy_support import FRONT, LOOSE, base_project, deployed_copy
from tests.serve_support import HOST, running_service

# Under pytest-xdist one worker runs them all, so the module's service starts once.
pytestmark = pytest.mark.xdist_group("serve_abuse")

DEADLINE = 2.0  # serve.header_timeout_s and serve.body_timeout_s of the test service
SLACK = 1.5  # a timer on a shared 2-core machine fires late by this much at most (CI runs heavy tests beside)
FAST = 1.0  # seconds: a 503 or a /health answer under attack, against the deadline's "never"
CAP = 200  # serve.max_connections
PER_KIND = 60  # slow-header, slow-body and idle attackers each: 180 in all, under the cap
SERVE = {"header_timeout_s": DEADLINE, "body_timeout_s": DEADLINE, "max_connections": CAP, "max_head_bytes": 16384}

HEALTH = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
BODY = json.dumps({"user_id": "1", "k": 3}).encode()
RECOMMEND = (b"POST /recommend HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
# A head that never ends, and a complete head whose body never ends: each sends a byte every 0.2 s.
SLOW_HEADER = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: "
SLOW_BODY = b"POST /recommend HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """The port of a `recmoo serve` (one worker) on a deployed tiny project, killed at the end."""
    project = tmp_path_factory.mktemp("abuse")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)  # the project's paths are relative
        deployed_copy(base_project(tmp_path_factory), project, [FRONT[2]],
                      deep_update(copy.deepcopy(LOOSE), {"serve": SERVE}))
    with running_service(project, 1, str(REPO), project / "serve.log") as (_, port):
        yield port


async def exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


async def status_of(port: int, request: bytes) -> int:
    try:
        answer = await exchange(port, request)
    except OSError:
        return 0
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


async def until_closed(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass


async def trickle(writer: asyncio.StreamWriter, head: bytes) -> None:
    try:
        writer.write(head)
        while True:
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(b"a")
    except ConnectionError:
        pass


async def attacker(port: int, head: bytes | None, watch: float) -> float | None:
    """Seconds from connecting until the server drops the connection; None if it did not within `watch`."""
    start = time.monotonic()  # before connecting: the server's clock for this connection starts later
    reader, writer = await asyncio.open_connection(HOST, port)
    sender = asyncio.create_task(trickle(writer, head)) if head else None
    try:
        await asyncio.wait_for(until_closed(reader), watch)
        return time.monotonic() - start
    except TimeoutError:
        return None
    finally:
        if sender:
            sender.cancel()
        writer.close()


def probe_health(port: int, stop: threading.Event) -> list[tuple[int, float]]:
    """(status, seconds) of a GET /health on a new connection every 0.1 s until `stop`. Blocking
    sockets in a thread: in the event loop the probe would wait behind the attackers' own work."""
    answers = []
    while not stop.is_set():
        start = time.monotonic()
        try:
            with socket.create_connection((HOST, port), timeout=10) as sock:
                sock.sendall(HEALTH)
                head = sock.recv(64)
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
        except OSError:
            status = 0
        answers.append((status, time.monotonic() - start))
        stop.wait(0.1)
    return answers


@pytest.mark.slow
def test_slow_and_idle_clients_are_dropped_at_their_deadline_while_health_answers(port):
    async def attack():
        stop = threading.Event()
        health = asyncio.create_task(asyncio.to_thread(probe_health, port, stop))
        kinds = {"slow header": SLOW_HEADER, "slow body": SLOW_BODY, "idle": None}
        tasks = {kind: [asyncio.create_task(attacker(port, head, DEADLINE + SLACK + 2)) for _ in range(PER_KIND)]
                 for kind, head in kinds.items()}
        dropped = {kind: await asyncio.gather(*group) for kind, group in tasks.items()}
        stop.set()
        return dropped, await health

    dropped, health = asyncio.run(attack())
    for kind, seconds in dropped.items():
        assert None not in seconds, f"{seconds.count(None)} {kind} clients still connected after {DEADLINE + SLACK + 2} s"
        assert DEADLINE * 0.9 <= min(seconds) and max(seconds) <= DEADLINE + SLACK, (kind, min(seconds), max(seconds))
    assert len(health) >= 5 and {status for status, _ in health} == {200}, health
    assert max(seconds for _, seconds in health) < FAST, health


@pytest.mark.slow
def test_over_the_cap_a_request_gets_a_fast_503_and_health_still_answers(port):
    async def scenario():
        opened = time.monotonic()  # the first filler's deadline runs from after this
        fillers = [await asyncio.open_connection(HOST, port) for _ in range(CAP)]
        try:
            await asyncio.sleep(0.2)  # the server accepts them all: the cap is full of idle clients
            start = time.monotonic()
            refused = await status_of(port, RECOMMEND)
            refused_in = time.monotonic() - start
            health = await status_of(port, HEALTH)
            checked_by = time.monotonic() - opened
            try:
                await asyncio.wait_for(asyncio.gather(*(until_closed(reader) for reader, _ in fillers)), DEADLINE + SLACK)
            except TimeoutError:
                return refused, refused_in, health, checked_by, None
            return refused, refused_in, health, checked_by, await status_of(port, RECOMMEND)
        finally:
            for _, writer in fillers:
                writer.close()

    refused, refused_in, health, checked_by, served = asyncio.run(scenario())
    assert checked_by < DEADLINE, "the fillers may have been dropped before the checks: the test proves nothing"
    assert refused == 503 and refused_in < FAST, (refused, refused_in)
    assert health == 200
    assert served is not None, f"the idle fillers were still connected {DEADLINE + SLACK} s after the check"
    assert served == 200  # they were dropped at their deadline: room again


@pytest.mark.slow
def test_a_head_that_grows_past_max_head_bytes_is_refused(port):
    endless = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 20_000  # no end of head
    assert asyncio.run(status_of(port, endless)) == 431
    assert asyncio.run(status_of(port, HEALTH)) == 200


def test_a_cap_the_descriptor_limit_cannot_hold_is_refused_at_start():
    limit = raise_descriptor_limit(1)  # the soft limit, raised to the hard one as `recmoo serve` does
    assert limit == resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with pytest.raises(ConfigError, match=r"serve.max_connections .* raise `ulimit -Hn`"):
        raise_descriptor_limit(limit)  # over-cap connections need descriptors too: twice the cap
