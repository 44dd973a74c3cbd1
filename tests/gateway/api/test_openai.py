"""Text endpoints end to end: real openai client -> gateway -> fake vendor, and the usage row of each call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest

from tests.conftest import KEYS
from tests.fakesurface import FakeSurface


@pytest.fixture
async def surface() -> AsyncIterator[FakeSurface]:
    async with FakeSurface().running() as s:
        yield s


def ch(surface: FakeSurface, models: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": "surf", "provider": "openai", "platform": "acme", "base_url": surface.base_url,
            "api_keys": ["vk-surf-secret"], "models": models, **kw}


async def one_row(gw: Any) -> dict[str, Any]:
    rows = await gw.rows()
    assert len(rows) == 1, rows
    return rows[0]


async def test_completions_non_stream(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-3.5-turbo-instruct"], model_map={"gpt-3.5-turbo-instruct": "instruct-v2"})]})
    out = await gw.client().completions.create(model="gpt-3.5-turbo-instruct", prompt="hello")
    assert out.choices[0].text == " world!"
    seen = surface.requests[-1]
    assert seen.json["model"] == "instruct-v2" and seen.json["prompt"] == "hello"
    assert seen.headers["Authorization"] == "Bearer vk-surf-secret"
    row = await one_row(gw)
    assert (row["endpoint"], row["model"], row["upstream_model"], row["channel"], row["status"]) == (
        "completions", "gpt-3.5-turbo-instruct", "instruct-v2", "surf", 200)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["estimated"]) == (5, 3, 8, 0)


async def test_completions_stream_usage_hidden_unless_asked(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-*"])]})
    stream = await gw.client().completions.create(model="gpt-x", prompt="hello", stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks) == " world!"
    assert all(c.usage is None for c in chunks)
    assert surface.requests[-1].json["stream_options"] == {"include_usage": True}
    row = await one_row(gw)
    assert (row["stream"], row["prompt_tokens"], row["completion_tokens"]) == (1, 5, 3)


async def test_responses_non_stream(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-4o"])]})
    resp = await gw.client().responses.create(model="gpt-4o", input="Say hello")
    assert resp.output_text == "Hello from responses"
    assert surface.requests[-1].json == {"model": "gpt-4o", "input": "Say hello"}
    row = await one_row(gw)
    assert (row["endpoint"], row["stream"]) == ("responses", 0)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (9, 4, 13)
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (2, 1)


async def test_responses_stream_events_pass_through(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-4o"])]})
    stream = await gw.client().responses.create(model="gpt-4o", input="Say hello", stream=True)
    events = [e async for e in stream]
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello from responses"
    assert events[-1].response.usage.input_tokens == 9  # the client still sees the usage event
    assert "stream_options" not in surface.requests[-1].json
    row = await one_row(gw)
    assert (row["stream"], row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (1, 9, 4, 2)


async def test_embeddings_and_platform_route(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["text-embedding-3-small"])]})
    out = await gw.client(platform="acme").embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.embedding for d in out.data] == [[0.5, -0.25, 0.125]] * 2
    row = await one_row(gw)
    assert (row["endpoint"], row["platform"], row["prompt_tokens"], row["total_tokens"]) == ("embeddings", "acme", 8, 8)


async def test_engine_embeddings_take_the_model_from_the_path(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["text-embedding-ada-002"], model_map={"text-embedding-ada-002": "ada-2"})]})
    raw = await gw.client().post(
        "/engines/text-embedding-ada-002/embeddings", cast_to=httpx2.Response, body={"input": "x", "encoding_format": "float"}
    )
    assert raw.status_code == 200 and raw.json()["data"][0]["embedding"] == [0.5, -0.25, 0.125]
    assert surface.requests[-1].path == "/v1/embeddings" and surface.requests[-1].json["model"] == "ada-2"
    row = await one_row(gw)
    assert (row["endpoint"], row["model"], row["prompt_tokens"]) == ("embeddings", "text-embedding-ada-002", 4)


async def test_moderations_default_model(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["omni-moderation-*"])]})
    out = await gw.client().moderations.create(input="is this fine?")
    assert out.results[0].flagged is False
    assert surface.requests[-1].json["model"] == "omni-moderation-latest"
    row = await one_row(gw)
    assert (row["endpoint"], row["model"], row["total_tokens"], row["estimated"]) == ("moderations", "omni-moderation-latest", 0, 0)


async def test_rerank(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["bge-reranker-v2"])]})
    raw = await gw.client().post(
        "/rerank", cast_to=httpx2.Response, body={"model": "bge-reranker-v2", "query": "q", "documents": ["a", "b", "c"]}
    )
    assert [r["index"] for r in raw.json()["results"]] == [0, 1, 2]
    row = await one_row(gw)
    assert (row["endpoint"], row["total_tokens"], row["estimated"]) == ("rerank", 17, 0)


async def test_chat_prompt_dialect_becomes_messages(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["qwen-max"])]})
    raw = await gw.client().post(
        "/chat/completions", cast_to=httpx2.Response,
        body={"model": "qwen-max", "prompt": "What is 2+2?", "sys_prompt": "Be brief.", "temperature": 0.1},
    )
    assert raw.status_code == 200
    assert surface.requests[-1].json == {
        "model": "qwen-max",
        "temperature": 0.1,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    }
    raw = await gw.client().post("/chat/completions", cast_to=httpx2.Response, body={"model": "qwen-max", "prompt": "hi"})
    assert surface.requests[-1].json["messages"] == [{"role": "user", "content": "hi"}]


async def test_chat_prompt_dialect_rejects_bad_types(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["qwen-max"])]})
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client().post("/chat/completions", cast_to=httpx2.Response, body={"model": "qwen-max", "prompt": 5})
    assert exc.value.body["param"] == "prompt"
    assert surface.requests == []


CONTENT = [
    {"type": "text", "text": "What is in these?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
HISTORY = [
    {"role": "user", "content": CONTENT},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
]


async def test_chat_content_parts_and_tools_pass_through(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-4o"])]})
    out = await gw.client().chat.completions.create(model="gpt-4o", messages=HISTORY, tools=TOOLS, tool_choice="auto")
    assert out.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    sent = surface.requests[-1].json
    assert (sent["messages"], sent["tools"], sent["tool_choice"]) == (HISTORY, TOOLS, "auto")


async def test_chat_tool_calls_stream_through(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-4o"])]})
    stream = await gw.client().chat.completions.create(model="gpt-4o", messages=HISTORY, tools=TOOLS, stream=True)
    args = []
    names = []
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                names.append(call.function.name)
                args.append(call.function.arguments or "")
    assert "get_weather" in names and "".join(args) == '{"city": "Paris"}'
    sent = surface.requests[-1].json
    assert (sent["messages"], sent["tools"]) == (HISTORY, TOOLS)
    row = await one_row(gw)
    assert (row["stream"], row["prompt_tokens"], row["completion_tokens"]) == (1, 20, 6)


async def test_files_answer_501(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-4o"])]})
    client = gw.client()
    with pytest.raises(openai.APIStatusError) as exc:
        await client.files.list()
    assert exc.value.status_code == 501
    assert exc.value.body["code"] == "not_implemented" and "Files API" in exc.value.body["message"]
    with pytest.raises(openai.APIStatusError) as exc:
        await client.files.retrieve("file-abc")
    assert exc.value.status_code == 501
    with pytest.raises(openai.AuthenticationError):
        await gw.client(key="wrong").files.list()
    assert surface.requests == []


async def test_passthrough_checks_model_and_access(surface, gateway_factory):
    keys = [{"name": "app1", "key": "test-key", "models": ["gpt-*"]}]
    gw = await gateway_factory({"keys": keys, "channels": [ch(surface, ["gpt-*", "text-embedding-*"])]})
    client = gw.client()
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.PermissionDeniedError):
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError):
        await client.post("/responses", cast_to=httpx2.Response, body={"input": "no model"})
    assert surface.requests == []
