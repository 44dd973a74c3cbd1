"""OpenAI (chat and Responses), Gemini and Anthropic clients (their real SDKs) on an Anthropic vendor
(tests/fakeprotocols.FakeAnthropic): what the client gets, what the vendor got, and the usage row."""

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

from tests.conftest import KEYS, channel
from tests.fakevendor import Fault
from tests.gateway.translate.conftest import claude_channel

MODEL = "claude-test-1"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}}


async def setup(fakes, gateway_factory, **fake_kw: Any):
    fake = await fakes("anthropic", **fake_kw)
    gw = await gateway_factory({"keys": KEYS, "channels": [claude_channel(fake)]})
    return fake, gw


def assert_vendor_auth(seen: Any, channel_key: str = "vk-claude-secret") -> None:
    """The vendor got the channel's key in x-api-key and a version; never the client's key."""
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert headers["x-api-key"] == channel_key
    assert headers["anthropic-version"]
    assert "authorization" not in headers
    assert "test-key" not in str(seen.headers) and "key" not in seen.query


# ------------------------------------------------------------------------------ OpenAI chat client


async def test_chat_text_and_system(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory, cache_read_tokens=4)
    client = gw.client()
    answer = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "echo: hi"
    assert answer.choices[0].finish_reason == "stop" and answer.model == MODEL
    seen = fake.requests[-1]
    assert seen.path == "/v1/messages"
    assert_vendor_auth(seen)
    body = seen.json()
    assert body["system"] == "be brief" and body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert body["max_tokens"] > 0 and body["model"] == MODEL
    vendor_in = fake._input_tokens(body)
    assert answer.usage.prompt_tokens == vendor_in + 4 and answer.usage.prompt_tokens_details.cached_tokens == 4
    [row] = await gw.rows()
    assert (row["endpoint"], row["status"], row["channel"], row["stream"]) == ("chat/completions", 200, "claude", 0)
    assert (row["prompt_tokens"], row["cached_tokens"], row["estimated"]) == (vendor_in + 4, 4, 0)
    assert row["completion_tokens"] == answer.usage.completion_tokens > 0


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_usage_only_when_asked(fakes, gateway_factory, include_usage):
    fake, gw = await setup(fakes, gateway_factory, cache_read_tokens=2)
    client = gw.client()
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream me please"}], stream=True, **extra
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert fake.requests[-1].json()["stream"] is True
    [row] = await gw.rows()
    assert (row["endpoint"], row["stream"], row["status"], row["cached_tokens"], row["estimated"]) == ("chat/completions", 1, 200, 2, 0)
    if include_usage:
        [last] = usage_chunks
        assert last is chunks[-1] and last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (row["prompt_tokens"], row["completion_tokens"])
        assert last.usage.prompt_tokens_details.cached_tokens == 2
    else:
        assert usage_chunks == []
    assert row["completion_tokens"] > 1  # message_delta's count, not message_start's placeholder 1


async def test_chat_stream_arrives_in_pieces(fakes, gateway_factory):
    gate = asyncio.Event()
    fake, gw = await setup(fakes, gateway_factory, gate=gate)
    client = gw.client()
    stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    # The vendor has sent message_start only and holds the rest: a gateway that buffered would hang here.
    first = await asyncio.wait_for(stream.__anext__(), 5)
    assert first.choices[0].delta.role == "assistant"
    assert not gate.is_set()
    gate.set()
    rest = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == "echo: hi"
    assert len(fake.requests) == 1


