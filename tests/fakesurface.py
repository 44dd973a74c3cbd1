"""A fake vendor for the whole OpenAI surface: a real aiohttp server on a local port.

It answers chat (with tool calls), completions, responses, embeddings, moderations, rerank, images,
speech (a chunked binary stream with delays), transcriptions/translations and a realtime WebSocket,
each with the usage a real vendor would report. Every request is kept in `requests`; uploads are
kept as sizes and digests, not bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

PNG_1PX = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()
SPEECH_CHUNK = 4096


@dataclass
class Upload:
    name: str
    filename: str | None
    content_type: str | None
    size: int
    sha256: str


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)
    size: int = 0


@dataclass
class FakeSurface:
    name: str = "surface"
    speech_chunks: int = 6
    speech_delay: float = 0.05
    speech_gate: asyncio.Event | None = None  # when set up, speech sends its first chunk, then waits for it to open
    requests: list[Seen] = field(default_factory=list)
    sessions: list[Seen] = field(default_factory=list)  # realtime handshakes
    server: TestServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1"))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeSurface]:
        app = web.Application(client_max_size=1 << 30)
        r = app.router
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/responses", self.responses)
        r.add_post("/v1/embeddings", self.embeddings)
        r.add_post("/v1/moderations", self.moderations)
        r.add_post("/v1/rerank", self.rerank)
        r.add_post("/v1/images/generations", self.image_generations)
        r.add_post("/v1/images/edits", self.image_edits)
        r.add_post("/v1/audio/speech", self.speech)
        r.add_post("/v1/audio/transcriptions", self.transcribe)
        r.add_post("/v1/audio/translations", self.transcribe)
        r.add_get("/v1/realtime", self.realtime)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        try:
            yield self
        finally:
            await self.server.close()

    # ---- helpers

    async def _json(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        payload = orjson.loads(body)
        self.requests.append(Seen(request.path, dict(request.headers), dict(request.query), json=payload, size=len(body)))
        return payload

    async def _form(self, request: web.Request) -> Seen:
        seen = Seen(request.path, dict(request.headers), dict(request.query), size=request.content_length or 0)
        reader = await request.multipart()
        async for part in reader:
            assert part.name is not None
            data = await part.read()
            if part.filename is None:
                seen.form[part.name] = data.decode()
            else:
                seen.files.append(
                    Upload(part.name, part.filename, part.headers.get("Content-Type"), len(data), hashlib.sha256(data).hexdigest())
                )
        self.requests.append(seen)
        return seen

    @staticmethod
    async def _sse(request: web.Request, events: list[tuple[str | None, dict[str, Any]]], done: bool = True) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in events:
            head = f"event: {name}\n".encode() if name else b""
            await resp.write(head + b"data: " + orjson.dumps(data) + b"\n\n")
        if done:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # ---- text

    async def chat(self, request: web.Request) -> web.StreamResponse:
        p = await self._json(request)
        model = p.get("model")
        tools = bool(p.get("tools"))
        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        usage = {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}
        if not p.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if tools else "hi there"}
            if tools:
                message["tool_calls"] = [call]
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if tools else "stop"}
            return web.json_response({"id": "chatcmpl-s", "object": "chat.completion", "created": 1, "model": model, "choices": [choice], "usage": usage})
        base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model}
        events: list[tuple[str | None, dict[str, Any]]] = []
        if tools:
            args = call["function"]["arguments"]
            first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            events.append((None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [first]}, "finish_reason": None}]}))
            for piece in (args[:8], args[8:]):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                events.append((None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
        else:
            for word in ("hi", " there"):
                events.append((None, {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}))
        if (p.get("stream_options") or {}).get("include_usage"):
            events.append((None, {**base, "choices": [], "usage": usage}))
        return await self._sse(request, events)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        p = await self._json(request)
        base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": p.get("model")}
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if not p.get("stream"):
            choice = {"index": 0, "text": " world!", "finish_reason": "stop", "logprobs": None}
            return web.json_response({**base, "choices": [choice], "usage": usage})
        events: list[tuple[str | None, dict[str, Any]]] = [
            (None, {**base, "choices": [{"index": 0, "text": t, "finish_reason": None, "logprobs": None}]}) for t in (" wor", "ld", "!")
        ]
        if (p.get("stream_options") or {}).get("include_usage"):
            events.append((None, {**base, "choices": [], "usage": usage}))
        return await self._sse(request, events)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        p = await self._json(request)
        text = "Hello from responses"
        usage = {
            "input_tokens": 9, "output_tokens": 4, "total_tokens": 13,
            "input_tokens_details": {"cached_tokens": 2}, "output_tokens_details": {"reasoning_tokens": 1},
        }
        item = {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}
        done = {"id": "resp_1", "object": "response", "created_at": int(time.time()), "status": "completed",
                "model": p.get("model"), "output": [item], "usage": usage, "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": []}
        if not p.get("stream"):
            return web.json_response(done)
        start = {**done, "status": "in_progress", "output": [], "usage": None}
        part = {"type": "output_text", "text": "", "annotations": []}
        seq = iter(range(100))
        events: list[tuple[str | None, dict[str, Any]]] = [
            ("response.created", {"type": "response.created", "sequence_number": next(seq), "response": start}),
            ("response.in_progress", {"type": "response.in_progress", "sequence_number": next(seq), "response": start}),
            ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0,
                                            "item": {**item, "status": "in_progress", "content": []}}),
            ("response.content_part.added", {"type": "response.content_part.added", "sequence_number": next(seq), "item_id": "msg_1",
                                             "output_index": 0, "content_index": 0, "part": part}),
        ]
        for word in ("Hello", " from", " responses"):
            events.append(("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": next(seq),
                                                          "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": word, "logprobs": []}))
        events += [
            ("response.output_text.done", {"type": "response.output_text.done", "sequence_number": next(seq), "item_id": "msg_1",
                                           "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0, "item": item}),
            ("response.completed", {"type": "response.completed", "sequence_number": next(seq), "response": done}),
        ]
        return await self._sse(request, events, done=False)

    async def embeddings(self, request: web.Request) -> web.Response:
        p = await self._json(request)
        inputs = p["input"] if isinstance(p["input"], list) else [p["input"]]
        vector = [0.5, -0.25, 0.125]
        data = []
        for i, _ in enumerate(inputs):
            emb: Any = base64.b64encode(struct.pack("<3f", *vector)).decode() if p.get("encoding_format") == "base64" else vector
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = 4 * len(inputs)
        return web.json_response({"object": "list", "data": data, "model": p.get("model"),
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def moderations(self, request: web.Request) -> web.Response:
        p = await self._json(request)
        result = {"flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.01}}
        return web.json_response({"id": "modr-1", "model": p.get("model"), "results": [result]})

    async def rerank(self, request: web.Request) -> web.Response:
        p = await self._json(request)
        docs = p.get("documents") or []
        results = sorted(({"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(docs))), key=lambda r: -r["relevance_score"])
        return web.json_response({"id": "rr-1", "model": p.get("model"), "results": results, "usage": {"total_tokens": 17}})

    # ---- images and audio

    def _images(self, model: str | None, n: int) -> dict[str, Any]:
        out: dict[str, Any] = {"created": 1, "data": [{"b64_json": PNG_1PX} for _ in range(n)]}
        if model and model.startswith("gpt-image"):
            out["usage"] = {"input_tokens": 50, "output_tokens": 272 * n, "total_tokens": 50 + 272 * n,
                            "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}}
        return out

    async def image_generations(self, request: web.Request) -> web.StreamResponse:
        p = await self._json(request)
        return web.json_response(self._images(p.get("model"), int(p.get("n") or 1)))

    async def image_edits(self, request: web.Request) -> web.StreamResponse:
        seen = await self._form(request)
        return web.json_response(self._images(seen.form.get("model"), int(seen.form.get("n") or 1)))

    async def speech(self, request: web.Request) -> web.StreamResponse:
        p = await self._json(request)
        kind = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg"}.get(p.get("response_format") or "mp3", "audio/mpeg")
        resp = web.StreamResponse(headers={"Content-Type": kind})
        await resp.prepare(request)
        for i in range(self.speech_chunks):
            if i == 1 and self.speech_gate is not None:
                await self.speech_gate.wait()
            await resp.write(bytes([i]) * SPEECH_CHUNK)
            await asyncio.sleep(self.speech_delay)
        await resp.write_eof()
        return resp

    async def transcribe(self, request: web.Request) -> web.StreamResponse:
        seen = await self._form(request)
        fmt = seen.form.get("response_format", "json")
        text = "the quick brown fox" if request.path.endswith("transcriptions") else "translated text"
        if seen.form.get("stream") == "true":
            usage = {"type": "tokens", "input_tokens": 14, "output_tokens": 4, "total_tokens": 18,
                     "input_token_details": {"text_tokens": 0, "audio_tokens": 14}}
            events: list[tuple[str | None, dict[str, Any]]] = [
                (None, {"type": "transcript.text.delta", "delta": w}) for w in ("the quick", " brown fox")
            ]
            events.append((None, {"type": "transcript.text.done", "text": text, "usage": usage}))
            return await self._sse(request, events, done=False)
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt == "verbose_json":
            return web.json_response({"task": "transcribe", "language": "english", "duration": 12.5, "text": text, "segments": []})
        return web.json_response({"text": text, "usage": {"type": "duration", "seconds": 7}})

    # ---- realtime

    async def realtime(self, request: web.Request) -> web.WebSocketResponse:
        self.sessions.append(Seen(request.path, dict(request.headers), dict(request.query)))
        ws = web.WebSocketResponse(protocols=("realtime",))
        await ws.prepare(request)
        model = request.query.get("model")
        await ws.send_str(orjson.dumps({"type": "session.created", "event_id": "ev_0", "session": {"id": "sess_1", "model": model}}).decode())
        n = 0
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
                continue
            if msg.type != WSMsgType.TEXT:
                continue
            event = orjson.loads(msg.data)
            if event.get("type") == "test.close":
                await ws.close(code=4000, message=b"asked to close")
                break
            if event.get("type") == "response.create":
                n += 1
                usage = {"total_tokens": 30 * n, "input_tokens": 20 * n, "output_tokens": 10 * n,
                         "input_token_details": {"cached_tokens": n, "text_tokens": 20 * n, "audio_tokens": 0},
                         "output_token_details": {"text_tokens": 10 * n, "audio_tokens": 0}}
                await ws.send_str(orjson.dumps({"type": "response.output_text.delta", "event_id": f"ev_{n}a", "delta": "hi"}).decode())
                response = {"id": f"resp_{n}", "object": "realtime.response", "status": "completed", "output": [], "usage": usage}
                await ws.send_str(orjson.dumps({"type": "response.done", "event_id": f"ev_{n}b", "response": response}).decode())
            else:
                await ws.send_str(orjson.dumps({"type": "echo", "event_id": f"echo_{n}", "received": event}).decode())
        return ws
