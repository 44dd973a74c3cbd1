"""Any client protocol on any vendor protocol: which translation an attempt needs, and the stream
filter that applies it event by event.

Translation goes through one pivot, OpenAI chat (docs/translation.md): each protocol is a codec with
a client half (its requests to chat, chat answers and chunks to it) and a vendor half (chat requests
to it, its answers and events to chat). `plan` picks the two halves for (client, vendor); where the
protocols are the same it returns None and the bytes go through. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import orjson

from providers.base import ANTHROPIC, GEMINI, OPENAI
from providers.sse import complete_end, event_parts, split_events
from providers.translate import anthropic, chat, gemini, responses
from providers.translate.common import State

# The client endpoints that generate (the rest of the OpenAI surface only passes through) and those
# that count tokens, by client protocol.
_GENERATE = {OPENAI: ("chat/completions", "responses"), ANTHROPIC: ("messages",), GEMINI: ("generateContent", "streamGenerateContent")}
_COUNT = {ANTHROPIC: "messages/count_tokens", GEMINI: "countTokens"}


class Encoder(Protocol):
    def chunk(self, chunk: dict[str, Any]) -> bytes: ...
    def end(self) -> bytes: ...


class Decoder(Protocol):
    def event(self, name: str | None, data: Any) -> list[dict[str, Any]]: ...
    def end(self) -> list[dict[str, Any]]: ...


class ClientCodec(Protocol):
    def request_to_chat(self, body: dict[str, Any], state: State) -> dict[str, Any]: ...
    def answer_from_chat(self, answer: dict[str, Any], state: State) -> dict[str, Any]: ...
    @property
    def StreamFromChat(self) -> Callable[[State], Encoder]: ...


class CountingClient(ClientCodec, Protocol):
    def count_request_to_chat(self, body: dict[str, Any], state: State) -> dict[str, Any]: ...
    def count_answer(self, tokens: int) -> dict[str, Any]: ...


class VendorCodec(Protocol):
    def request_from_chat(self, body: dict[str, Any], state: State) -> dict[str, Any]: ...
    def answer_to_chat(self, answer: dict[str, Any], state: State) -> dict[str, Any]: ...
    def count_request_from_chat(self, body: dict[str, Any], state: State) -> dict[str, Any]: ...
    def count_tokens_of(self, answer: dict[str, Any]) -> int | None: ...
    @property
    def StreamToChat(self) -> Callable[[State], Decoder]: ...


_VENDORS: dict[str, VendorCodec] = {OPENAI: chat, ANTHROPIC: anthropic, GEMINI: gemini}


class Untranslatable(Exception):
    """The client's endpoint has no counterpart in the vendor's protocol (embeddings on Anthropic)."""


@dataclass(slots=True)
class Translation:
    """One attempt's way between the client's protocol and the vendor's.

    `endpoint`: what to call at the vendor (its provider's endpoint name), or None when the vendor
    has no such call and the gateway answers itself (`local_answer`: token counts on OpenAI).
    `sse`: the client's stream is SSE (False: Gemini's JSON-array framing).
    """

    client: ClientCodec | None  # None: the protocols are the same, only the framing changes
    vendor: VendorCodec
    state: State
    endpoint: str | None
    count: bool = False
    sse: bool = True

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The client's request body as the vendor takes it."""
        state = self.state
        state.client_request = body
        if self.client is None:
            return body
        if self.count:
            counting = cast(CountingClient, self.client)
            return self.vendor.count_request_from_chat(counting.count_request_to_chat(body, state), state)
        return self.vendor.request_from_chat(self.client.request_to_chat(body, state), state)

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The vendor's (JSON) answer as the client takes it."""
        if self.client is None:
            return payload
        if self.count:
            return cast(CountingClient, self.client).count_answer(self.vendor.count_tokens_of(payload) or 0)
        return self.client.answer_from_chat(self.vendor.answer_to_chat(payload, self.state), self.state)

    def local_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A token count the vendor cannot give, estimated from the request (never a made-up 0)."""
        counting = cast(CountingClient, self.client)
        return counting.count_answer(chat.estimate_count(counting.count_request_to_chat(body, self.state)))

    def stream(self, max_event: int) -> Converter | ArrayFrame:
        """The pump filter turning the vendor's SSE events into the client's stream."""
        if self.client is None:
            return ArrayFrame(max_event)
        # Only a Gemini client streams without SSE (its JSON-array framing).
        encoder = self.client.StreamFromChat(self.state) if self.sse else gemini.StreamFromChat(self.state, array=True)
        return Converter(self.vendor.StreamToChat(self.state), encoder, max_event)


def plan(client: str, endpoint: str, vendor: str, *, stream: bool, responses_over_chat: bool, array: bool, model: str) -> Translation | None:
    """How a request to the client's `endpoint` reaches a vendor speaking `vendor`; None: as it is.

    `responses_over_chat`: the (OpenAI) vendor has no Responses API. `array`: a Gemini client asked
    for a stream without `alt=sse`, so wants the JSON-array framing (the gateway always asks Gemini
    vendors for SSE). Raises Untranslatable when the vendor's protocol has no such call.
    """
    vendor_codec = _VENDORS[vendor]
    if client == vendor and not (endpoint == "responses" and responses_over_chat):
        if array and stream:
            return Translation(None, vendor_codec, State(model, stream), endpoint, sse=False)
        return None
    state = State(model, stream)
    if endpoint == _COUNT.get(client):
        codec: ClientCodec = anthropic if client == ANTHROPIC else gemini
        return Translation(codec, vendor_codec, state, _COUNT.get(vendor), count=True)
    if endpoint not in _GENERATE[client]:
        raise Untranslatable(f"/{endpoint} has no counterpart in the {vendor} protocol")
    codec = responses if endpoint == "responses" else anthropic if client == ANTHROPIC else gemini if client == GEMINI else chat
    target = "chat/completions" if vendor == OPENAI else "messages" if vendor == ANTHROPIC else "streamGenerateContent" if stream else "generateContent"
    return Translation(codec, vendor_codec, state, target, sse=not array)


class _Events:
    """A stream pump filter that reads whole SSE events: the start of an event waits for its end, and
    one that grows past `max_event` without ending is dropped rather than held. Only whole output
    events ever go out, so a keepalive or error event may follow at any time."""

    __slots__ = ("_buf", "_max_event")
    at_boundary = True

    def __init__(self, max_event: int) -> None:
        self._buf = b""
        self._max_event = max_event

    def feed(self, data: bytes) -> bytes:
        if self._buf:
            data = self._buf + data
        end = complete_end(data)
        if end == 0:
            self._buf = data if len(data) <= self._max_event else b""
            return b""
        self._buf = data[end:]
        return self._events(data[:end])

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return (self._events(rest) if rest.strip() else b"") + self._end()

    def _events(self, data: bytes) -> bytes:
        """Whole events in, what goes to the client out."""
        raise NotImplementedError

    def _end(self) -> bytes:
        """The vendor's stream ended: what closes the client's."""
        raise NotImplementedError


class Converter(_Events):
    """The vendor's SSE in, the client's stream out, one event at a time (through the pivot)."""

    __slots__ = ("_decode", "_direct", "_encode")

    def __init__(self, decode: Decoder, encode: Encoder, max_event: int) -> None:
        super().__init__(max_event)
        self._decode = decode
        self._encode = encode
        # A chat vendor's chunks are pivot chunks already (but for renamed tools): straight to the encoder.
        self._direct = isinstance(decode, chat.StreamToChat) and decode.unchanged

    def _events(self, data: bytes) -> bytes:
        # Runs for every event of every translated stream: the usual case (one-line `data:` events,
        # LF line ends) is read inline, the rest by providers.sse.
        decode, encode, direct = self._decode, self._encode, self._direct
        out: list[bytes] = []
        for event in split_events(data):
            if not event:
                continue
            if event.startswith(b"data: ") and b"\n" not in event:
                name, raw = None, event[6:]
            else:
                name, raw = event_parts(event)
            if not raw or raw == b"[DONE]":
                continue
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # not JSON: nothing the client's protocol could carry
            if direct and type(payload) is dict and "error" not in payload:
                out.append(encode.chunk(payload))
                continue
            for chunk in decode.event(name, payload):
                out.append(encode.chunk(chunk))
        return out[0] if len(out) == 1 else b"".join(out)

    def _end(self) -> bytes:
        encode = self._encode
        return b"".join(encode.chunk(c) for c in self._decode.end()) + encode.end()


class ArrayFrame(_Events):
    """Gemini's stream framing for a client that did not ask for SSE: one JSON array, sent an element
    at a time as the vendor's SSE events come (`[`, `,\\r\\n` between, `]` at the end)."""

    __slots__ = ("_started",)

    def __init__(self, max_event: int) -> None:
        super().__init__(max_event)
        self._started = False

    def _events(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for event in split_events(data):
            raw = event_parts(event)[1]
            if raw:
                out.append(b",\r\n" + raw if self._started else b"[" + raw)
                self._started = True
        return b"".join(out)

    def _end(self) -> bytes:
        return b"]" if self._started else b"[]"
