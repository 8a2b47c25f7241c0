"""The HTTP connections of `recmoo serve`: uvicorn's httptools protocol with deadlines and a cap.

Why a subclass: uvicorn 0.54 waits on a client for as long as the client likes. Its one timer,
keep-alive, is armed only after a response and cancelled by any byte received, so a client that
connects and sends nothing, or trickles a head or a body a byte at a time, holds its descriptor
for good; httptools buffers a head of any size; and `limit_concurrency` counts those idle
connections, then answers 503 to every request, /health included. uvicorn accepts a protocol
class for `http=`, so the missing deadlines and the cap go here, on top of its parser and
request cycle, and nothing else changes.
"""
from __future__ import annotations

import asyncio
import resource

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from recmoo_dag.errors import ConfigError

HEALTH = b"/health"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a deadline on every wait for the client, and a connection cap.

    - From connecting, or from the end of the previous response, a client has `header_timeout`
      seconds to complete a request head; then `body_timeout` seconds to complete its body. Bytes
      do not push a deadline back (a trickler would send just enough), and at a deadline the
      connection is closed without an answer: the client is not reading one.
    - A head still incomplete after `max_head_bytes` gets 431 and the connection closes.
    - A connection opened while `max_connections` others are open gets uvicorn's 503 (and closes)
      as soon as its request head is in: a fast refusal, not a hang. GET /health is answered all
      the same (then the connection closes), so a monitor tells "full" from "down" under a flood;
      it costs no more than the 503.
    """

    def __init__(self, config, server_state, app_state, _loop=None, *, header_timeout: float,
                 body_timeout: float, max_head_bytes: int, max_connections: int) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.max_head_bytes, self.max_connections = max_head_bytes, max_connections
        self.deadline: asyncio.TimerHandle | None = None
        self.reading_head = self.reading_body = self.over_cap = False
        self.head_bytes = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # counts this one in self.connections
        self.over_cap = len(self.connections) > self.max_connections
        self._await_head()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, so only bytes that left the head incomplete count: a body that
        # arrives with its head is not head. What is buffered stays under the limit plus one read.
        if self.reading_head and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                self._disarm()
                message = f"request head over {self.max_head_bytes} bytes".encode()
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
                                     b"charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                                     % (len(message), message))
                self.transport.close()

    def on_headers_complete(self) -> None:
        self.reading_head, self.reading_body = False, True
        self._arm(self.body_timeout)  # a request without a body completes at once and disarms it
        if self.over_cap and not self._is_health():
            self.app = service_unavailable
        super().on_headers_complete()
        if self.over_cap and self.cycle is not None:
            self.cycle.keep_alive = False  # /health answered over the cap: then make room

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_body = False
        if self.cycle is not None and self.cycle.response_complete:
            self._await_head()  # answered early (413 on a declared length): the next request is due
        else:
            self._disarm()  # the server's turn: the app runs, no client deadline

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # uvicorn starts a queued request (head already in) if there is one
        super().on_response_complete()
        if idle and not self.reading_body and not self.transport.is_closing():
            self._await_head()

    def _is_health(self) -> bool:
        return self.parser.get_method() in (b"GET", b"HEAD") and httptools.parse_url(self.url).path == HEALTH

    def _await_head(self) -> None:
        self.reading_head, self.head_bytes = True, 0
        self._arm(self.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def raise_descriptor_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns it. An idle flood runs out of
    descriptors long before memory or CPU, and past the limit accept() fails, so not even /health
    connects. Connections over the cap hold a descriptor too until they are answered or their
    deadline passes, hence the room for twice `max_connections`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:  # an infinite hard limit (macOS) is not a settable soft one
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < 2 * max_connections:
        raise ConfigError(f"serve.max_connections {max_connections} needs {2 * max_connections} open files per "
                          f"process, the limit is {soft}: lower serve.max_connections or raise `ulimit -Hn`")
    return soft
