"""Fake Anthropic and Gemini vendors speaking the real wire protocols, on local ports, misbehaving on cue.

The same style as tests/fakevendor.py (whose `Fault` and `Seen` they share): a real aiohttp server per fake,
every request kept in `fake.requests`, queued faults taken one per request, hang-ups counted in
`fake.disconnects` / `fake.closed_streams`. tests/test_fakeprotocols.py drives both with the real SDKs.

What they answer is driven by the request: by default an echo of the last user text ("echo: <text>",
streamed in ~3 pieces); `script_next(...)` queues what the next request is answered with instead.

FakeAnthropic (base_url "http://127.0.0.1:PORT"; the client appends /v1/messages):
    POST /v1/messages               a Message, or with "stream": true the SSE event grammar: message_start,
                                    content_block_start, ping, content_block_delta..., content_block_stop (per
                                    block), message_delta, message_stop; `delay_s` between events
    POST /v1/messages/count_tokens  {"input_tokens": N}; N = the same estimate as usage.input_tokens
    no key -> 401, a key in `reject_keys` -> 401 (authentication_error), no anthropic-version -> 400 (any value
    goes). The key is read from x-api-key (the documented header) or, unless `bearer_ok=False`, from
    `Authorization: Bearer` (which the installed anthropic SDK 2.x sends instead: so a gateway test that wants the
    documented header asserts on `requests[i].headers` or sets bearer_ok=False);
    a missing model/messages/max_tokens, an unknown top-level field or a role other than user/assistant/system
    (SDK 2.x has system messages) -> 400 invalid_request_error, as the real API does (`strict=False`: no checks).
    usage: input_tokens = the estimate, cache_read/creation_input_tokens = `cache_read_tokens` /
    `cache_creation_tokens`, output_tokens = an estimate of the content; message_start carries it with
    output_tokens 1, message_delta the final counts. The estimate is bytes of the JSON of system+tools+messages // 4.
    script_next(*blocks, stop_reason=None, stop_sequence=None, usage=None): blocks in the Message content shape
        {"type": "text", "text": ...}                           (a bare str is short for this)
        {"type": "thinking", "thinking": ..., "signature"?: ...}  thinking_delta pieces, then one signature_delta
        {"type": "redacted_thinking", "data": ...}
        {"type": "tool_use", "name": ..., "input": {...}, "id"?: ...}  input_json_delta: "" then several pieces
        several tool_use blocks are parallel calls; stop_reason defaults to "tool_use" when there is one, else
        "end_turn"; `usage` overrides fields of the computed usage.
    Extra fault kinds: "overloaded" (= Fault("status", status=529): overloaded_error), "stream_error"
    (`after_chunks` events, then `event: error` with overloaded_error, or `fault.body` as the error object,
    and the stream ends). A "status" fault without a body answers in Anthropic's error shape, its error type
    following the status (429 rate_limit_error, 500 api_error, 529 overloaded_error...).

FakeGemini (base_url "http://127.0.0.1:PORT"; the client appends /v1beta/models/{model}:{method}):
    POST /v1beta/models/{model}:generateContent        a GenerateContentResponse
    POST /v1beta/models/{model}:streamGenerateContent  ?alt=sse: "data: {...}\\r\\n\\r\\n" events; else one JSON
                                                       array written element by element; `delay_s` between chunks
    POST /v1beta/models/{model}:countTokens            {"totalTokens": N, "promptTokensDetails": [...]}
    The key must come in x-goog-api-key: without it -> 403 PERMISSION_DENIED (even if `?key=` is given: every
    `key` seen in a query is also kept in `query_keys`, which tests assert stays empty); a key in
    `reject_keys` -> 400 INVALID_ARGUMENT with reason API_KEY_INVALID, as the real API answers a bad key.
    No `contents`, an unknown top-level field ("Unknown name ...") or a role other than user/model -> 400.
    script_next(*parts, finish_reason="STOP", block_reason=None, usage=None): parts in the Part shape
        {"text": ...}                                 (a bare str is short for this)
        {"text": ..., "thought": True}                a thought summary
        {"functionCall": {"name": ..., "args": {...}, "id"?: ...}, "thoughtSignature"?: "<base64>"}
        any part may carry "thoughtSignature" (base64: the SDK decodes it to bytes).
    Streaming: text and thought parts go out in ~3 pieces (a thoughtSignature rides on the last piece);
    consecutive functionCall parts go out whole, together in one chunk (parallel calls). finishReason rides on
    the last chunk; finish_reason="SAFETY" ends with a chunk of its own, no content, blocked safetyRatings.
    block_reason="SAFETY" answers promptFeedback.blockReason and no candidates. usageMetadata is on every
    chunk, cumulative (promptTokenCount, candidatesTokenCount, thoughtsTokenCount when there are thoughts,
    cachedContentTokenCount when `cached_tokens`, totalTokenCount); zero counts are left out, as proto3 JSON does.
    A "status" fault without a body answers in Gemini's error shape {"error": {"code", "message", "status"}}.

Fault kinds both take (tests/fakevendor.py's): status, hang, slow, reset, headers_hang, headers_drop, drop, idle,
binary_drop. For the stream faults a "chunk" is one SSE event (Anthropic: message_start and ping count) or one
Gemini chunk (SSE event or array element).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import secrets
import string
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakevendor import Fault, Seen

Json = dict[str, Any]

COMMON_FAULTS = frozenset(
    {"status", "hang", "slow", "reset", "headers_hang", "headers_drop", "drop", "idle", "binary_drop"}
)
_ALPHABET = string.ascii_letters + string.digits


def estimate_tokens(value: Any) -> int:
    """A deterministic token estimate: bytes of the JSON // 4, never 0."""
    return max(1, len(orjson.dumps(value)) // 4)


def pieces(text: str, n: int = 3) -> list[str]:
    """`text` cut in about `n` consecutive non-empty pieces (none for an empty text)."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / n))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _rand_id(prefix: str, n: int = 22) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def _signature(text: str) -> str:
    """A stand-in for an opaque thinking signature: base64, derived from the text."""
    return base64.b64encode(hashlib.sha256(text.encode()).digest() * 2).decode()


@dataclass
class _Fake:
    """What both fakes share: the server, the request log, faults and the stream writer."""

    name: str = "fake"
    delay_s: float = 0.005  # between stream events, so streaming is observable
    strict: bool = True  # reject requests the real API rejects (missing / unknown fields, bad roles)
    reject_keys: set[str] = field(default_factory=set)
    journal: list[str] | None = None  # shared between fakes: the order requests arrived in
    gate: asyncio.Event | None = None  # when set up, a stream sends its first event, then waits for it to open
    faults: deque[Fault] = field(default_factory=deque)
    requests: list[Seen] = field(default_factory=list)
    server: TestServer | None = None
    closed_streams: int = 0  # streams whose client went away before the end
    disconnects: int = 0  # requests whose connection the client closed before the answer was complete
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    received: asyncio.Event = field(default_factory=asyncio.Event)  # set on every request

    extra_faults: ClassVar[frozenset[str]] = frozenset()  # fault kinds beyond COMMON_FAULTS

    @property
    def base_url(self) -> str:
        assert self.server is not None, "start() the fake first"
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> _Fake:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()  # handler_cancellation: a hang-up cancels the handler
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def fail_next(self, *faults: Fault) -> None:
        for f in faults:
            if f.kind not in COMMON_FAULTS | self.extra_faults:
                raise ValueError(f"{type(self).__name__} has no fault kind {f.kind!r}")
        self.faults.extend(faults)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve(request)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnects += 1
            self.disconnected.set()
            raise

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        seen = Seen(
            request.path, request.method, dict(request.headers), body, dict(request.query), peer[1] if peer else 0
        )
        self.requests.append(seen)
        self.received.set()
        if self.journal is not None:
            self.journal.append(self.name)
        fault = self.faults.popleft() if self.faults else None
        early = await self._early_fault(request, fault)
        if early is not None:
            return early
        return await self._answer(request, body, fault)

    async def _answer(self, request: web.Request, body: bytes, fault: Fault | None) -> web.StreamResponse:
        raise NotImplementedError

    def _error(self, status: int, message: str | None = None, kind: str | None = None) -> web.Response:
        raise NotImplementedError

    async def _early_fault(self, request: web.Request, fault: Fault | None) -> web.StreamResponse | None:
        """The faults that do not depend on the protocol: answered before the request is looked at."""
        if fault is None:
            return None
        if fault.kind == "status":
            if fault.text is not None:
                return web.Response(status=fault.status, text=fault.text, content_type=fault.content_type)
            if fault.body is not None:
                return web.json_response(fault.body, status=fault.status)
            return self._error(fault.status)
        if fault.kind == "hang":
            await asyncio.sleep(3600)
        if fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if fault.kind == "binary_drop":
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await resp.prepare(request)
            for _ in range(fault.after_chunks):
                await resp.write(b"\x00" * 100)
            assert request.transport is not None
            request.transport.close()
            return resp
        return None

    def _stream_error_frame(self, fault: Fault) -> bytes:
        raise NotImplementedError

    async def _write_stream(
        self,
        request: web.Request,
        frames: list[bytes],
        fault: Fault | None,
        headers: dict[str, str],
        trailer: bytes = b"",
    ) -> web.StreamResponse:
        """Send `frames` one by one, `delay_s` apart, applying a stream fault; `trailer` closes a full stream."""
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        kind = fault.kind if fault is not None else None
        try:
            if kind == "headers_hang":
                await asyncio.sleep(3600)
            for i, frame in enumerate(frames):
                if fault is not None and i == fault.after_chunks:
                    if kind in ("drop", "headers_drop"):
                        assert request.transport is not None
                        request.transport.close()  # the connection dies mid-stream
                        return resp
                    if kind == "idle":
                        await asyncio.sleep(fault.seconds)
                    if kind == "stream_error":
                        await resp.write(self._stream_error_frame(fault))
                        await resp.write_eof()
                        return resp
                if i == 1 and self.gate is not None:
                    await self.gate.wait()
                if i > 0 and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                await resp.write(frame)
            if fault is not None and kind == "stream_error":  # after_chunks past the end: the error comes last
                await resp.write(self._stream_error_frame(fault))
            elif trailer:
                await resp.write(trailer)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.closed_streams += 1
            raise
        return resp


# --------------------------------------------------------------------------------------------- Anthropic

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_MESSAGES_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_p",
    "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers", "context_management",
    "output_config", "output_format", "inference_geo", "speed", "cache_control", "diagnostics", "user_profile_id",
    "workspace_id",
})  # fmt: skip
ANTHROPIC_COUNT_FIELDS = frozenset({
    "model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers", "context_management",
    "output_config", "output_format", "cache_control", "speed", "user_profile_id", "workspace_id",
})  # fmt: skip
OVERLOADED = {"type": "overloaded_error", "message": "Overloaded"}


@dataclass
class AnthropicScript:
    blocks: list[Json]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: dict[str, int] | None = None


@dataclass
class FakeAnthropic(_Fake):
    name: str = "anthropic"
    cache_read_tokens: int = 0  # usage.cache_read_input_tokens of every answer
    cache_creation_tokens: int = 0  # usage.cache_creation_input_tokens of every answer
    bearer_ok: bool = True  # take the key from `Authorization: Bearer` too (the anthropic SDK >= 2 sends it so)
    scripts: deque[AnthropicScript] = field(default_factory=deque)
    extra_faults: ClassVar[frozenset[str]] = frozenset({"overloaded", "stream_error"})

    async def start(self) -> FakeAnthropic:
        await super().start()
        return self

    def script_next(
        self,
        *blocks: Json | str,
        stop_reason: str | None = None,
        stop_sequence: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        """Queue the content the next /v1/messages request is answered with (see the module doc)."""
        norm = [{"type": "text", "text": b} if isinstance(b, str) else dict(b) for b in blocks]
        self.scripts.append(AnthropicScript(norm, stop_reason, stop_sequence, usage))

    def _error(self, status: int, message: str | None = None, kind: str | None = None) -> web.Response:
        kind = kind or ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        if message is None:
            message = "Overloaded" if kind == "overloaded_error" else f"{self.name} failed with {status}"
        request_id = _rand_id("req_01")
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
        return web.json_response(body, status=status, headers={"request-id": request_id})

    def _stream_error_frame(self, fault: Fault) -> bytes:
        return _sse_event("error", {"type": "error", "error": fault.body or OVERLOADED})

    async def _answer(self, request: web.Request, body: bytes, fault: Fault | None) -> web.StreamResponse:
        if fault is not None and fault.kind == "overloaded":
            return self._error(529)
        if request.method != "POST" or request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return self._error(404, "Not Found")
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("Authorization", "")
        if not key and self.bearer_ok and bearer.startswith("Bearer "):
            key = bearer.removeprefix("Bearer ")
        if not key:
            return self._error(401, "x-api-key header is required")
        if key in self.reject_keys:
            return self._error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "anthropic-version: header is required")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(400, "There was an error parsing the body of your request")
        counting = request.path.endswith("/count_tokens")
        problem = self._check(payload, counting)
        if problem is not None:
            return self._error(400, problem)
        if counting:
            return web.json_response({"input_tokens": self._input_tokens(payload)})
        script = self.scripts.popleft() if self.scripts else None
        msg = self._message(payload, script)
        if payload.get("stream"):
            return await self._stream(request, msg, fault)
        return web.json_response(msg, headers={"request-id": _rand_id("req_01")})

    def _check(self, payload: Any, counting: bool) -> str | None:
        if not isinstance(payload, dict):
            return "Input should be a valid dictionary"
        if not self.strict:
            return None
        required = ("model", "messages") if counting else ("model", "messages", "max_tokens")
        for name in required:
            if name not in payload:
                return f"{name}: Field required"
        known = ANTHROPIC_COUNT_FIELDS if counting else ANTHROPIC_MESSAGES_FIELDS
        for name in payload:
            if name not in known:
                return f"{name}: Extra inputs are not permitted"
        for i, m in enumerate(payload["messages"]):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system"):
                return f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
        return None

    @staticmethod
    def _input_tokens(payload: Json) -> int:
        return estimate_tokens({k: payload[k] for k in ("system", "tools", "messages") if k in payload})

    @staticmethod
    def last_user_text(payload: Json) -> str:
        for m in reversed(payload.get("messages") or []):
            if m.get("role") != "user":
                continue
            content = m.get("content")
            if isinstance(content, str):
                return content
            texts = [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]
            return " ".join(texts)
        return ""

    def _message(self, payload: Json, script: AnthropicScript | None) -> Json:
        if script is None:
            script = AnthropicScript([{"type": "text", "text": f"echo: {self.last_user_text(payload)}"}])
        blocks = [self._complete(b) for b in script.blocks]
        stop_reason = script.stop_reason or ("tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn")
        usage = {
            "input_tokens": self._input_tokens(payload),
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": self.cache_creation_tokens, "ephemeral_1h_input_tokens": 0},
            "output_tokens": estimate_tokens(blocks),
            "service_tier": "standard",
        }
        usage.update(script.usage or {})
        return {
            "id": _rand_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": payload.get("model"),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": script.stop_sequence,
            "usage": usage,
        }

    @staticmethod
    def _complete(block: Json) -> Json:
        """A scripted block as the API would return it: ids and signatures filled in."""
        b = dict(block)
        if b["type"] == "tool_use":
            b.setdefault("id", _rand_id("toolu_01"))
            b.setdefault("input", {})
            return {"type": "tool_use", "id": b["id"], "name": b["name"], "input": b["input"]}
        if b["type"] == "thinking":
            b.setdefault("signature", _signature(b["thinking"]))
        return b

    def _events(self, msg: Json) -> list[tuple[str, Json]]:
        usage = msg["usage"]
        start_usage = {**usage, "output_tokens": 1}
        start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
        events: list[tuple[str, Json]] = [("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(msg["content"]):
            kind = block["type"]
            deltas: list[Json] = []
            if kind == "text":
                opening: Json = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
            elif kind == "thinking":
                opening = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "tool_use":
                opening = {**block, "input": {}}
                parts = ["", *pieces(json.dumps(block["input"]), 4)]
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
            else:  # redacted_thinking and the like: whole in the start event
                opening = block
            events.append(
                ("content_block_start", {"type": "content_block_start", "index": i, "content_block": opening})
            )
            if i == 0:
                events.append(("ping", {"type": "ping"}))
            events.extend(
                ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas
            )
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        if not msg["content"]:
            events.append(("ping", {"type": "ping"}))
        final_usage = {
            k: usage[k]
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
        }
        delta = {"stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    async def _stream(self, request: web.Request, msg: Json, fault: Fault | None) -> web.StreamResponse:
        frames = [_sse_event(name, data) for name, data in self._events(msg)]
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "request-id": _rand_id("req_01"),
        }
        return await self._write_stream(request, frames, fault, headers)


def _sse_event(name: str, data: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# ------------------------------------------------------------------------------------------------ Gemini

GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GEMINI_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_GEMINI_REQUEST_FIELDS = (
    "contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig", "cachedContent",
    "labels", "serviceTier", "store", "model",
)  # fmt: skip


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


GEMINI_GENERATE_FIELDS = frozenset(_GEMINI_REQUEST_FIELDS) | {_snake(n) for n in _GEMINI_REQUEST_FIELDS}
GEMINI_COUNT_FIELDS = frozenset({"contents", "generateContentRequest", "generate_content_request"})
MISSING_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API key or other form of API consumer identity to call this API."
)
SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
]


@dataclass
class GeminiScript:
    parts: list[Json]
    finish_reason: str = "STOP"
    block_reason: str | None = None
    usage: dict[str, int] | None = None


@dataclass
class FakeGemini(_Fake):
    name: str = "gemini"
    cached_tokens: int = 0  # usageMetadata.cachedContentTokenCount (counted in promptTokenCount too)
    scripts: deque[GeminiScript] = field(default_factory=deque)
    query_keys: list[str] = field(default_factory=list)  # every `key=` seen in a query string: should stay empty

    async def start(self) -> FakeGemini:
        await super().start()
        return self

    def script_next(
        self,
        *parts: Json | str,
        finish_reason: str = "STOP",
        block_reason: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        """Queue what the next generateContent / streamGenerateContent is answered with (see the module doc)."""
        norm = [{"text": p} if isinstance(p, str) else dict(p) for p in parts]
        self.scripts.append(GeminiScript(norm, finish_reason, block_reason, usage))

    def _error(self, status: int, message: str | None = None, kind: str | None = None) -> web.Response:
        err: Json = {
            "code": status,
            "message": message or GEMINI_MESSAGES.get(status, f"{self.name} failed with {status}"),
            "status": kind or GEMINI_STATUSES.get(status, "UNKNOWN"),
        }
        return web.json_response({"error": err}, status=status)

    async def _answer(self, request: web.Request, body: bytes, fault: Fault | None) -> web.StreamResponse:
        if "key" in request.query:
            self.query_keys.append(request.query["key"])
        path = request.path
        if request.method != "POST" or not path.startswith("/v1beta/models/") or ":" not in path:
            return self._error(404, f"Method not found: {path}", "NOT_FOUND")
        model, _, method = path.removeprefix("/v1beta/models/").rpartition(":")
        if method not in ("generateContent", "streamGenerateContent", "countTokens"):
            return self._error(404, f"Method not found: {method}", "NOT_FOUND")
        key = request.headers.get("x-goog-api-key")
        if not key:
            return self._error(403, MISSING_KEY)
        if key in self.reject_keys:
            return self._bad_key()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(400, "Invalid JSON payload received.")
        problem = self._check(payload, method == "countTokens")
        if problem is not None:
            return self._error(400, problem)
        if method == "countTokens":
            inner = payload.get("generateContentRequest") or payload.get("generate_content_request") or payload
            n = self._prompt_tokens(inner)
            return web.json_response({"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]})
        script = self.scripts.popleft() if self.scripts else None
        if script is None:
            script = GeminiScript([{"text": f"echo: {self.last_user_text(payload)}"}])
        response_id = _rand_id("", 23)
        if method == "generateContent":
            return web.json_response(self._response(payload, model, response_id, script))
        return await self._stream(request, payload, model, response_id, script, fault)

    def _bad_key(self) -> web.Response:
        message = "API key not valid. Please pass a valid API key."
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
        ]
        err = {"code": 400, "message": message, "status": "INVALID_ARGUMENT", "details": details}
        return web.json_response({"error": err}, status=400)

    def _check(self, payload: Any, counting: bool) -> str | None:
        if not isinstance(payload, dict):
            return "Invalid JSON payload received. Expected an object."
        if not self.strict:
            return None
        known = GEMINI_COUNT_FIELDS if counting else GEMINI_GENERATE_FIELDS
        for name in payload:
            if name not in known:
                return f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
        if not counting and not payload.get("contents"):
            return "* GenerateContentRequest.contents: contents is not specified\n"
        for content in payload.get("contents") or []:
            if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
                return "Please use a valid role: user, model."
        return None

    def _prompt_tokens(self, payload: Json) -> int:
        fields = ("systemInstruction", "system_instruction", "tools", "contents")
        return estimate_tokens({k: payload[k] for k in fields if k in payload})

    @staticmethod
    def last_user_text(payload: Json) -> str:
        for content in reversed(payload.get("contents") or []):
            if content.get("role", "user") == "user":
                return " ".join(p["text"] for p in content.get("parts") or [] if "text" in p)
        return ""

    def _usage(self, prompt: int, candidates: int, thoughts: int, override: dict[str, int] | None) -> Json:
        prompt += self.cached_tokens
        usage: Json = {"promptTokenCount": prompt}
        if candidates:
            usage["candidatesTokenCount"] = candidates
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = self.cached_tokens
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        usage["totalTokenCount"] = prompt + candidates + thoughts
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        usage.update(override or {})
        return usage

    @staticmethod
    def _counts(parts: list[Json]) -> tuple[int, int]:
        """Candidate and thought tokens of some parts."""
        thought = [p for p in parts if p.get("thought")]
        answer = [p for p in parts if not p.get("thought")]
        return (estimate_tokens(answer) if answer else 0), (estimate_tokens(thought) if thought else 0)

    def _candidate(self, parts: list[Json], finish: str | None) -> Json:
        cand: Json = {}
        if parts:
            cand["content"] = {"role": "model", "parts": parts}
        if finish is not None:
            cand["finishReason"] = finish
            if finish == "SAFETY":
                cand["safetyRatings"] = SAFETY_RATINGS
        cand["index"] = 0
        return cand

    def _response(self, payload: Json, model: str, response_id: str, script: GeminiScript) -> Json:
        prompt = self._prompt_tokens(payload)
        out: Json = {}
        if script.block_reason is not None:
            out["promptFeedback"] = {"blockReason": script.block_reason, "safetyRatings": SAFETY_RATINGS}
            out["usageMetadata"] = self._usage(prompt, 0, 0, script.usage)
        else:
            parts = [] if script.finish_reason == "SAFETY" else script.parts
            out["candidates"] = [self._candidate(parts, script.finish_reason)]
            out["usageMetadata"] = self._usage(prompt, *self._counts(parts), script.usage)
        out["modelVersion"] = model
        out["responseId"] = response_id
        return out

    def _chunks(self, payload: Json, model: str, response_id: str, script: GeminiScript) -> list[Json]:
        if script.block_reason is not None:
            return [self._response(payload, model, response_id, script)]
        groups: list[list[Json]] = []  # the parts of each chunk
        for part in script.parts:
            if "functionCall" in part:
                if groups and all("functionCall" in p for p in groups[-1]):
                    groups[-1].append(part)  # parallel calls ride together
                else:
                    groups.append([part])
            elif "text" in part:
                texts = pieces(part["text"]) or [""]
                for j, text in enumerate(texts):
                    piece = {k: v for k, v in part.items() if k != "thoughtSignature" or j == len(texts) - 1}
                    groups.append([{**piece, "text": text}])
            else:
                groups.append([part])
        separate_end = script.finish_reason == "SAFETY" or not groups
        if separate_end:
            groups.append([])
        prompt = self._prompt_tokens(payload)
        final = self._counts(script.parts)  # the last chunk counts what generateContent would
        chunks: list[Json] = []
        so_far: list[Json] = []
        for i, group in enumerate(groups):
            so_far.extend(group)
            last = i == len(groups) - 1
            answer, thought = final if last else (min(n, f) for n, f in zip(self._counts(so_far), final, strict=True))
            chunks.append(
                {
                    "candidates": [self._candidate(group, script.finish_reason if last else None)],
                    "usageMetadata": self._usage(prompt, answer, thought, script.usage if last else None),
                    "modelVersion": model,
                    "responseId": response_id,
                }
            )
        return chunks

    async def _stream(
        self,
        request: web.Request,
        payload: Json,
        model: str,
        response_id: str,
        script: GeminiScript,
        fault: Fault | None,
    ) -> web.StreamResponse:
        chunks = self._chunks(payload, model, response_id, script)
        if request.query.get("alt") == "sse":
            frames = [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks]
            return await self._write_stream(request, frames, fault, {"Content-Type": "text/event-stream"})
        frames = [
            (b"[" if i == 0 else b",\r\n") + orjson.dumps(c, option=orjson.OPT_INDENT_2) for i, c in enumerate(chunks)
        ]
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        return await self._write_stream(request, frames, fault, headers, trailer=b"]")