async def test_chat_parallel_tool_calls_streamed_then_results(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    fake.script_next(
        {"type": "thinking", "thinking": "Two tools."},  # blocks 0 and 1 are no tool calls: calls count 0, 1
        "Checking.",
        {"type": "tool_use", "id": "toolu_01A", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "clock", "input": {}},
    )
    client = gw.client()
    question = [{"role": "user", "content": "weather and time?"}]
    stream = await client.chat.completions.create(
        model=MODEL, messages=question, tools=[WEATHER, CLOCK], stream=True, stream_options={"include_usage": True}
    )
    calls: dict[int, dict[str, Any]] = {}
    text, finish = "", None
    async for c in stream:
        if not c.choices:
            continue
        delta = c.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or ():
            call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                assert call["id"] is None  # the id comes once, with the first piece
                call["id"], call["name"] = tc.id, tc.function.name
            call["arguments"] += tc.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert text == "Checking." and finish == "tool_calls"
    assert [(calls[i]["id"], calls[i]["name"], orjson.loads(calls[i]["arguments"])) for i in (0, 1)] == [
        ("toolu_01A", "weather", {"city": "Paris"}),
        ("toolu_01B", "clock", {}),
    ]
    sent = fake.requests[-1].json()
    assert [t["name"] for t in sent["tools"]] == ["weather", "clock"]
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]

    # Next turn: the results go back under the same ids.
    history = [
        *question,
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": calls[i]["id"], "type": "function", "function": {"name": calls[i]["name"], "arguments": calls[i]["arguments"]}}
            for i in (0, 1)
        ]},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "noon"},
    ]  # fmt: skip
    answer = await client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER, CLOCK])
    assert answer.choices[0].finish_reason == "stop"
    sent = fake.requests[-1].json()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [(b["type"], b.get("id")) for b in sent[1]["content"]] == [("text", None), ("tool_use", "toolu_01A"), ("tool_use", "toolu_01B")]
    assert sent[1]["content"][1]["input"] == {"city": "Paris"}
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "noon"},
    ]
    rows = await gw.rows()
    assert [r["status"] for r in rows] == [200, 200]


async def test_chat_image_data_url(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    client = gw.client()
    content = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content == "echo: what is it"
    [message] = fake.requests[-1].json()["messages"]
    assert message["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


async def test_chat_thinking_round_trip(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    fake.script_next({"type": "thinking", "thinking": "Let me think about it."}, "Forty-two.")
    client = gw.client()
    question = [{"role": "user", "content": "meaning of life?"}]
    answer = await client.chat.completions.create(model=MODEL, messages=question, reasoning_effort="low", max_completion_tokens=4000)
    sent = fake.requests[-1].json()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024} and sent["max_tokens"] == 4000
    message = answer.choices[0].message
    extra = message.model_extra or {}
    assert message.content == "Forty-two."
    assert extra["reasoning_content"] == "Let me think about it."
    [block] = extra["thinking_blocks"]
    signature = block["signature"]
    assert block["type"] == "thinking" and signature

    # The assistant message sent back as it came: the vendor gets the same signed thinking block.
    history = [*question, {"role": "assistant", "content": message.content, **extra}, {"role": "user", "content": "sure?"}]
    await client.chat.completions.create(model=MODEL, messages=history, reasoning_effort="low", max_completion_tokens=4000)
    sent = fake.requests[-1].json()
    assistant = sent["messages"][1]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "Let me think about it.", "signature": signature}
    assert assistant["content"][1] == {"type": "text", "text": "Forty-two."}
    assert sent["thinking"]["type"] == "enabled"

    # Streamed: reasoning deltas, then the signature in a delta of its own, then the text.
    fake.script_next({"type": "thinking", "thinking": "Hmm, again."}, "Still 42.")
    stream = await client.chat.completions.create(model=MODEL, messages=question, reasoning_effort="low", max_completion_tokens=4000, stream=True)
    reasoning, signatures, text = "", [], ""
    async for c in stream:
        delta = (c.choices[0].delta.model_extra or {}) if c.choices else {}
        reasoning += delta.get("reasoning_content") or ""
        signatures += [delta["thinking_signature"]] if delta.get("thinking_signature") else []
        text += (c.choices[0].delta.content or "") if c.choices else ""
    assert (reasoning, text, len(signatures)) == ("Hmm, again.", "Still 42.", 1)

    # A streamed tool-use turn put together by the openai SDK's helper (which joins the extra fields) and
    # sent back with the tool result: the vendor gets the thinking block, signed, before the tool_use, so
    # thinking can stay on (Anthropic refuses a replayed tool-use turn without it while thinking is on).
    fake.script_next({"type": "thinking", "thinking": "I need the clock."}, {"type": "tool_use", "id": "toolu_01C", "name": "clock", "input": {}})
    async with client.chat.completions.stream(
        model=MODEL, messages=question, tools=[CLOCK], reasoning_effort="low", max_completion_tokens=4000
    ) as helper:
        final = await helper.get_final_completion()
    streamed = final.choices[0].message.model_dump(exclude_none=True)
    vendor_signature = fake._complete({"type": "thinking", "thinking": "I need the clock."})["signature"]  # what the fake sent
    assert (streamed["reasoning_content"], streamed["thinking_signature"]) == ("I need the clock.", vendor_signature)
    history = [*question, streamed, {"role": "tool", "tool_call_id": "toolu_01C", "content": "noon"}]
    await client.chat.completions.create(model=MODEL, messages=history, tools=[CLOCK], reasoning_effort="low", max_completion_tokens=4000)
    sent = fake.requests[-1].json()
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["thinking", "tool_use"]
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": "I need the clock.", "signature": vendor_signature}
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}


