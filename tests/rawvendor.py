"""A vendor as a raw TCP server on a local port: a test sees the exact request bytes and can answer with
bytes no HTTP server library would send (interim answers, garbage, a body ended by closing)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class RawVendor:
    """Reads one request at a time off each connection and answers with `answer(request bytes)`."""

    answer: Callable[[bytes], bytes] = lambda _: OK
    requests: list[bytes] = field(default_factory=list)
    peers: list[int] = field(default_factory=list)  # the client's port, per request
    close_after: bool = False  # close each connection after its answer
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                self.peers.append(writer.get_extra_info("peername")[1])
                writer.write(self.answer(self.requests[-1]))
                await writer.drain()
                if self.close_after:
                    break
        writer.close()
