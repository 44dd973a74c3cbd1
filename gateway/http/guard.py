"""What a client connection may hold without sending a request: the slowloris defence.

aiohttp reads a request head for as long as it takes, and a new connection that sends nothing is kept
for ever, so a few thousand clients dripping bytes can hold every file descriptor. `ConnectionGuard`
sits between the listening socket and aiohttp's protocol (it wraps the protocol factory, a public
interface) and bounds each connection by its state:

    idle   (no byte of the next request yet)        closed after `idle_s`
    head   (a request head begun, not yet ended)    answered 408 and closed after `head_s`
    busy   (a request is being served)              not bounded here: bodies are (gateway.api.bodies)

and the number of connections: at `max_connections`, a new connection takes the place of the idle
or head-state connection that has waited longest (a slowloris, or a keep-alive client that can
reconnect), so a health probe or a real client still gets in; only when every connection is busy is
the new one refused. Deadlines are checked by one sweep a second, not a timer per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from gateway.http.upstream import connection_limit

log = structlog.get_logger("gateway.http")

IDLE, HEAD, BUSY = 0, 1, 2
_TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class ConnectionGuard:
    def __init__(self, max_connections: int, idle_s: float, head_s: float) -> None:
        self.configure(max_connections, idle_s, head_s)
        self._live: dict[Guarded, None] = {}  # in the order they came: the oldest first
        self._by_transport: dict[Any, Guarded] = {}
        self.timed_out = 0  # closed for sending too little, too slowly
        self.evicted = 0  # closed to make room for a new connection
        self.refused = 0  # new connections turned away: every slot busy
        self._reported = (0, 0, 0)
        self._sweeper: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()  # made in the loop it guards

    def configure(self, max_connections: int, idle_s: float, head_s: float) -> None:
        """Take the limits in force (at start, and on a reload); `max_connections` 0: from the file limit."""
        self.max_connections = max_connections or connection_limit()
        self.idle_s = idle_s
        self.head_s = head_s

    @property
    def live(self) -> int:
        return len(self._live)

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to hand `loop.create_server`, around aiohttp's (`runner.server`)."""
        return lambda: Guarded(self, inner())

    def start(self) -> None:
        self._sweeper = self.loop.create_task(self._sweep(), name="connection-guard")

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._report()

    def request_done(self, transport: Any) -> None:
        """A request on this connection has been answered: it waits for the next one now."""
        conn = self._by_transport.get(transport)
        if conn is not None:
            conn.waiting(IDLE, self.loop.time() + self.idle_s)

    def admit(self, conn: Guarded) -> bool:
        if len(self._live) >= self.max_connections:
            victim = next((c for c in self._live if c.state != BUSY), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            victim.close(answer=victim.state == HEAD)
        self._live[conn] = None
        return True

    def register(self, conn: Guarded, transport: Any) -> None:
        self._by_transport[transport] = conn

    def forget(self, conn: Guarded, transport: Any) -> None:
        self._live.pop(conn, None)
        if transport is not None:
            self._by_transport.pop(transport, None)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for conn in [c for c in self._live if c.state != BUSY and c.deadline <= now]:
                self.timed_out += 1
                conn.close(answer=conn.state == HEAD)
            self._report()

    def _report(self) -> None:
        counts = (self.timed_out, self.evicted, self.refused)
        if counts != self._reported:  # one line a second at most, only when something happened
            log.warning("connections_cut", live=len(self._live), timed_out=self.timed_out, evicted=self.evicted,
                        refused=self.refused, max_connections=self.max_connections)
            self._reported = counts


class Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's view of its state."""

    __slots__ = ("_admitted", "_guard", "_inner", "_tail", "deadline", "state", "transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._admitted = False
        self._tail = b""  # the last bytes of a head not yet ended, where its blank line may begin
        self.state = IDLE
        self.deadline = 0.0
        self.transport: asyncio.BaseTransport | None = None

    def waiting(self, state: int, deadline: float) -> None:
        self.state, self.deadline, self._tail = state, deadline, b""

    def close(self, *, answer: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if answer and isinstance(transport, asyncio.WriteTransport):
            transport.write(_TIMEOUT_ANSWER)
        transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self._guard.admit(self):
            transport.close()
            return
        self._admitted = True
        self._guard.register(self, transport)
        self.waiting(IDLE, self._guard.loop.time() + self._guard.idle_s)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        state = self.state
        if state != BUSY:
            if state == IDLE:
                self.state, self.deadline = HEAD, self._guard.loop.time() + self._guard.head_s
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self.state, self._tail = BUSY, b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.forget(self, self.transport)
        if self._admitted:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