async def test_chat_finish_reasons(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    client = gw.client()
    fake.script_next("cut sh", stop_reason="max_tokens")
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3)
    assert answer.choices[0].finish_reason == "length" and fake.requests[-1].json()["max_tokens"] == 3
    fake.script_next("cut sh", stop_reason="max_tokens")
    stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3, stream=True)
    assert [c.choices[0].finish_reason async for c in stream if c.choices and c.choices[0].finish_reason] == ["length"]
    fake.script_next("done", stop_sequence="END", stop_reason="stop_sequence")
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stop=["END", " "])
    assert answer.choices[0].finish_reason == "stop"
    assert fake.requests[-1].json()["stop_sequences"] == ["END"]  # Anthropic refuses blank ones
    fake.script_next({"type": "tool_use", "name": "clock", "input": {}})
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[CLOCK], tool_choice="required")
    assert answer.choices[0].finish_reason == "tool_calls" and answer.choices[0].message.tool_calls[0].function.name == "clock"
    assert fake.requests[-1].json()["tool_choice"] == {"type": "any"}


async def test_chat_response_format_is_not_sent(fakes, gateway_factory):
    # Anthropic has no response_format: it is dropped (a strict vendor refuses unknown fields).
    fake, gw = await setup(fakes, gateway_factory)
    client = gw.client()
    answer = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"}
    )
    assert answer.choices[0].message.content == "echo: json please"
    assert "response_format" not in fake.requests[-1].json()


