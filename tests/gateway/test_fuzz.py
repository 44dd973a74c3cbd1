"""Random bodies, headers, methods and paths: every answer is a well-formed error or a success.

One gateway (and fake vendor) serves every example; each example asserts the answer's shape and
that the gateway neither failed (500) nor leaked a traceback.
"""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import KEYS, channel

PATHS = [
    *["/v1/chat/completions"] * 10, "/openai/v1/chat/completions", "/nope/v1/chat/completions",
    "/v1/chat/completion", "/v1/chat/completions/x", "/", "/v1/completions", "/v1/responses", "/v1/embeddings",
    "/v1/engines/gpt-4o/embeddings", "/v1/moderations", "/v1/rerank", "/v1/images/generations", "/v1/images/edits",
    "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/models", "/v1/models/gpt-4o", "/v1/files", "/v1/files/x",
    "/v1/realtime", "/v1/messages", "/v1beta/models", "/v1beta/models/gpt-4o:generateContent",
]
METHODS = ["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH"]
MODELS = ["gpt-4o", "gpt-4o-mini", "nope", "", "m" * 300, "gpt-\x00", "\u00e9\u00e8"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
# Mostly chat-shaped bodies with fields of any type, so that the examples get past the JSON parser.
chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(MODELS) | json_values,
        "messages": st.just([{"role": "user", "content": "hi"}]) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "max_tokens": json_values,
    },
).map(lambda v: json.dumps(v).encode())
valid_chats = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o", "gpt-4o-mini"]), "messages": st.just([{"role": "user", "content": "hi"}])},
    optional={"stream": st.booleans(), "stream_options": json_values, "temperature": json_values, "n": json_values},
).map(lambda v: json.dumps(v).encode())
raw_bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | st.text(max_size=100).map(str.encode)
bodies = valid_chats | chat_bodies | raw_bodies

header_values = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + "\u00e9", max_size=40)
headers = st.dictionaries(
    st.sampled_from([
        "Content-Type", "Authorization", "X-API-Key", "X-Request-Id", "X-Gateway-Tag", "Accept", "OpenAI-Beta",
        "X-Anything", "Accept-Encoding", "X-Goog-Api-Key",
    ]),
    header_values | st.sampled_from(["application/json", "Bearer test-key", "text/plain", "multipart/form-data",
                                     "gzip", "deflate", "br"]),
    max_size=5,
)


@pytest.fixture
async def fuzz_gateway(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "limits": {"max_body_mb": 0.001},
                                "channels": [channel("a", vendor, platform="openai")]})
    async with aiohttp.ClientSession() as session:
        yield gw, session


def check_answer(status: int, content_type: str, body: bytes, path: str) -> None:
    assert status != 500 and status < 600, (status, body[:300])
    assert b"Traceback" not in body
    if status < 400:
        if content_type == "text/event-stream":
            end = b'data: {"type":"message_stop"}' if "/messages" in path else b"data: [DONE]"  # Anthropic's end, or OpenAI's
            assert body.rstrip().endswith(end) or b'"error"' in body
        elif path.endswith("/chat/completions"):
            assert orjson.loads(body)["choices"]
        elif content_type == "application/json":
            orjson.loads(body)
        return
    payload: Any = orjson.loads(body)
    if path.startswith("/v1beta/"):
        assert set(payload["error"]) == {"code", "message", "status"}
    elif path.startswith("/v1/messages"):
        assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}
    elif status >= 502:  # a vendor error (e.g. the fake vendor refusing what it got) is passed as it came
        assert "error" in payload
    else:
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]


@pytest.mark.slow  # run by `make test` and CI; `make test-fast` leaves it out
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    body=bodies,
    hdrs=headers,
    authorized=st.sampled_from([True, True, True, False]),
    encoding=st.sampled_from([None, None, None, None, "gzip", "deflate", "br", "identity", "x-junk"]),
)
async def test_random_requests_get_well_formed_answers(fuzz_gateway, method, path, body, hdrs, authorized, encoding):
    gw, session = fuzz_gateway
    if authorized:
        hdrs = {**hdrs, "Authorization": "Bearer test-key"}
    if encoding:
        hdrs = {**hdrs, "Content-Encoding": encoding}
    url = URL(gw.url + path, encoded=True)
    with contextlib.suppress(ValueError):  # header values aiohttp itself refuses to send
        async with session.request(method, url, data=body, headers=hdrs, skip_auto_headers=["Content-Type"]) as r:
            answer = await r.read()
            event(f"status {r.status}")
            check_answer(r.status, r.content_type, answer, path)
            if path not in ("/",):
                assert r.headers.get("X-Request-Id")
