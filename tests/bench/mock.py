"""A fast mock OpenAI vendor for the benchmark: raw HTTP/1.1 on asyncio, no framework.

It must cost far less per request than anything measured in front of it, so it parses only what it
needs (request line, Content-Length) and answers from canned bytes. A chat body with `"stream":true`
gets 40 SSE chunks (plus the usage chunk when `include_usage` is asked for), each its own write;
`"bench_hold":true` holds a stream open after its first chunk until `POST /bench/release`.

    python -m tests.bench.mock --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import orjson

from tests.bench.procs import raise_nofile, use_uvloop

STREAM_CHUNKS = 40

_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
    }
)
_JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(_ANSWER) + _ANSWER
)
_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
# A DashScope task still running: what the gateway's task poller reads while the bench holds pending tasks.
_TASK_BODY = orjson.dumps({"request_id": "bench", "output": {"task_id": "bench", "task_status": "RUNNING"}})
_TASK_RUNNING = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_TASK_BODY), _TASK_BODY)
_RELEASED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(obj: object) -> bytes:
    return _chunk(b"data: " + orjson.dumps(obj) + b"\n\n")


_TOKENS = [_event({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
                   "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]})
           for i in range(STREAM_CHUNKS)]
_USAGE_EVENT = _event({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                       "model": "gpt-4o-mini", "choices": [],
                       "usage": {"prompt_tokens": 12, "completion_tokens": STREAM_CHUNKS,
                                 "total_tokens": 12 + STREAM_CHUNKS}})
_DONE = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Mock:
    def __init__(self) -> None:
        self.held: set[MockProtocol] = set()
        self.polls = 0  # task polls answered


class MockProtocol(asyncio.Protocol):
    def __init__(self, mock: Mock) -> None:
        self.mock = mock
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending_rest: bytes | None = None  # what a held stream still has to send

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.mock.held.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        t = self.transport
        if t is None:
            return
        if head.startswith(b"post /bench/release"):
            for proto in list(self.mock.held):
                proto.release()
            t.write(_RELEASED)
            return
        if head.startswith(b"get /api/v1/tasks/"):
            self.mock.polls += 1
            t.write(_TASK_RUNNING)
            return
        if b"/chat/completions" not in head[: head.find(b"\r\n")]:
            t.write(_NOT_FOUND)
            return
        if b'"stream":true' not in body:
            t.write(_JSON_RESPONSE)
            return
        rest = [*_TOKENS[1:]]
        if b'"include_usage":true' in body:
            rest.append(_USAGE_EVENT)
        rest.append(_DONE)
        t.write(_SSE_HEAD)
        if b'"bench_hold":true' in body:
            t.write(_TOKENS[0])
            self.pending_rest = b"".join(rest)
            self.mock.held.add(self)
            return
        t.write(_TOKENS[0])
        for part in rest:  # one write per event: each leaves as its own segment, as a real vendor's would
            t.write(part)

    def release(self) -> None:
        self.mock.held.discard(self)
        if self.transport is not None and self.pending_rest is not None:
            self.transport.write(self.pending_rest)
        self.pending_rest = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    mock = Mock()
    server = await loop.create_server(lambda: MockProtocol(mock), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock listening on {host}:{port} pid {os.getpid()}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_nofile()
    use_uvloop(serve(args.host, args.port))


if __name__ == "__main__":
    main()