async def test_chat_vendor_400_is_an_openai_error(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("status", status=400, body={"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}))
    client = gw.client()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "prompt is too long" in caught.value.message
    assert isinstance(caught.value.body, dict) and "message" in caught.value.body
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"]) == (400, 1, "claude")


async def test_chat_stream_error_event_reaches_the_client(fakes, gateway_factory):
    # Anthropic ends a failing stream with `event: error`; an OpenAI stream carries errors as a data
    # event {"error": {...}} (and no [DONE]), which the openai SDK raises as an APIError.
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("stream_error", after_chunks=4))  # message_start, block start, ping, one delta
    client = gw.client()
    stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello there"}], stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        async for c in stream:
            got.append(c)
    assert not isinstance(caught.value, openai.APIStatusError)  # raised from the stream, after a 200
    assert "Overloaded" in caught.value.message and caught.value.body["type"] == "overloaded_error"
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "echo: hello there"[:6]
    [row] = await gw.rows()
    # The client had its 200; the row says the stream broke (502, as for a dropped connection) and why.
    assert (row["stream"], row["status"], row["channel"]) == (1, 502, "claude")
    assert row["error"] == "upstream stream ended with an error: Overloaded"


# ------------------------------------------------------------------------------ Responses client


async def test_responses_client(fakes, gateway_factory):
    fake, gw = await setup(fakes, gateway_factory)
    client = gw.client()
    plain = await client.responses.create(model=MODEL, input="hi", instructions="brief", max_output_tokens=100)
    assert plain.output_text == "echo: hi" and plain.status == "completed"
    sent = fake.requests[-1].json()
    assert sent["system"] == "brief" and sent["max_tokens"] == 100
    assert_vendor_auth(fake.requests[-1])

    fake.script_next("Let me look.", {"type": "tool_use", "id": "toolu_01X", "name": "weather", "input": {"city": "Oslo"}})
    tools = [{"type": "function", "name": "weather", "parameters": WEATHER["function"]["parameters"]}]
    async with client.responses.stream(model=MODEL, input="weather in Oslo?", tools=tools) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "Let me look." == final.output_text
    [call] = [o for o in final.output if o.type == "function_call"]
    assert (call.call_id, call.name, orjson.loads(call.arguments)) == ("toolu_01X", "weather", {"city": "Oslo"})
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 1

    # The function's output goes back; the vendor sees a tool_result for the same id.
    follow = [
        {"role": "user", "content": "weather in Oslo?"},
        {"type": "function_call", "call_id": call.call_id, "name": "weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "rain"},
    ]
    answer = await client.responses.create(model=MODEL, input=follow, tools=tools)
    assert answer.output_text.startswith("echo:")
    sent = fake.requests[-1].json()["messages"]
    assert sent[1]["content"][-1]["id"] == "toolu_01X"
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_01X", "content": "rain"}
    rows = await gw.rows()
    assert [(r["endpoint"], r["stream"], r["channel"]) for r in rows] == [("responses", 0, "claude"), ("responses", 1, "claude"), ("responses", 0, "claude")]
    assert rows[1]["completion_tokens"] == final.usage.output_tokens


# ------------------------------------------------------------------------------ Gemini client


async def test_gemini_client_generate_stream_count(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory, cache_read_tokens=3)
    client = sdk("gemini", gw)
    config = types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=50)
    answer = await client.aio.models.generate_content(model=MODEL, contents="hello", config=config)
    assert answer.text == "echo: hello"
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert_vendor_auth(sent)
    assert sent.json()["system"] == "be brief" and sent.json()["max_tokens"] == 50
    assert answer.usage_metadata.cached_content_token_count == 3

    pieces = [r.text async for r in await client.aio.models.generate_content_stream(model=MODEL, contents="stream it")]
    assert len([p for p in pieces if p]) == 3 and "".join(p for p in pieces if p) == "echo: stream it"
    assert fake.requests[-1].json()["stream"] is True

    count = await client.aio.models.count_tokens(model=MODEL, contents="hello there")
    seen = fake.requests[-1]
    assert seen.path == "/v1/messages/count_tokens"  # answered by the vendor's count call
    assert_vendor_auth(seen)
    assert count.total_tokens == fake._input_tokens(seen.json())
    rows = await gw.rows()
    assert [(r["endpoint"], r["stream"], r["status"]) for r in rows] == [
        ("generateContent", 0, 200), ("streamGenerateContent", 1, 200), ("countTokens", 0, 200)
    ]
    assert rows[0]["cached_tokens"] == 3 and rows[1]["completion_tokens"] > 1
    assert rows[2]["prompt_tokens"] == 0  # counting is not billed


async def test_gemini_client_parallel_calls_then_responses(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory)
    fake.script_next(
        "Checking.",
        {"type": "tool_use", "id": "toolu_01A", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "weather", "input": {"city": "Oslo"}},
    )
    client = sdk("gemini", gw)
    declaration = types.FunctionDeclaration(
        name="weather", description="w", parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")})
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[declaration])], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
    )
    chunks = [c async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="weather?", config=config)]
    calls = [fc for c in chunks for fc in c.function_calls or ()]
    assert [(fc.id, fc.name, fc.args) for fc in calls] == [("toolu_01A", "weather", {"city": "Paris"}), ("toolu_01B", "weather", {"city": "Oslo"})]
    assert "".join(c.text or "" for c in chunks if not c.function_calls) == "Checking."
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert fake.requests[-1].json()["tools"][0]["input_schema"] == {"type": "object", "properties": {"city": {"type": "string"}}}

    # Next turn: the model's turn as the SDK kept it, and responses that name the function but give no id
    # (as most Gemini clients send them): each finds its call by name, in order.
    model_turn = types.Content(role="model", parts=[p for c in chunks for p in c.candidates[0].content.parts])
    answers = types.Content(role="user", parts=[
        types.Part(function_response=types.FunctionResponse(name="weather", response={"sky": "sun"})),
        types.Part(function_response=types.FunctionResponse(name="weather", response={"result": "snow"})),
    ])  # fmt: skip
    contents = [types.Content(role="user", parts=[types.Part(text="weather?")]), model_turn, answers]
    await client.aio.models.generate_content(model=MODEL, contents=contents, config=config)
    sent = fake.requests[-1].json()["messages"]
    assert [b.get("id") for b in sent[1]["content"] if b["type"] == "tool_use"] == ["toolu_01A", "toolu_01B"]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": '{"sky":"sun"}'},
        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "snow"},
    ]


