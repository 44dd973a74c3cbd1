"""OpenAI chat, Anthropic and Gemini clients (their real SDKs) on a Gemini vendor
(tests/fakeprotocols.FakeGemini): what the client gets, what the vendor got, and the usage row."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from google.genai import errors as genai_errors
from google.genai import types

from tests.conftest import KEYS
from tests.fakevendor import Fault
from tests.gateway.translate.conftest import gemini_channel

MODEL = "gemini-test-1"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()
SIG_A = base64.b64encode(b"signature of the first call \xff\xfe?").decode()  # '+', '/' and '=' in it: URL-unsafe base64
SIG_B = base64.b64encode(b"second signature").decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def setup(fakes, gateway_factory, **fake_kw: Any):
    fake = await fakes("gemini", **fake_kw)
    gw = await gateway_factory({"keys": KEYS, "channels": [gemini_channel(fake)]})
    return fake, gw


def assert_vendor_auth(fake: Any, seen: Any) -> None:
    """The vendor got the channel's key in x-goog-api-key, nothing in the query, never the client's key."""
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert headers["x-goog-api-key"] == "vk-gemini-secret"
    assert "authorization" not in headers and "x-api-key" not in headers
    assert "key" not in seen.query and fake.query_keys == []
    assert "test-key" not in str(seen.headers)


def stream_calls(chunks: list[Any]) -> dict[int, dict[str, Any]]:
    """The tool calls of an OpenAI chat stream, put together by index."""
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or ()) if c.choices else ():
            call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                assert call["id"] is None  # the id comes once, with the first piece
                call["id"], call["name"] = tc.id, tc.function.name
            call["arguments"] += tc.function.arguments or ""
    return calls


# ------------------------------------------------------------------------------ OpenAI chat client


async def test_chat_text_and_system(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory, cached_tokens=5)
    client = gw.client()
    answer = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], max_tokens=40, temperature=0.3
    )
    assert answer.choices[0].message.content == "echo: hi"
    assert answer.choices[0].finish_reason == "stop" and answer.model == MODEL
    seen = fake.requests[-1]
    assert seen.path == GENERATE and seen.query == {}
    assert_vendor_auth(fake, seen)
    body = seen.json()
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"maxOutputTokens": 40, "temperature": 0.3},
    }
    prompt = fake._prompt_tokens(body) + 5
    assert (answer.usage.prompt_tokens, answer.usage.prompt_tokens_details.cached_tokens) == (prompt, 5)
    [row] = await gw.rows()
    assert (row["endpoint"], row["status"], row["channel"], row["stream"]) == ("chat/completions", 200, "gemini", 0)
    assert (row["prompt_tokens"], row["cached_tokens"], row["estimated"]) == (prompt, 5, 0)
    assert row["completion_tokens"] == answer.usage.completion_tokens > 0


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_usage_only_when_asked(fakes, gateway_factory, include_usage):
    fake, gw = await setup(fakes, gateway_factory, cached_tokens=2)
    client = gw.client()
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream me please"}], stream=True, **extra
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream me please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    seen = fake.requests[-1]
    assert seen.path == STREAM and seen.query == {"alt": "sse"}
    assert_vendor_auth(fake, seen)
    assert "stream" not in seen.json() and "stream_options" not in seen.json()
    usage_chunks = [c for c in chunks if c.usage is not None]
    [row] = await gw.rows()
    assert (row["endpoint"], row["stream"], row["status"], row["cached_tokens"], row["estimated"]) == ("chat/completions", 1, 200, 2, 0)
    if include_usage:
        [last] = usage_chunks  # once, at the end, though Gemini repeats usageMetadata on every chunk
        assert last is chunks[-1] and last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (row["prompt_tokens"], row["completion_tokens"])
    else:
        assert usage_chunks == []


async def test_chat_stream_arrives_in_pieces(fakes, gateway_factory):
    gate = asyncio.Event()
    fake, gw = await setup(fakes, gateway_factory, gate=gate)
    client = gw.client()
    stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello there"}], stream=True)
    # The vendor has sent its first piece of text only and holds the rest.
    first = await asyncio.wait_for(stream.__anext__(), 5)
    assert first.choices[0].delta.content == "echo: "
    assert not gate.is_set()
    gate.set()
    rest = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices) == "echo: hello there"
    assert len(fake.requests) == 1


async def test_chat_parallel_function_calls_then_results(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    fake.script_next(
        {"text": "Thinking it over.", "thought": True},
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG_A},
        {"functionCall": {"name": "weather", "args": {"city": "Tokyo"}}},
    )
    client = gw.client()
    question = [{"role": "user", "content": "weather in Paris and Tokyo?"}]
    stream = await client.chat.completions.create(
        model=MODEL, messages=question, tools=[WEATHER], stream=True, stream_options={"include_usage": True}, reasoning_effort="medium"
    )
    chunks = [c async for c in stream]
    calls = stream_calls(chunks)
    assert [(calls[i]["name"], orjson.loads(calls[i]["arguments"])) for i in (0, 1)] == [("weather", {"city": "Paris"}), ("weather", {"city": "Tokyo"})]
    assert calls[0]["id"] != calls[1]["id"]
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices)
    assert reasoning == "Thinking it over."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    sent = fake.requests[-1].json()
    assert sent["tools"] == [{"functionDeclarations": [{
        "name": "weather", "description": "Weather for a city",
        "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
    }]}]  # fmt: skip
    assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 8192, "includeThoughts": True}
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens > 0
    [row] = await gw.rows()
    assert row["reasoning_tokens"] == chunks[-1].usage.completion_tokens_details.reasoning_tokens

    # Next turn: the calls go back with their signature, each result under the function's name.
    history = [
        *question,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": calls[i]["id"], "type": "function", "function": {"name": "weather", "arguments": calls[i]["arguments"]}} for i in (0, 1)
        ]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": '{"sky": "rain"}'},
    ]  # fmt: skip
    answer = await client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER])
    assert answer.choices[0].message.content == "echo: "  # the last user turn holds function responses only
    contents = fake.requests[-1].json()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    first, second = contents[1]["parts"]
    assert first["thoughtSignature"] == SIG_A and first["functionCall"]["args"] == {"city": "Paris"}
    assert "thoughtSignature" not in second and second["functionCall"]["args"] == {"city": "Tokyo"}
    responses = [p["functionResponse"] for p in contents[2]["parts"]]
    assert [(r["name"], r["response"]) for r in responses] == [("weather", {"result": "sunny"}), ("weather", {"sky": "rain"})]
    # each result names the call it answers
    assert [r.get("id") for r in responses] == [first["functionCall"].get("id"), second["functionCall"].get("id")]


async def test_chat_function_call_not_streamed(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    fake.script_next({"functionCall": {"name": "weather", "args": {"city": "Rome"}, "id": "fc-1"}, "thoughtSignature": SIG_B})
    client = gw.client()
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Rome?"}], tools=[WEATHER], tool_choice={
        "type": "function", "function": {"name": "weather"}})  # fmt: skip
    assert answer.choices[0].finish_reason == "tool_calls"
    [call] = answer.choices[0].message.tool_calls
    assert call.id.startswith("fc-1") and call.function.name == "weather" and orjson.loads(call.function.arguments) == {"city": "Rome"}
    assert fake.requests[-1].json()["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
    history = [
        {"role": "user", "content": "Rome?"},
        answer.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "warm"},
    ]
    await client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER])
    contents = fake.requests[-1].json()["contents"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "weather", "args": {"city": "Rome"}, "id": "fc-1"}, "thoughtSignature": SIG_B}]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "weather", "response": {"result": "warm"}, "id": "fc-1"}}]


async def test_chat_image_data_url(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    client = gw.client()
    content = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content == "echo: what is it"
    [turn] = fake.requests[-1].json()["contents"]
    assert turn["parts"] == [{"text": "what is it"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]


async def test_chat_finish_reasons(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    client = gw.client()
    ask: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    fake.script_next("cut sh", finish_reason="MAX_TOKENS")
    assert (await client.chat.completions.create(**ask)).choices[0].finish_reason == "length"
    fake.script_next("Here is how", finish_reason="SAFETY")
    answer = await client.chat.completions.create(**ask)
    assert answer.choices[0].finish_reason == "content_filter"
    fake.script_next("Here is how", finish_reason="SAFETY")
    stream = await client.chat.completions.create(**ask, stream=True)
    assert [c.choices[0].finish_reason async for c in stream if c.choices and c.choices[0].finish_reason] == ["content_filter"]
    fake.script_next(block_reason="SAFETY")
    answer = await client.chat.completions.create(**ask)
    assert answer.choices[0].finish_reason == "content_filter" and not answer.choices[0].message.content
    fake.script_next(block_reason="SAFETY")
    stream = await client.chat.completions.create(**ask, stream=True)
    assert [c.choices[0].finish_reason async for c in stream if c.choices and c.choices[0].finish_reason] == ["content_filter"]
    rows = await gw.rows()
    assert [r["status"] for r in rows] == [200] * 5


async def test_chat_response_format(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    client = gw.client()
    ask: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "json"}]}
    await client.chat.completions.create(**ask, response_format={"type": "json_object"})
    assert fake.requests[-1].json()["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    await client.chat.completions.create(**ask, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}})
    config = fake.requests[-1].json()["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}


async def test_chat_vendor_400_is_an_openai_error(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("status", status=400, body={"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}}))
    client = gw.client()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "invalid argument" in caught.value.message
    [row] = await gw.rows()
    assert (row["status"], row["attempts"]) == (400, 1)


# ------------------------------------------------------------------------------ Anthropic client


async def test_anthropic_client_stream_tools_and_signature_round_trip(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory, cached_tokens=7)
    fake.script_next(
        "Let me check.",
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG_A},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
    )
    client = sdk("anthropic", gw)
    tools: list[Any] = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    question: list[Any] = [{"role": "user", "content": "weather?"}]
    async with client.messages.stream(model=MODEL, max_tokens=300, system="be brief", tools=tools, messages=question) as stream:
        message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Let me check." and message.stop_reason == "tool_use"
    assert [b.input for b in message.content[1:]] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert message.content[1].id != message.content[2].id
    assert message.usage.cache_read_input_tokens == 7
    seen = fake.requests[-1]
    assert seen.path == STREAM and seen.query == {"alt": "sse"}
    assert_vendor_auth(fake, seen)
    body = seen.json()
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]} and body["generationConfig"] == {"maxOutputTokens": 300}

    history = [
        *question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": message.content[1].id, "content": "sunny"},
            {"type": "tool_result", "tool_use_id": message.content[2].id, "content": [{"type": "text", "text": "snow"}]},
        ]},
    ]  # fmt: skip
    answer = await client.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=history)
    assert answer.content[0].text == "echo: "  # the last user turn holds function responses only
    contents = fake.requests[-1].json()["contents"]
    model_parts = contents[1]["parts"]
    assert model_parts[0] == {"text": "Let me check."}
    assert model_parts[1]["thoughtSignature"] == SIG_A  # the same signature, on the same call
    assert model_parts[1]["functionCall"]["args"] == {"city": "Paris"} and "thoughtSignature" not in model_parts[2]
    responses = [p["functionResponse"] for p in contents[2]["parts"]]
    assert [(r["name"], r["response"]) for r in responses] == [("get_weather", {"result": "sunny"}), ("get_weather", {"result": "snow"})]
    rows = await gw.rows()
    assert [(r["endpoint"], r["stream"], r["cached_tokens"]) for r in rows] == [("messages", 1, 7), ("messages", 0, 7)]
    assert rows[0]["completion_tokens"] == message.usage.output_tokens
    assert rows[0]["prompt_tokens"] == message.usage.input_tokens + 7 == fake._prompt_tokens(body) + 7  # message_delta's, not the estimate


async def test_anthropic_client_stream_arrives_in_pieces(fakes, gateway_factory, sdk):
    gate = asyncio.Event()
    fake, gw = await setup(fakes, gateway_factory, gate=gate)
    client = sdk("anthropic", gw)
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hello there"}]) as stream:
        events = stream.__aiter__()
        # The vendor has sent its first piece of text and holds the rest: a gateway that buffered would hang.
        while (event := await asyncio.wait_for(events.__anext__(), 5)).type != "text":
            pass
        assert event.text == "echo: " and not gate.is_set()
        gate.set()
        message = await stream.get_final_message()
    assert message.content[0].text == "echo: hello there" and message.stop_reason == "end_turn"
    assert fake.requests[-1].query == {"alt": "sse"}


async def test_anthropic_client_count_tokens_by_vendor(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory)
    client = sdk("anthropic", gw)
    count = await client.messages.count_tokens(model=MODEL, system="sys", messages=[{"role": "user", "content": "count me"}])
    seen = fake.requests[-1]
    assert seen.path == f"/v1beta/models/{MODEL}:countTokens"
    assert_vendor_auth(fake, seen)
    assert count.input_tokens == fake._prompt_tokens(seen.json()) > 0


async def test_anthropic_client_vendor_error(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("status", status=400))
    client = sdk("anthropic", gw)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------ Gemini client: passthrough


async def test_gemini_passthrough_generate_stream_count(fakes, gateway_factory, sdk):
    fake = await fakes("gemini", cached_tokens=4)
    gw = await gateway_factory({"keys": KEYS, "channels": [gemini_channel(fake, model_map={MODEL: "gemini-upstream-9"})]})
    client = sdk("gemini", gw)
    config = types.GenerateContentConfig(system_instruction="sys", max_output_tokens=30)
    answer = await client.aio.models.generate_content(model=MODEL, contents="hello", config=config)
    assert answer.text == "echo: hello" and answer.model_version == "gemini-upstream-9"  # the vendor's answer as it came
    seen = fake.requests[-1]
    assert seen.path == "/v1beta/models/gemini-upstream-9:generateContent"
    assert_vendor_auth(fake, seen)
    assert seen.json() == {"contents": [{"parts": [{"text": "hello"}], "role": "user"}],
                           "systemInstruction": {"parts": [{"text": "sys"}], "role": "user"}, "generationConfig": {"maxOutputTokens": 30}}

    chunks = [c async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="stream it")]
    assert "".join(c.text or "" for c in chunks) == "echo: stream it" and len(chunks) == 3
    seen = fake.requests[-1]
    assert seen.path == "/v1beta/models/gemini-upstream-9:streamGenerateContent" and seen.query == {"alt": "sse"}
    assert_vendor_auth(fake, seen)

    count = await client.aio.models.count_tokens(model=MODEL, contents="count me")
    seen = fake.requests[-1]
    assert seen.path == "/v1beta/models/gemini-upstream-9:countTokens"
    assert count.total_tokens == fake._prompt_tokens(seen.json())

    rows = await gw.rows()
    assert [(r["endpoint"], r["stream"], r["upstream_model"]) for r in rows] == [
        ("generateContent", 0, "gemini-upstream-9"), ("streamGenerateContent", 1, "gemini-upstream-9"), ("countTokens", 0, "gemini-upstream-9")
    ]
    assert rows[0]["cached_tokens"] == rows[1]["cached_tokens"] == 4
    assert rows[1]["completion_tokens"] == chunks[-1].usage_metadata.candidates_token_count
    assert rows[2]["prompt_tokens"] == 0  # counting is not billed


async def test_gemini_passthrough_json_array_stream(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    body = {"contents": [{"role": "user", "parts": [{"text": "array please"}]}]}
    async with aiohttp.ClientSession() as session:
        # No alt=sse: a JSON array, rebuilt from the vendor's SSE (the gateway always asks for SSE).
        async with session.post(f"{gw.url}{STREAM}?key=test-key", json=body) as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            items = orjson.loads(await resp.read())
        async with session.post(f"{gw.url}{STREAM}?alt=sse", json=body, headers={"x-goog-api-key": "test-key"}) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            raw = await resp.read()
    assert isinstance(items, list) and len(items) == 3
    assert "".join(i["candidates"][0]["content"]["parts"][0]["text"] for i in items) == "echo: array please"
    assert items[-1]["candidates"][0]["finishReason"] == "STOP" and items[-1]["usageMetadata"]["promptTokenCount"] > 0
    events = [orjson.loads(e[len(b"data: "):]) for e in raw.split(b"\r\n\r\n") if e]
    assert [e["candidates"] for e in events] == [i["candidates"] for i in items]  # the same elements either way
    for seen in fake.requests:
        assert seen.path == STREAM and seen.query == {"alt": "sse"}
        assert_vendor_auth(fake, seen)
    rows = await gw.rows()
    assert [(r["stream"], r["status"], r["key_name"]) for r in rows] == [(1, 200, "app1"), (1, 200, "app1")]
    assert rows[0]["completion_tokens"] == items[-1]["usageMetadata"]["candidatesTokenCount"]


async def test_gemini_passthrough_error(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("status", status=400))
    client = sdk("gemini", gw)
    with pytest.raises(genai_errors.ClientError) as caught:
        await client.aio.models.generate_content(model=MODEL, contents="hello")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"


async def test_gemini_passthrough_count_names_the_upstream_model_inside(fakes, gateway_factory):
    # countTokens may carry a whole generateContentRequest, which names the model again: renamed too.
    fake = await fakes("gemini")
    gw = await gateway_factory({"keys": KEYS, "channels": [gemini_channel(fake, model_map={MODEL: "gemini-upstream-9"})]})
    inner = {"model": f"models/{MODEL}", "contents": [{"role": "user", "parts": [{"text": "count me"}]}]}
    async with aiohttp.ClientSession() as session, session.post(
        f"{gw.url}/v1beta/models/{MODEL}:countTokens", headers={"x-goog-api-key": "test-key"}, json={"generateContentRequest": inner}
    ) as resp:
        assert resp.status == 200, await resp.text()
    assert fake.requests[-1].json()["generateContentRequest"]["model"] == "models/gemini-upstream-9"
