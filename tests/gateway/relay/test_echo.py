"""A vendor that echoes the channel's key: masked in every byte path the gateway inspects (issue 19, item 8).

Passthrough bytes it does not search (a binary body) are the stated limit (see gateway.relay.pump).
"""

from __future__ import annotations

import pytest

from tests.conftest import KEYS
from tests.faultkit import MESSAGES, post

KEY = "vk-echo-SECRET-1234567"
JSON = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"your key is %s"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}' % KEY.encode()
SSE = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
       b'data: {"error":{"message":"quota exceeded for key %s"}}\n\n'
       b"data: [DONE]\n\n") % KEY.encode()


def _answer(content_type: bytes, body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


@pytest.mark.parametrize(("case", "raw", "stream"), [
    ("header", _answer(b"application/json", b'{"choices":[]}', b"X-Debug-Key: " + KEY.encode()), False),
    ("json-body", _answer(b"application/json", JSON), False),
    ("sse-event", _answer(b"text/event-stream", SSE), True),
    ("sse-event-usage-asked", _answer(b"text/event-stream", SSE), "asked"),
])
async def test_an_echoed_channel_key_is_masked(case, raw, stream, raw_vendor, gateway_factory):
    raw_vendor.answer = lambda _: raw
    gw = await gateway_factory({"keys": KEYS, "channels": [
        {"name": "echo", "provider": "openai", "base_url": raw_vendor.base_url, "api_keys": [KEY], "models": ["gpt-*"]}]})
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": bool(stream)}
    if stream == "asked":  # the client asked for usage itself: chunks pass as they came, still searched
        body["stream_options"] = {"include_usage": True}
    status, answer, headers = await post(gw, body)
    assert status == 200
    assert KEY not in str(dict(headers)) and KEY.encode() not in answer
    assert b"***" in answer or "***" in str(dict(headers))
    assert KEY.encode() in raw_vendor.requests[0]  # the vendor did get it: the key is the channel's