async def test_gemini_client_stream_error_event(fakes, gateway_factory, sdk):
    # The vendor's mid-stream overloaded_error reaches a Gemini client as Gemini's own: 503 UNAVAILABLE.
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("stream_error", after_chunks=4))
    client = sdk("gemini", gw)
    got: list[Any] = []
    with pytest.raises(genai_errors.ServerError) as caught:
        async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="hello there"):
            got.append(c.text)
    assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")
    assert got == ["echo: "]


async def test_gemini_client_json_array_stream(fakes, gateway_factory):
    # No alt=sse: the translated stream is one JSON array, an element per event; a vendor error event
    # becomes the array's last element, as Gemini ends a failed array.
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("stream_error", after_chunks=5))
    body = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}

    async def array() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gw.url}/v1beta/models/{MODEL}:streamGenerateContent?key=test-key", json=body) as resp:
                assert resp.status == 200 and resp.content_type == "application/json"
                return orjson.loads(await resp.read())

    failed = await array()
    assert [i["candidates"][0]["content"]["parts"] for i in failed[:-1]] == [[{"text": "echo: "}], [{"text": "hello "}]]
    assert failed[-1] == {"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}}
    items = await array()
    text = "".join(p.get("text", "") for i in items for p in i["candidates"][0].get("content", {}).get("parts", []))
    assert text == "echo: hello there" and items[-1]["candidates"][0]["finishReason"] == "STOP"
    assert items[-1]["usageMetadata"]["promptTokenCount"] == fake._input_tokens(fake.requests[-1].json())
    for seen in fake.requests:
        assert_vendor_auth(seen)
        assert seen.query == {} and seen.json()["stream"] is True


async def test_gemini_client_vendor_400(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("status", status=400))
    client = sdk("gemini", gw)
    with pytest.raises(genai_errors.ClientError) as caught:
        await client.aio.models.generate_content(model=MODEL, contents="hello")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"


# ------------------------------------------------------------------------------ Anthropic client: passthrough


async def test_anthropic_passthrough_renames_model_only(fakes, gateway_factory, sdk):
    fake = await fakes("anthropic", cache_read_tokens=6)
    gw = await gateway_factory({"keys": KEYS, "channels": [claude_channel(fake, model_map={MODEL: "claude-upstream-9"})]})
    client = sdk("anthropic", gw)
    message = await client.messages.create(model=MODEL, max_tokens=64, system="sys", messages=[{"role": "user", "content": "hey"}])
    assert message.content[0].text == "echo: hey"
    seen = fake.requests[-1]
    assert_vendor_auth(seen)
    body = seen.json()
    assert body["model"] == "claude-upstream-9"
    assert body == {"model": "claude-upstream-9", "max_tokens": 64, "system": "sys", "messages": [{"role": "user", "content": "hey"}]}
    assert message.model == "claude-upstream-9"  # the vendor's answer, as it came

    # Without a model_map the bytes go as they came.
    raw = b'{"model":"claude-test-1", "max_tokens": 5,\n "messages":[{"role":"user","content":"raw"}]}'
    gw2 = await gateway_factory({"keys": KEYS, "channels": [claude_channel(fake)]})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gw2.url}/v1/messages", data=raw, headers={
            "x-api-key": "test-key", "anthropic-version": "2023-06-01", "anthropic-beta": "some-beta", "content-type": "application/json"
        }) as resp:  # fmt: skip
            assert resp.status == 200
    assert fake.requests[-1].body == raw
    assert fake.requests[-1].headers["anthropic-beta"] == "some-beta"
    assert fake.requests[-1].headers["anthropic-version"] == "2023-06-01"
    assert_vendor_auth(fake.requests[-1])

    [row] = await gw.rows()
    vendor_in = fake._input_tokens(body)
    assert (row["endpoint"], row["upstream_model"], row["prompt_tokens"], row["cached_tokens"]) == ("messages", "claude-upstream-9", vendor_in + 6, 6)


