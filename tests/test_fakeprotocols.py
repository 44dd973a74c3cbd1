"""The fake Anthropic and Gemini vendors speak the real protocols: the real SDKs, pointed at them, understand them."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from anthropic.types import MessageParam, TextBlock, ThinkingBlock, ToolUseBlock
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.fakeprotocols import FakeAnthropic, FakeGemini
from tests.fakevendor import Fault

HELLO: list[MessageParam] = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
SIG = base64.b64encode(b"opaque-thought-signature").decode()


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    fake = await FakeAnthropic().start()
    yield fake
    await fake.close()


@pytest.fixture
async def fake_gemini() -> AsyncIterator[FakeGemini]:
    fake = await FakeGemini().start()
    yield fake
    await fake.close()


@pytest.fixture
async def claude(fake_anthropic: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=fake_anthropic.base_url, api_key="k", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def gemini(fake_gemini: FakeGemini) -> AsyncIterator[genai.Client]:
    # Our own aiohttp session: the SDK's own subclasses ClientSession, which aiohttp warns about (an error here).
    async with aiohttp.ClientSession() as session:
        opts = types.HttpOptions(base_url=fake_gemini.base_url, api_version="v1beta", aiohttp_client=session)
        client = genai.Client(api_key="k", http_options=opts)
        yield client
        await client.aio.aclose()


async def raw_post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        return r.status, await r.read()


def signature_of(msg: anthropic.types.Message) -> str:
    block = msg.content[0]
    assert isinstance(block, ThinkingBlock) and block.signature
    return block.signature


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an Anthropic SSE body."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if frame.strip():
            name_line, data_line = frame.split("\n")
            out.append((name_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))))
    return out


# --------------------------------------------------------------------------------------------- Anthropic


async def test_anthropic_create_echoes(fake_anthropic: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    msg = await claude.messages.create(model="claude-test-1", max_tokens=64, messages=HELLO)
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-test-1"
    assert len(msg.content) == 1 and isinstance(msg.content[0], TextBlock)
    assert msg.content[0].text == "echo: hello there"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens == 0
    seen = fake_anthropic.requests[0]
    assert seen.path == "/v1/messages" and seen.headers["anthropic-version"]
    # anthropic SDK 2.x sends the key as a bearer token, earlier ones in x-api-key: the fake takes either
    assert seen.headers.get("x-api-key") == "k" or seen.headers.get("Authorization") == "Bearer k"
    assert seen.json()["max_tokens"] == 64

    count = await claude.messages.count_tokens(model="claude-test-1", messages=HELLO)
    assert count.input_tokens == msg.usage.input_tokens  # the same estimate
    assert fake_anthropic.requests[1].path == "/v1/messages/count_tokens"


async def test_anthropic_stream_text(fake_anthropic: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    fake_anthropic.cache_read_tokens = 7
    async with claude.messages.stream(model="claude-test-2", max_tokens=64, messages=HELLO) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert len(texts) == 3 and "".join(texts) == "echo: hello there"
    assert isinstance(final.content[0], TextBlock) and final.content[0].text == "echo: hello there"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 1
    assert final.usage.cache_read_input_tokens == 7
    assert fake_anthropic.requests[0].json()["stream"] is True


async def test_anthropic_stream_grammar(fake_anthropic: FakeAnthropic) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {"model": "m", "max_tokens": 10, "messages": HELLO, "stream": True}
    started = time.monotonic()
    status, raw = await raw_post(fake_anthropic.base_url + "/v1/messages", body, headers)
    assert status == 200
    assert time.monotonic() - started >= 8 * fake_anthropic.delay_s  # spaced out: streaming is observable
    events = sse_events(raw)
    names = [n for n, _ in events]
    assert names == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2][1]["usage"]["output_tokens"] > 1


async def test_anthropic_tool_use_and_thinking(fake_anthropic: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    blocks: list[Any] = [
        {"type": "thinking", "thinking": "The user wants weather in two cities."},
        "Let me check both.",
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "name": "get_weather", "input": {"city": "Tokyo", "units": ["c", "f"]}},
    ]
    for _ in range(2):
        fake_anthropic.script_next(*blocks)
    kw: Any = {"model": "claude-test-3", "max_tokens": 1024, "messages": HELLO, "tools": [WEATHER_TOOL]}
    kw["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    plain = await claude.messages.create(**kw)
    async with claude.messages.stream(**kw) as stream:
        deltas = [e.delta.type async for e in stream if e.type == "content_block_delta"]
        streamed = await stream.get_final_message()
    assert deltas.count("signature_delta") == 1 and deltas.count("input_json_delta") >= 6
    for msg in (plain, streamed):
        assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
        assert msg.stop_reason == "tool_use"
        thinking, text, call1, call2 = msg.content
        assert isinstance(thinking, ThinkingBlock) and thinking.thinking == "The user wants weather in two cities."
        assert thinking.signature == signature_of(plain)
        assert isinstance(text, TextBlock) and text.text == "Let me check both."
        assert isinstance(call1, ToolUseBlock) and call1.id == "toolu_01A" and call1.input == {"city": "Paris"}
        assert isinstance(call2, ToolUseBlock) and call2.id.startswith("toolu_") and call2.name == "get_weather"
        assert call2.input == {"city": "Tokyo", "units": ["c", "f"]}
    # once the scripts are used up, it echoes again
    again = await claude.messages.create(model="m", max_tokens=5, messages=HELLO)
    assert isinstance(again.content[0], TextBlock) and again.content[0].text == "echo: hello there"


async def test_anthropic_overloaded(fake_anthropic: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    fake_anthropic.fail_next(Fault("overloaded"), Fault("status", status=529), Fault("status", status=429))
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError) as err:
            await claude.messages.create(model="m", max_tokens=5, messages=HELLO)
        assert err.value.status_code == 529
        assert err.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]
        assert err.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as rl:
        await claude.messages.create(model="m", max_tokens=5, messages=HELLO)
    assert rl.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_anthropic_mid_stream_error(fake_anthropic: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    fake_anthropic.fail_next(Fault("stream_error", after_chunks=4))
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        async with claude.messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
            async for t in stream.text_stream:
                texts.append(t)
    assert texts == ["echo: "]  # message_start, content_block_start, ping, one delta, then the error
    assert err.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_anthropic_rejects_what_the_api_rejects(fake_anthropic: FakeAnthropic) -> None:
    url = fake_anthropic.base_url + "/v1/messages"
    body = {"model": "m", "max_tokens": 5, "messages": HELLO}
    cases: list[tuple[dict[str, str], dict[str, Any], int, str]] = [
        ({"anthropic-version": "2023-06-01"}, body, 401, "authentication_error"),
        ({"x-api-key": "k"}, body, 400, "invalid_request_error"),
        ({"x-api-key": "k", "anthropic-version": "2023-06-01"}, body, 200, ""),
        ({"x-api-key": "k", "anthropic-version": "2023-06-01"}, {"model": "m", "messages": HELLO}, 400,
         "invalid_request_error"),
        ({"x-api-key": "k", "anthropic-version": "2023-06-01"}, {**body, "stream_options": {}}, 400,
         "invalid_request_error"),
        ({"x-api-key": "k", "anthropic-version": "2023-06-01"},
         {**body, "messages": [{"role": "developer", "content": "x"}, *HELLO]}, 400, "invalid_request_error"),
    ]  # fmt: skip
    fake_anthropic.reject_keys.add("bad")
    cases.append(({"x-api-key": "bad", "anthropic-version": "2023-06-01"}, body, 401, "authentication_error"))
    cases.append(({"Authorization": "Bearer k", "anthropic-version": "2023-06-01"}, body, 200, ""))
    for headers, payload, status, kind in cases:
        got, raw = await raw_post(url, payload, headers)
        assert got == status, (headers, payload, raw)
        if kind:
            err = orjson.loads(raw)
            assert err["type"] == "error" and err["error"]["type"] == kind and err["error"]["message"]
    fake_anthropic.bearer_ok = False  # only the documented x-api-key
    got, _ = await raw_post(url, body, {"Authorization": "Bearer k", "anthropic-version": "2023-06-01"})
    assert got == 401


# ------------------------------------------------------------------------------------------------ Gemini


async def test_gemini_generate_echoes(fake_gemini: FakeGemini, gemini: genai.Client) -> None:
    resp = await gemini.aio.models.generate_content(model="gemini-2.5-flash", contents="hello there")
    assert resp.text == "echo: hello there"
    cand = resp.candidates[0]  # type: ignore[index]
    assert cand.finish_reason == types.FinishReason.STOP and cand.index == 0
    assert cand.content is not None and cand.content.role == "model"
    assert resp.model_version == "gemini-2.5-flash" and resp.response_id
    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert usage.thoughts_token_count is None and usage.cached_content_token_count is None
    seen = fake_gemini.requests[0]
    assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert seen.headers["x-goog-api-key"] == "k" and "key" not in seen.query and fake_gemini.query_keys == []

    count = await gemini.aio.models.count_tokens(model="gemini-2.5-flash", contents="hello there")
    assert count.total_tokens == usage.prompt_token_count
    assert fake_gemini.requests[1].path.endswith(":countTokens")


async def test_gemini_stream_sse(fake_gemini: FakeGemini, gemini: genai.Client) -> None:
    fake_gemini.cached_tokens = 4
    chunks = [c async for c in await gemini.aio.models.generate_content_stream(model="gemini-2.5-pro", contents="hi")]
    assert len(chunks) == 3 and "".join(c.text or "" for c in chunks) == "echo: hi"
    assert [c.candidates[0].finish_reason for c in chunks] == [None, None, types.FinishReason.STOP]  # type: ignore[index]
    counts = [c.usage_metadata.candidates_token_count or 0 for c in chunks]  # type: ignore[union-attr]
    assert all(counts) and counts == sorted(counts)  # on every chunk, cumulative
    last = chunks[-1].usage_metadata
    assert last is not None and last.cached_content_token_count == 4
    assert last.total_token_count == last.prompt_token_count + last.candidates_token_count  # type: ignore[operator]
    assert len({c.response_id for c in chunks}) == 1
    seen = fake_gemini.requests[0]
    assert seen.path.endswith(":streamGenerateContent") and seen.query == {"alt": "sse"}
    whole = await gemini.aio.models.generate_content(model="gemini-2.5-pro", contents="hi")
    assert whole.usage_metadata == last  # the stream ends on the counts generateContent gives


async def test_gemini_stream_json_array(fake_gemini: FakeGemini) -> None:
    url = fake_gemini.base_url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    status, raw = await raw_post(url, {"contents": [{"parts": [{"text": "hi"}]}]}, {"x-goog-api-key": "k"})
    assert status == 200
    chunks = orjson.loads(raw)
    assert isinstance(chunks, list) and len(chunks) == 3
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "echo: hi"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in chunks[-1]


async def test_gemini_function_calls_and_thoughts(fake_gemini: FakeGemini, gemini: genai.Client) -> None:
    parts: list[Any] = [
        {"text": "Thinking about the weather.", "thought": True},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "get_weather", "args": {"city": "Tokyo"}}},
    ]
    for _ in range(2):
        fake_gemini.script_next(*parts)
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", description="Weather")])
    config = types.GenerateContentConfig(tools=[tool], thinking_config=types.ThinkingConfig(include_thoughts=True))
    resp = await gemini.aio.models.generate_content(model="gemini-2.5-flash", contents="weather?", config=config)
    calls = resp.function_calls
    assert calls is not None and [(c.name, c.args) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]  # fmt: skip
    got = resp.candidates[0].content.parts  # type: ignore[index, union-attr]
    assert got is not None and got[0].thought is True and got[0].text == "Thinking about the weather."
    assert got[1].thought_signature == b"opaque-thought-signature" and got[2].thought_signature is None
    assert resp.candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert resp.usage_metadata is not None and resp.usage_metadata.thoughts_token_count

    stream = await gemini.aio.models.generate_content_stream(model="gemini-2.5-pro", contents="weather?", config=config)
    chunks = [c async for c in stream]
    streamed = [p for c in chunks for p in c.candidates[0].content.parts]  # type: ignore[index, union-attr]
    thoughts = [p.text or "" for p in streamed if p.thought]
    calls_chunk = [c for c in chunks if c.function_calls]
    assert "".join(thoughts) == "Thinking about the weather." and len(thoughts) == 3
    assert len(calls_chunk) == 1 and len(calls_chunk[0].function_calls or []) == 2  # parallel calls together
    assert [p.thought_signature for p in streamed if p.function_call] == [b"opaque-thought-signature", None]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert chunks[0].usage_metadata.thoughts_token_count  # type: ignore[union-attr]


async def test_gemini_safety(fake_gemini: FakeGemini, gemini: genai.Client) -> None:
    fake_gemini.script_next("Here is how", finish_reason="SAFETY")
    chunks = [c async for c in await gemini.aio.models.generate_content_stream(model="g", contents="bad")]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.SAFETY  # type: ignore[index]
    assert chunks[-1].candidates[0].content is None  # type: ignore[index]
    assert any(r.blocked for r in chunks[-1].candidates[0].safety_ratings or [])  # type: ignore[index]
    fake_gemini.script_next(block_reason="SAFETY")
    resp = await gemini.aio.models.generate_content(model="g", contents="worse")
    assert not resp.candidates and resp.prompt_feedback is not None
    assert resp.prompt_feedback.block_reason == types.BlockedReason.SAFETY


async def test_gemini_errors(fake_gemini: FakeGemini, gemini: genai.Client) -> None:
    fake_gemini.fail_next(Fault("status", status=503), Fault("status", status=429))
    with pytest.raises(genai_errors.ServerError) as err:
        await gemini.aio.models.generate_content(model="g", contents="hi")
    assert err.value.code == 503 and err.value.status == "UNAVAILABLE"
    with pytest.raises(genai_errors.ClientError) as cerr:
        await gemini.aio.models.generate_content(model="g", contents="hi")
    assert cerr.value.code == 429 and cerr.value.status == "RESOURCE_EXHAUSTED"

    url = fake_gemini.base_url + "/v1beta/models/g:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    status, raw = await raw_post(url + "?key=leaked", body, {})
    assert status == 403 and orjson.loads(raw)["error"]["status"] == "PERMISSION_DENIED"
    assert fake_gemini.query_keys == ["leaked"]
    fake_gemini.reject_keys.add("bad")
    status, raw = await raw_post(url, body, {"x-goog-api-key": "bad"})
    assert status == 400 and orjson.loads(raw)["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    for wrong in ({**body, "stream": True}, {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, {}):
        status, raw = await raw_post(url, wrong, {"x-goog-api-key": "k"})
        err_body = orjson.loads(raw)["error"]
        assert status == 400 and err_body["code"] == 400 and err_body["status"] == "INVALID_ARGUMENT"


async def test_stream_faults_cut_streams(fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini) -> None:
    fake_gemini.fail_next(Fault("drop", after_chunks=1))
    url = fake_gemini.base_url + "/v1beta/models/g:streamGenerateContent?alt=sse"
    with pytest.raises(aiohttp.ClientPayloadError):
        await raw_post(url, {"contents": [{"parts": [{"text": "hi"}]}]}, {"x-goog-api-key": "k"})
    fake_anthropic.fail_next(Fault("drop", after_chunks=2))
    body = {"model": "m", "max_tokens": 5, "messages": HELLO, "stream": True}
    with pytest.raises(aiohttp.ClientPayloadError):
        await raw_post(fake_anthropic.base_url + "/v1/messages", body, {"x-api-key": "k", "anthropic-version": "1"})
    with pytest.raises(ValueError, match="no fault kind"):
        fake_gemini.fail_next(Fault("stream_error"))
