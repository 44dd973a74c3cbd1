"""Anthropic, Gemini and Responses clients (their real SDKs) on an OpenAI-compatible vendor."""

from __future__ import annotations

import asyncio

import anthropic
import orjson
import pytest
from google.genai import types

from tests.conftest import KEYS, channel


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    out: dict = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27, "prompt_tokens_details": {"cached_tokens": 5}}


async def test_anthropic_client_non_stream(vendor, gateway_factory, sdk):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    client = sdk("anthropic", gw)
    message = await client.messages.create(
        model="gpt-4o", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "hello from vendor"
    assert message.stop_reason == "end_turn" and message.model == "gpt-4o"
    assert message.usage.output_tokens == 3
    sent = vendor.requests[-1]
    assert sent.path == "/v1/chat/completions"
    body = sent.json()
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent.headers["Authorization"] == "Bearer vk-oa-secret"
    assert "x-api-key" not in {k.lower() for k in sent.headers}
    [row] = await gw.rows()
    assert (row["endpoint"], row["status"], row["channel"]) == ("messages", 200, "oa")
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (11, 3, 2)


async def test_anthropic_client_stream_assembles_and_arrives_in_pieces(vendor_factory, gateway_factory, sdk):
    gate = asyncio.Event()
    vendor = await vendor_factory("oa", gate=gate)
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    client = sdk("anthropic", gw)
    async with client.messages.stream(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
        events = stream.__aiter__()
        # The vendor holds the rest until the client has seen text: a gateway that buffered would hang.
        while True:
            event = await asyncio.wait_for(events.__anext__(), 5)
            if event.type == "text":
                break
        gate.set()
        message = await stream.get_final_message()
    assert "".join(b.text for b in message.content if b.type == "text") == "tok0 tok1 tok2 tok3 tok4 "
    assert message.usage.output_tokens == 5  # the vendor's figure, in message_delta
    assert vendor.requests[-1].json()["stream_options"] == {"include_usage": True}
    [row] = await gw.rows()
    assert (row["endpoint"], row["stream"], row["completion_tokens"], row["estimated"]) == ("messages", 1, 5, 0)


async def test_anthropic_client_parallel_tool_calls_streamed(vendor, gateway_factory, sdk):
    long_name = "mcp__very_long_server_name__" + "x" * 60
    vendor.streams.append([
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call.a:1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "SHORT", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, finish="tool_calls"),
        chunk(usage=USAGE),
    ])
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    client = sdk("anthropic", gw)
    tools = [
        {"name": "weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": long_name, "input_schema": {"type": "object", "properties": {}}},
    ]
    # The vendor answers with the name the gateway gave it (worked out as the gateway does).
    from providers.translate.common import State

    short = State("m").vendor_tool_name(long_name)
    vendor.streams[0][4]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] = short
    async with client.messages.stream(model="gpt-4o", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "go"}]) as stream:
        message = await stream.get_final_message()
    # The vendor saw the long name shortened; the client gets its own name back.
    assert vendor.requests[-1].json()["tools"][1]["function"]["name"] == short
    assert len(short) <= 64 and short != long_name
    kinds = [b.type for b in message.content]
    assert kinds == ["text", "tool_use", "tool_use"]
    assert message.content[1].id.startswith("toolu_gw_") and message.content[1].input == {"city": "Paris"}
    assert message.content[2].id == "call_b" and message.content[2].input == {} and message.content[2].name == long_name
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (15, 5, 7)

    # Next turn: the tool results go back under the client's ids; the vendor sees its own.
    history = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": message.content[1].id, "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_b", "content": "ok"},
        ]},
    ]
    await client.messages.create(model="gpt-4o", max_tokens=50, tools=tools, messages=history)
    sent = vendor.requests[-1].json()["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert [c["id"] for c in assistant["tool_calls"]] == ["call.a:1", "call_b"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ["call.a:1", "call_b"]


async def test_anthropic_client_gets_vendor_error_in_its_shape(vendor, gateway_factory, sdk):
    from tests.fakevendor import Fault

    vendor.fail_next(Fault("status", status=400, body={"error": {"message": "context too long", "type": "invalid_request_error"}}))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    client = sdk("anthropic", gw)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["type"] == "error"
    assert "context too long" in caught.value.body["error"]["message"]


async def test_anthropic_count_tokens_estimated_never_zero(vendor, gateway_factory, sdk):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    client = sdk("anthropic", gw)
    count = await client.messages.count_tokens(model="gpt-4o", messages=[{"role": "user", "content": "hello there " * 50}])
    assert count.input_tokens > 100
    assert vendor.requests == []  # an OpenAI vendor has no counting call: estimated here
    [row] = await gw.rows()
    assert (row["endpoint"], row["prompt_tokens"], row["cost"]) == ("messages/count_tokens", 0, None)


async def test_claude_code_beta_query_and_x_api_key(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gw.url}/v1/messages?beta=true",
            headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
            json={"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["type"] == "message"
    assert "beta" not in vendor.requests[-1].query  # another API's query is not passed on


async def test_gemini_client_generate_stream_and_count(vendor, gateway_factory, sdk):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    client = sdk("gemini", gw)
    answer = await client.aio.models.generate_content(
        model="gpt-4o", contents="hi", config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=20)
    )
    assert answer.text == "hello from vendor"
    assert answer.usage_metadata.prompt_token_count == 11
    body = vendor.requests[-1].json()
    assert body["messages"][0] == {"role": "system", "content": "be brief"} and body["max_tokens"] == 20
    pieces = [r.text async for r in await client.aio.models.generate_content_stream(model="gpt-4o", contents="hi")]
    assert "".join(p for p in pieces if p) == "tok0 tok1 tok2 tok3 tok4 "
    count = await client.aio.models.count_tokens(model="gpt-4o", contents="hello there " * 50)
    assert count.total_tokens > 100
    rows = await gw.rows()
    assert [r["endpoint"] for r in rows] == ["generateContent", "streamGenerateContent", "countTokens"]
    assert rows[1]["completion_tokens"] == 5


async def test_gemini_key_in_query_and_encoded_colon(vendor, gateway_factory):
    import aiohttp

    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor)]})
    async with aiohttp.ClientSession() as session:
        for path in ("/v1beta/models/gpt-4o%3AgenerateContent?key=test-key", "/v1/models/gpt-4o:generateContent?key=test-key"):
            async with session.post(f"{gw.url}{path}", json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["candidates"][0]["content"]["parts"][0]["text"] == "hello from vendor"
        # A stream without alt=sse is one JSON array, sent piece by piece.
        async with session.post(
            f"{gw.url}/v1beta/models/gpt-4o:streamGenerateContent",
            headers={"x-goog-api-key": "test-key"},
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        ) as resp:
            assert resp.status == 200
            items = orjson.loads(await resp.read())
            assert isinstance(items, list) and "".join(
                p.get("text", "") for i in items for c in i.get("candidates", []) for p in c["content"]["parts"]
            ) == "tok0 tok1 tok2 tok3 tok4 "
    for seen in vendor.requests:
        assert "key" not in seen.query and "test-key" not in str(seen.headers)
    rows = await gw.rows()
    assert all(r["key_name"] == "app1" for r in rows)


async def test_responses_over_chat(vendor, gateway_factory):
    vendor.streams.append([
        chunk({"role": "assistant", "content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, finish="tool_calls"),
        chunk(usage=USAGE),
    ])
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("oa", vendor, responses="chat")]})
    client = gw.client()
    plain = await client.responses.create(model="gpt-4o", input="hi", instructions="brief")
    assert plain.output_text == "hello from vendor"
    assert vendor.requests[-1].path == "/v1/chat/completions"
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}]
    async with client.responses.stream(model="gpt-4o", input="go", tools=tools) as stream:
        final = await stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [("call_1", "f", '{"a":1}')]
    assert final.usage.input_tokens == 20 and final.usage.output_tokens == 7
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_1")
    assert "previous_response_id" in caught.value.message


def test_protocol_of_a_path() -> None:
    from gateway.api.pipeline import protocol_for
    from providers import ANTHROPIC, GEMINI, OPENAI

    assert protocol_for("/v1/models/gemini-x:generateContent") == GEMINI
    assert protocol_for("/google/v1beta/models") == GEMINI
    assert protocol_for("/v1/models/ft:gpt-4o-mini:org:abc") == OPENAI  # a fine-tuned OpenAI model's colons
    assert protocol_for("/v1/messages/count_tokens") == ANTHROPIC
    assert protocol_for("/v1/models", {"x-api-key": "k", "anthropic-version": "2023-06-01"}) == ANTHROPIC