async def test_anthropic_passthrough_stream_usage_row(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory, cache_read_tokens=9, cache_creation_tokens=2)
    client = sdk("anthropic", gw)
    fake.script_next({"type": "thinking", "thinking": "hmm"}, "answer")
    async with client.messages.stream(model=MODEL, max_tokens=2000, messages=[{"role": "user", "content": "go"}],
                                      thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].signature
    body = fake.requests[-1].json()
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    [row] = await gw.rows()
    vendor_in = fake._input_tokens(body)
    # message_start's input and cache counts, message_delta's output count
    assert (row["stream"], row["prompt_tokens"], row["cached_tokens"]) == (1, vendor_in + 9 + 2, 9)
    assert row["completion_tokens"] == final.usage.output_tokens > 1 and row["estimated"] == 0


async def test_anthropic_count_tokens_passthrough(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory)
    client = sdk("anthropic", gw)
    count = await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "count me"}])
    seen = fake.requests[-1]
    assert seen.path == "/v1/messages/count_tokens"
    assert_vendor_auth(seen)
    assert count.input_tokens == fake._input_tokens(seen.json())
    [row] = await gw.rows()
    assert (row["endpoint"], row["prompt_tokens"]) == ("messages/count_tokens", 0)


async def test_anthropic_passthrough_400(fakes, gateway_factory, sdk):
    fake, gw = await setup(fakes, gateway_factory)
    fake.fail_next(Fault("status", status=400))
    client = sdk("anthropic", gw)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"


async def test_overloaded_fails_over_to_openai_vendor(fakes, gateway_factory, sdk, vendor):
    fake = await fakes("anthropic")
    fake.fail_next(Fault("overloaded"))
    gw = await gateway_factory({"keys": KEYS, "channels": [
        claude_channel(fake, priority=10),
        channel("oa", vendor, models=["claude-*"]),
    ]})  # fmt: skip
    client = sdk("anthropic", gw)
    message = await client.messages.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "hello from vendor" and message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert len(fake.requests) == 1 and vendor.requests[-1].path == "/v1/chat/completions"
    assert vendor.requests[-1].json()["messages"] == [{"role": "user", "content": "hi"}]
    assert vendor.requests[-1].headers["Authorization"] == "Bearer vk-oa-secret"

    # The same in a stream: the OpenAI vendor's chunks come as Anthropic events.
    fake.fail_next(Fault("overloaded"))
    async with client.messages.stream(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].text == "tok0 tok1 tok2 tok3 tok4 " and streamed.usage.output_tokens == 5
    assert len(fake.requests) == 2 and vendor.requests[-1].json()["stream_options"] == {"include_usage": True}
    rows = await gw.rows()
    assert [(r["status"], r["attempts"], r["channel"], r["endpoint"], r["stream"]) for r in rows] == [
        (200, 2, "oa", "messages", 0), (200, 2, "oa", "messages", 1)
    ]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(11, 3), (11, 5)]
