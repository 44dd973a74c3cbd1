"""A fake OpenAI-compatible vendor: a real aiohttp server on a local port that misbehaves on cue.

Tests queue faults (`vendor.faults.append(Fault("status", status=500))`); each request takes the next
one, or behaves when none is queued. Every request it receives is kept in `vendor.requests`, and every
request whose connection the gateway closed before the answer was complete is counted in
`vendor.disconnects` (with `vendor.disconnected` set), so tests can prove the upstream was cut.

Fault kinds:
    status        answer `status` with `body` (JSON) or `text` (raw, `content_type`) at once
    hang          never answer (until the gateway hangs up)
    slow          wait `seconds`, then answer normally
    reset         close the connection without any answer
    headers_hang  stream: send 200 headers, then nothing, forever
    headers_drop  stream: send 200 headers, then close the connection before any chunk
    drop          stream: `after_chunks` chunks, then close the connection mid-stream
    idle          stream: `after_chunks` chunks, then `seconds` of silence, then the rest
    binary_drop   a binary (octet-stream) body: `after_chunks` chunks, then the connection closes
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Fault:
    kind: str
    status: int = 500
    seconds: float = 0.0  # for slow (before headers) and idle (between chunks)
    after_chunks: int = 0  # for drop / idle: how many chunks go out first
    body: dict[str, Any] | None = None
    text: str | None = None  # a raw (non-JSON) error body
    content_type: str = "text/plain"


@dataclass
class Seen:
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str]
    peer_port: int  # the gateway's end of the connection: tells connections apart

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class FakeVendor:
    name: str = "vendor"
    chunks: int = 5
    chunk_delay: float = 0.0
    prompt_tokens: int = 11
    send_usage: bool = True
    set_cookie: str | None = None  # sent with every JSON answer, as vendors behind Cloudflare do
    reject_keys: set[str] = field(default_factory=set)  # answer 401, echoing the key as some vendors do
    journal: list[str] | None = None  # shared between vendors: the order requests arrived in
    gate: asyncio.Event | None = None  # when set up, a stream sends its first chunk, then waits for it to open
    faults: deque[Fault] = field(default_factory=deque)
    # Scripted answers, each taken by the next request of its kind: whole chat answers, and streams as
    # the list of chunk dicts to send (each as one event, then [DONE]).
    answers: deque[dict[str, Any]] = field(default_factory=deque)
    streams: deque[list[dict[str, Any]]] = field(default_factory=deque)
    requests: list[Seen] = field(default_factory=list)
    server: TestServer | None = None
    closed_streams: int = 0  # streams whose client (the gateway) went away before the end
    disconnects: int = 0  # any request whose connection the gateway closed before the answer was complete
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    received: asyncio.Event = field(default_factory=asyncio.Event)  # set on every request

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1"))

    async def start(self) -> FakeVendor:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/v1/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()  # handler_cancellation: a hang-up cancels the handler
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnects += 1
            self.disconnected.set()
            raise

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        seen = Seen(request.path, request.method, dict(request.headers), body, dict(request.query), peer[1] if peer else 0)
        self.requests.append(seen)
        self.received.set()
        if self.journal is not None:
            self.journal.append(self.name)
        fault = self.faults.popleft() if self.faults else None
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if key in self.reject_keys:
            err = {"error": {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error",
                             "code": "invalid_api_key"}}
            return web.json_response(err, status=401)
        if fault is not None and fault.kind == "status":
            if fault.text is not None:
                return web.Response(status=fault.status, text=fault.text, content_type=fault.content_type)
            err = fault.body or {"error": {"message": f"{self.name} failed with {fault.status}", "type": "server_error"}}
            return web.json_response(err, status=fault.status)
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(3600)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if fault is not None and fault.kind == "binary_drop":
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await resp.prepare(request)
            for _ in range(fault.after_chunks):
                await resp.write(b"\x00" * 100)
            assert request.transport is not None
            request.transport.close()
            return resp
        payload = orjson.loads(body) if body and request.content_type == "application/json" else {}
        if payload.get("stream") and self.streams:
            return await self._scripted_stream(request, self.streams.popleft())
        if payload.get("stream"):
            return await self._stream(request, payload, fault)
        if self.answers:
            return web.json_response(self.answers.popleft())
        text = f"hello from {self.name}"
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }
        if self.send_usage:
            answer["usage"] = self._usage(3)
        headers = {"X-Vendor": self.name}
        if self.set_cookie is not None:
            headers["Set-Cookie"] = self.set_cookie
        return web.json_response(answer, headers=headers)

    def _usage(self, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        }

    async def _scripted_stream(self, request: web.Request, chunks: list[dict[str, Any]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream(self, request: web.Request, payload: dict[str, Any], fault: Fault | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Vendor": self.name})
        await resp.prepare(request)
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        kind = fault.kind if fault is not None else None
        try:
            if kind == "headers_hang":
                await asyncio.sleep(3600)
            for i in range(self.chunks):
                if i == 1 and self.gate is not None:
                    await self.gate.wait()
                if fault is not None and kind in ("drop", "headers_drop") and i == fault.after_chunks:
                    assert request.transport is not None
                    request.transport.close()  # the connection dies mid-stream, no terminating chunk
                    return resp
                if fault is not None and kind == "idle" and i == fault.after_chunks:
                    await asyncio.sleep(fault.seconds)
                chunk = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "model": payload.get("model"),
                    "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
                }
                if include_usage:
                    chunk["usage"] = None
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            if include_usage and self.send_usage:
                last = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": self._usage(self.chunks)}
                await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.closed_streams += 1
            raise
        return resp


class Blackhole:
    """A port where TCP connects hang: a listener that never accepts, its tiny backlog already full.

    Stands in for a vendor host that is down behind a firewall dropping packets (connect timeout).
    """

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._fillers: list[socket.socket] = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", self.port))
            self._fillers.append(s)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        for s in [*self._fillers, self._listener]:
            s.close()
