"""providers/translate/anthropic.py: golden tests of both halves, and its streams checked by the real
Anthropic SDK (event types validated one by one, then accumulated into a message by `messages.stream`)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pydantic
import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.translate import anthropic as codec
from providers.translate.common import DEFAULT_MAX_TOKENS, Refused, State, anthropic_id, sse

PNG = "iVBORw0KGgo="
PDF = "JVBERi0xLjQ="
NOW = 1700000000
LONG_NAME = "mcp__some_server__" + "a_really_long_tool_name_" * 3  # 90 characters: over every vendor's 64
ODD_ID = "call.1:abc"  # a Gemini-style id: '.' and ':' are not allowed in Anthropic ids

_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "now", lambda: NOW)


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """SSE bytes -> (event name, data); every event must be named and its name match its type."""
    out: list[tuple[str, dict[str, Any]]] = []
    for raw in data.split(b"\n\n"):
        if not raw:
            continue
        name_line, data_line = raw.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: "), raw
        name, payload = name_line[7:].decode(), orjson.loads(data_line[6:])
        assert payload["type"] == name
        out.append((name, payload))
    return out


def check_grammar(data: bytes) -> list[dict[str, Any]]:
    """Anthropic's stream grammar, strictly: one message_start first; blocks 0, 1, 2... each started,
    given only deltas of its own kind, and stopped before the next starts; message_delta after the last
    block and message_stop at the end. Each event validated as the SDK's type. Returns the events."""
    delta_kinds = {"text": {"text_delta"}, "thinking": {"thinking_delta", "signature_delta"}, "tool_use": {"input_json_delta"}, "redacted_thinking": set()}
    seen = [payload for _, payload in events(data)]
    kinds = [e["type"] for e in seen if e["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds.count("message_start") == 1
    assert kinds[-2:] == ["message_delta", "message_stop"] and kinds.count("message_delta") == 1
    assert isinstance(seen[0]["message"]["usage"]["input_tokens"], int)
    open_block: tuple[int, str] | None = None
    next_index = 0
    for event in seen:
        kind = event["type"]
        if kind != "ping":  # the SDK reads pings apart from the message events
            _EVENT.validate_python(event)
        if kind == "content_block_start":
            assert open_block is None and event["index"] == next_index
            block = event["content_block"]
            if block["type"] == "tool_use":
                assert block["input"] == {}
            open_block, next_index = (event["index"], block["type"]), next_index + 1
        elif kind == "content_block_delta":
            assert open_block is not None and event["index"] == open_block[0]
            assert event["delta"]["type"] in delta_kinds[open_block[1]]
        elif kind == "content_block_stop":
            assert open_block is not None and event["index"] == open_block[0]
            open_block = None
        elif kind in ("message_delta", "message_stop"):
            assert open_block is None
    return seen


def sdk_message(data: bytes) -> anthropic.types.Message:
    """The message the real SDK accumulates from these bytes, served as an Anthropic stream."""

    def serve(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"})

    client = anthropic.Anthropic(api_key="k", http_client=httpx2.Client(transport=httpx2.MockTransport(serve)), max_retries=0)
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        return stream.get_final_message()


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """A pivot chunk with one choice."""
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish, **extra}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": NOW, "model": "up", "choices": [choice]}


def usage_chunk(prompt: int = 30, completion: int = 7, cached: int = 10, write: int = 5) -> dict[str, Any]:
    details = {"cached_tokens": cached, "cache_write_tokens": write}
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "prompt_tokens_details": details}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": NOW, "model": "up", "choices": [], "usage": usage}


def start(index: int, block: dict[str, Any]) -> bytes:
    return sse({"type": "content_block_start", "index": index, "content_block": block}, "content_block_start")


def delta(index: int, body: dict[str, Any]) -> bytes:
    return sse({"type": "content_block_delta", "index": index, "delta": body}, "content_block_delta")


def stop(index: int) -> bytes:
    return sse({"type": "content_block_stop", "index": index}, "content_block_stop")


def message_start(input_tokens: int = 12) -> bytes:
    message: dict[str, Any] = {"id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "public", "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}
    return sse({"type": "message_start", "message": message}, "message_start") + sse({"type": "ping"}, "ping")


def message_end(stop_reason: str, usage: dict[str, Any], stop_sequence: str | None = None) -> bytes:
    body = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": usage}
    return sse(body, "message_delta") + sse({"type": "message_stop"}, "message_stop")


REAL_USAGE = {"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 7}


# ---------------------------------------------------------------------------------------------------
# Client half: request


def test_request_to_chat() -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, "title": "a.pdf"},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Calling."},
                {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": LONG_NAME, "input": {"q": 1}},
                {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": anthropic_id(ODD_ID), "content": "42"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": [
                    {"type": "text", "text": "no such"}, {"type": "text", "text": "file"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
                ]},
                {"type": "text", "text": "Go on."},
            ]},
            {"role": "assistant", "content": "Sure"},
        ],
        "tools": [
            {"name": LONG_NAME, "description": "finds", "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}}},
            {"name": "get", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 4096},
        "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }
    assert codec.request_to_chat(body, State("public")) == {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "Be brief.\n\nBe kind."},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}},
            ]},
            {"role": "assistant", "content": "Calling.", "reasoning_content": "hmm",
             "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig1"}, {"type": "redacted_thinking", "data": "opaque"}],
             "tool_calls": [
                 {"id": ODD_ID, "type": "function", "function": {"name": LONG_NAME, "arguments": '{"q":1}'}},
                 {"id": "toolu_2", "type": "function", "function": {"name": "get", "arguments": "{}"}},
             ]},
            {"role": "tool", "tool_call_id": ODD_ID, "content": "42"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such\nfile"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
                {"type": "text", "text": "Go on."},
            ]},
            {"role": "assistant", "content": "Sure"},
        ],
        "tools": [
            {"type": "function", "function": {"name": LONG_NAME, "description": "finds", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}},
            {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}},
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 1000,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "reasoning_effort": "medium",
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get"}, {"type": "function", "function": {"name": "get"}}),
    ],
)
def test_tool_choice_to_chat(choice: dict[str, Any], expected: Any) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [], "tools": [{"name": "get", "input_schema": {"type": "object"}}], "tool_choice": choice}
    assert codec.request_to_chat(body, State("m"))["tool_choice"] == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "auto"}}
    assert codec.request_to_chat(body, State("m")) == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5}


@pytest.mark.parametrize(
    ("thinking", "output_config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 2047}, None, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, None, "high"),
        ({"type": "enabled", "budget_tokens": 60000}, None, "high"),
        ({"type": "disabled"}, None, None),
        ({"type": "adaptive"}, None, None),  # the vendor's own default
        ({"type": "adaptive"}, {"effort": "low"}, "low"),
        ({"type": "adaptive"}, {"effort": "max"}, "high"),
        (None, {"effort": "high"}, None),  # effort without thinking is about answer length, not reasoning
    ],
)
def test_thinking_to_effort(thinking: Any, output_config: Any, effort: str | None) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": []}
    if thinking:
        body["thinking"] = thinking
    if output_config:
        body["output_config"] = output_config
    assert codec.request_to_chat(body, State("m")).get("reasoning_effort") == effort


def test_output_format_to_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = {"model": "m", "max_tokens": 5, "messages": [], "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    assert codec.request_to_chat(body, State("m"))["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_count_request_to_chat() -> None:
    body = {"model": "m", "system": "S", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "t", "input_schema": {"type": "object"}}], "thinking": {"type": "enabled", "budget_tokens": 2000}}
    assert codec.count_request_to_chat(body, State("m")) == {
        "model": "m",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}],
    }
    assert codec.count_answer(42) == {"input_tokens": 42}


# ---------------------------------------------------------------------------------------------------
# Client half: answer


def test_answer_from_chat() -> None:
    answer = {
        "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.", "reasoning_content": "hmm",
            "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "redacted_thinking", "data": "x"}],
            "tool_calls": [
                {"id": ODD_ID, "type": "function", "function": {"name": LONG_NAME, "arguments": '{"q": 1}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get", "arguments": '{"broken'}},
            ],
        }}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
                  "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 5}, "completion_tokens_details": {"reasoning_tokens": 3}},
    }
    assert codec.answer_from_chat(answer, State("public")) == {
        "id": "msg_chatcmpl-9",
        "type": "message",
        "role": "assistant",
        "model": "public",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "x"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": LONG_NAME, "input": {"q": 1}},
            {"type": "tool_use", "id": "call_2", "name": "get", "input": {}},  # invalid JSON arguments: {}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 7,
                  "output_tokens_details": {"thinking_tokens": 3}},
    }
    assert anthropic_id(ODD_ID).replace("_", "").replace("-", "").isalnum()


@pytest.mark.parametrize(
    ("finish", "extra", "reason", "sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("stop", {"stop_sequence": "END"}, "stop_sequence", "END"),
        ("length", {}, "max_tokens", None),
        ("content_filter", {}, "refusal", None),
        ("tool_calls", {}, "end_turn", None),  # said tool_calls, made none
        (None, {}, "end_turn", None),
    ],
)
def test_answer_from_chat_stop_reasons(finish: str | None, extra: dict[str, Any], reason: str, sequence: str | None) -> None:
    answer = {"id": "c", "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "ok"}, **extra}]}
    out = codec.answer_from_chat(answer, State("m", prompt_estimate=9))
    assert (out["stop_reason"], out["stop_sequence"]) == (reason, sequence)
    # no usage from the vendor: the estimate, so the client still reads a number
    assert out["usage"] == {"input_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}


def test_answer_from_chat_unsigned_reasoning() -> None:
    answer = {"id": "c", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    assert codec.answer_from_chat(answer, State("m"))["content"] == [
        {"type": "thinking", "thinking": "2+2", "signature": ""},
        {"type": "text", "text": "4"},
    ]


# ---------------------------------------------------------------------------------------------------
# Client half: stream


def feed(stream: codec.StreamFromChat, *chunks: dict[str, Any]) -> list[bytes]:
    return [stream.chunk(c) for c in chunks]


def test_stream_from_chat_golden() -> None:
    """Thinking, its signature, text, two parallel tool calls; usage after the finish."""
    s = codec.StreamFromChat(State("public", stream=True, prompt_estimate=12))
    out = feed(
        s,
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Let me"}),
        chunk({"reasoning_content": " think."}),
        chunk({"thinking_signature": "sig=="}),
        chunk({"content": "Checking"}),
        chunk({"content": " both."}),
        chunk({"tool_calls": [{"index": 0, "id": ODD_ID, "type": "function", "function": {"name": LONG_NAME, "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        usage_chunk(),
    )
    assert out == [
        message_start(12),  # the role chunk: nothing else to say yet
        start(0, {"type": "thinking", "thinking": "", "signature": ""}) + delta(0, {"type": "thinking_delta", "thinking": "Let me"}),
        delta(0, {"type": "thinking_delta", "thinking": " think."}),
        delta(0, {"type": "signature_delta", "signature": "sig=="}) + stop(0),
        start(1, {"type": "text", "text": ""}) + delta(1, {"type": "text_delta", "text": "Checking"}),
        delta(1, {"type": "text_delta", "text": " both."}),
        stop(1) + start(2, {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": LONG_NAME, "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"q":'}),
        delta(2, {"type": "input_json_delta", "partial_json": " 1}"}),
        stop(2) + start(3, {"type": "tool_use", "id": "call_b", "name": "get", "input": {}}) + delta(3, {"type": "input_json_delta", "partial_json": "{}"}),
        stop(3),  # the finish closes the block; message_delta waits for the usage
        message_end("tool_use", REAL_USAGE),
    ]
    assert s.end() == b""
    data = b"".join(out)
    check_grammar(data)
    message = sdk_message(data)
    assert [b.to_dict() for b in message.content] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="},
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": LONG_NAME, "input": {"q": 1}},
        {"type": "tool_use", "id": "call_b", "name": "get", "input": {}},
    ]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens, message.usage.output_tokens) == (15, 10, 5, 7)


def test_stream_parallel_calls_in_one_chunk() -> None:
    """Two calls in one delta each get their own block, in order."""
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    calls = [
        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": '{"x":2}'}},
    ]
    data = b"".join(feed(s, chunk({"role": "assistant", "tool_calls": calls}, "tool_calls"), usage_chunk()))
    assert data == (
        message_start()
        + start(0, {"type": "tool_use", "id": "a", "name": "f", "input": {}}) + delta(0, {"type": "input_json_delta", "partial_json": "{}"})
        + stop(0) + start(1, {"type": "tool_use", "id": "b", "name": "g", "input": {}}) + delta(1, {"type": "input_json_delta", "partial_json": '{"x":2}'})
        + stop(1) + message_end("tool_use", REAL_USAGE)
    )
    check_grammar(data)
    assert [b.input for b in sdk_message(data).content] == [{}, {"x": 2}]  # type: ignore[union-attr]


def test_stream_content_with_finish_and_no_usage() -> None:
    """The last delta rides with the finish; the vendor sends no usage: end() guesses the output."""
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    out = feed(s, chunk({"role": "assistant", "content": "Hello"}), chunk({"content": " world"}, "stop"))
    assert out == [
        message_start() + start(0, {"type": "text", "text": ""}) + delta(0, {"type": "text_delta", "text": "Hello"}),
        delta(0, {"type": "text_delta", "text": " world"}) + stop(0),
    ]
    tail = s.end()
    assert tail == message_end("end_turn", {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 3})
    check_grammar(b"".join(out) + tail)
    assert sdk_message(b"".join(out) + tail).content[0].to_dict() == {"type": "text", "text": "Hello world"}


def test_stream_thinking_after_text_opens_a_new_block() -> None:
    """A thinking delta never lands in a text block, nor text in a thinking one; no delta is dropped."""
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    data = b"".join(feed(
        s,
        chunk({"role": "assistant", "content": "A"}),
        chunk({"reasoning_content": "r"}),
        chunk({"content": "B", "reasoning_content": "s"}),  # both in one delta: thinking first
        chunk({}, "stop"),
        {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ))
    assert data == (
        message_start()
        + start(0, {"type": "text", "text": ""}) + delta(0, {"type": "text_delta", "text": "A"})
        + stop(0) + start(1, {"type": "thinking", "thinking": "", "signature": ""}) + delta(1, {"type": "thinking_delta", "thinking": "r"})
        + delta(1, {"type": "thinking_delta", "thinking": "s"})
        + stop(1) + start(2, {"type": "text", "text": ""}) + delta(2, {"type": "text_delta", "text": "B"})
        + stop(2)
        + message_end("end_turn", {"input_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 2})
    )
    check_grammar(data)


def test_stream_redacted_thinking_and_stop_sequence() -> None:
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    data = b"".join(feed(
        s,
        chunk({"role": "assistant", "redacted_thinking": "opaque"}),
        chunk({"content": "x"}),
        chunk({}, "stop", stop_sequence="END"),
        usage_chunk(),
    ))
    assert data == (
        message_start()
        + start(0, {"type": "redacted_thinking", "data": "opaque"}) + stop(0)
        + start(1, {"type": "text", "text": ""}) + delta(1, {"type": "text_delta", "text": "x"}) + stop(1)
        + message_end("stop_sequence", REAL_USAGE, "END")
    )
    check_grammar(data)
    assert sdk_message(data).stop_sequence == "END"


def test_stream_late_delta_and_interleaved_call() -> None:
    """A call resumed after another block started keeps its own index (the SDK accumulates by index);
    a delta after the finish is closed before message_delta. Nothing is lost."""
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    data = b"".join(feed(
        s,
        chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({}, "tool_calls"),
        chunk({"content": "late"}),
        usage_chunk(),
    ))
    assert data == (
        message_start()
        + start(0, {"type": "tool_use", "id": "a", "name": "f", "input": {}}) + delta(0, {"type": "input_json_delta", "partial_json": '{"x":'})
        + stop(0) + start(1, {"type": "tool_use", "id": "b", "name": "g", "input": {}}) + delta(1, {"type": "input_json_delta", "partial_json": "{}"})
        + delta(0, {"type": "input_json_delta", "partial_json": "1}"})
        + stop(1)
        + start(2, {"type": "text", "text": ""}) + delta(2, {"type": "text_delta", "text": "late"}) + stop(2)
        + message_end("tool_use", REAL_USAGE)
    )
    assert [b.to_dict() for b in sdk_message(data).content] == [
        {"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "b", "name": "g", "input": {}},
        {"type": "text", "text": "late"},
    ]


def test_stream_message_start_once() -> None:
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    data = b"".join(feed(s, chunk({"role": "assistant"}), chunk({"role": "assistant"}), chunk({"content": "x"}))) + s.end()
    assert data.count(b"event: message_start") == 1
    check_grammar(data)


def test_stream_error() -> None:
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    first = s.chunk(chunk({"role": "assistant", "content": "x"}))
    error = s.chunk({"error": {"message": "Overloaded", "type": "server_error", "status": 529}})
    assert error == sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")
    assert s.chunk(chunk({"content": "late"})) == b"" and s.end() == b""
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        sdk_message(first + error)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "slow down", "type": "rate_limit_exceeded", "status": 429}, "rate_limit_error"),
        ({"message": "m", "type": "overloaded_error", "status": 500}, "overloaded_error"),
        ({"message": "m", "type": "x"}, "api_error"),
    ],
)
def test_stream_error_types(error: dict[str, Any], kind: str) -> None:
    out = codec.StreamFromChat(State("m")).chunk({"error": error})
    assert events(out) == [("error", {"type": "error", "error": {"type": kind, "message": error["message"]}})]


def test_stream_end_without_anything() -> None:
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    data = s.end()
    check_grammar(data)
    assert s.end() == b""


def test_stream_end_without_finish_closes_block() -> None:
    s = codec.StreamFromChat(State("public", prompt_estimate=12))
    data = b"".join(feed(s, chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": '{"a'}}]})))
    tail = s.end()
    assert tail == stop(0) + message_end("end_turn", {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1})
    check_grammar(data + tail)


# ---------------------------------------------------------------------------------------------------
# Vendor half: request


def test_request_from_chat() -> None:
    state = State("public")
    body = {
        "model": "claude-up",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "text", "text": ""},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}},
                {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
            ]},
            {"role": "assistant", "content": None, "reasoning_content": "hmm",
             "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig1"}],
             "tool_calls": [
                 {"id": ODD_ID, "type": "function", "function": {"name": LONG_NAME, "arguments": '{"q": 1}'}},
                 {"id": "call_2", "type": "function", "function": {"name": "get", "arguments": "not json"}},
             ]},
            {"role": "tool", "tool_call_id": ODD_ID, "content": "42"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "none"}]},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": ""},  # empty: dropped
        ],
        "tools": [
            {"type": "function", "function": {"name": LONG_NAME, "description": "finds", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}},
            {"type": "function", "function": {"name": "get", "parameters": {"properties": {}}}},
            {"type": "function", "function": {"name": "bare"}},
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 500,
        "temperature": 1.5,
        "top_p": 0.5,
        "stop": "END",
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "response_format": {"type": "json_object"},
        "seed": 3,
    }
    short = state.vendor_tool_name(LONG_NAME)
    assert len(short) == 64
    assert codec.request_from_chat(body, state) == {
        "model": "claude-up",
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Hi"},
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, "title": "a.pdf"},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig1"},
                {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": short, "input": {"q": 1}},
                {"type": "tool_use", "id": "call_2", "name": "get", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": anthropic_id(ODD_ID), "content": "42"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "none"}]},
                {"type": "text", "text": "Thanks"},
            ]},
        ],
        "tools": [
            {"name": short, "description": "finds", "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}}},
            {"name": "get", "input_schema": {"type": "object", "properties": {}}},
            {"name": "bare", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "max_tokens": 500,
        "temperature": 1.0,
        "top_p": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


def test_request_from_chat_defaults_and_tool_results_lead() -> None:
    """max_tokens is required; a tool result after user text in one turn still goes first."""
    body = {"model": "m", "messages": [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "see below"},
        {"role": "tool", "tool_call_id": "a", "content": ""},
    ]}
    assert codec.request_from_chat(body, State("m")) == {
        "model": "m",
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}, {"type": "text", "text": "see below"}]},
        ],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": LONG_NAME}}, None, {"type": "tool", "name": State("m").vendor_tool_name(LONG_NAME)}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice_from_chat(choice: Any, parallel: bool | None, expected: Any) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": LONG_NAME}}]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert codec.request_from_chat(body, State("m")).get("tool_choice") == expected


@pytest.mark.parametrize(
    ("effort", "max_tokens", "thinking", "out_max"),
    [
        ("low", None, {"type": "enabled", "budget_tokens": 1024}, DEFAULT_MAX_TOKENS),
        ("medium", 20000, {"type": "enabled", "budget_tokens": 4096}, 20000),
        ("high", 20000, {"type": "enabled", "budget_tokens": 16384}, 20000),
        ("high", 10000, {"type": "enabled", "budget_tokens": 5000}, 10000),  # the budget must stay below max_tokens
        ("low", 1500, {"type": "enabled", "budget_tokens": 1024}, 1500),
        ("low", 1024, None, 1024),  # no room to think
        ("minimal", None, None, DEFAULT_MAX_TOKENS),
    ],
)
def test_effort_to_thinking(effort: str, max_tokens: int | None, thinking: Any, out_max: int) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort, "temperature": 0.2, "top_p": 0.99}
    if max_tokens:
        body["max_tokens"] = max_tokens
    out = codec.request_from_chat(body, State("m"))
    assert (out.get("thinking"), out["max_tokens"]) == (thinking, out_max)
    # with thinking on, Anthropic takes no temperature and only a top_p of 0.95 or more
    assert (out.get("temperature"), out.get("top_p")) == ((None, 0.99) if thinking else (0.2, 0.99))


def test_thinking_kept_dropped_where_refused() -> None:
    own = {"type": "enabled", "budget_tokens": 2000}
    base: dict[str, Any] = {"model": "m", "max_tokens": 9000, "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high"}
    assert codec.request_from_chat(base | {"thinking": own}, State("m"))["thinking"] == own  # the client's own, as it is
    forced = base | {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}
    assert "thinking" not in codec.request_from_chat(forced, State("m"))
    replay = base | {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"},
    ]}
    assert "thinking" not in codec.request_from_chat(replay, State("m"))  # the turn lost its thinking block
    signed = {"thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"}]}
    replay["messages"][1] |= signed
    assert codec.request_from_chat(replay, State("m"))["thinking"] == {"type": "enabled", "budget_tokens": 4500}


def test_thinking_signature_of_a_streamed_answer_goes_back() -> None:
    # A chat client that accumulated a stream (the openai SDK's helper joins unknown string fields) sends
    # back reasoning_content and the signature_delta as `thinking_signature`: one signed thinking block.
    replay: dict[str, Any] = {"model": "m", "max_tokens": 9000, "reasoning_effort": "medium", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "x", "reasoning_content": "hmm", "thinking_signature": "sig",
         "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"},
    ]}  # fmt: skip
    out = codec.request_from_chat(replay, State("m"))
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "x"},
        {"type": "tool_use", "id": "a", "name": "f", "input": {}},
    ]
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096}  # the turn kept its thinking block
    del replay["messages"][1]["thinking_signature"]  # unsigned reasoning is not sent to Anthropic
    out = codec.request_from_chat(replay, State("m"))
    assert out["messages"][1]["content"][0]["type"] == "text" and "thinking" not in out


def test_refused_and_dropped() -> None:
    with pytest.raises(Refused) as refused:
        codec.request_from_chat({"model": "m", "messages": [], "n": 2}, State("m"))
    assert refused.value.param == "n"
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk=", "filename": "a.txt"}},
        {"type": "file", "file": {"file_data": "data:image/tiff;base64,AAAA"}},
    ]}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, "n": 1}
    assert codec.request_from_chat(body, State("m")) == {"model": "m", "max_tokens": DEFAULT_MAX_TOKENS, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}, "title": "a.txt"},
    ]}]}


def test_count_request_from_chat() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0.1, "stream": True}
    assert codec.count_request_from_chat(body, State("m")) == {"model": "m", "system": "S", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert codec.count_tokens_of({"input_tokens": 17}) == 17
    assert codec.count_tokens_of({"error": "x"}) is None


# ---------------------------------------------------------------------------------------------------
# Vendor half: answer and stream


def test_answer_to_chat() -> None:
    state = State("public")
    short = state.vendor_tool_name(LONG_NAME)
    answer: dict[str, Any] = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "x"},
            {"type": "text", "text": "Calling"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": short, "input": {"q": 1}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 7},
    }
    out = codec.answer_to_chat(answer, state)
    assert out == {
        "id": "msg_1",
        "object": "chat.completion",
        "created": NOW,
        "model": "public",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Calling", "reasoning_content": "hmm",
            "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "redacted_thinking", "data": "x"}],
            "tool_calls": [{"id": ODD_ID, "type": "function", "function": {"name": LONG_NAME, "arguments": '{"q":1}'}}],
        }}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37, "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 5}},
    }
    ChatCompletion.model_validate(out)


@pytest.mark.parametrize(
    ("reason", "sequence", "finish"),
    [("end_turn", None, "stop"), ("stop_sequence", "END", "stop"), ("pause_turn", None, "stop"), ("max_tokens", None, "length"),
     ("model_context_window_exceeded", None, "length"), ("refusal", None, "content_filter"), (None, None, "stop")],
)
def test_answer_to_chat_finish(reason: str | None, sequence: str | None, finish: str) -> None:
    answer: dict[str, Any] = {"id": "msg_1", "content": [], "stop_reason": reason, "stop_sequence": sequence, "usage": {"input_tokens": 1, "output_tokens": 0}}
    choice = codec.answer_to_chat(answer, State("m"))["choices"][0]
    assert choice["finish_reason"] == finish and choice["message"]["content"] == ""
    assert choice.get("stop_sequence") == sequence


def vendor_stream(short: str) -> list[tuple[str, dict[str, Any]]]:
    """An Anthropic stream as the API sends it: thinking, text, a server tool, two tool calls."""
    message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up", "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 1}}
    raw: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "x"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "content_block_start", "index": 3, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": '{"query":"x"}'}},
        {"type": "content_block_stop", "index": 3},
        {"type": "content_block_start", "index": 4, "content_block": {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": short, "input": {}}},
        {"type": "content_block_delta", "index": 4, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 4, "delta": {"type": "input_json_delta", "partial_json": '{"q":'}},
        {"type": "content_block_delta", "index": 4, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
        {"type": "content_block_stop", "index": 4},
        {"type": "content_block_start", "index": 5, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {}}},
        {"type": "content_block_delta", "index": 5, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 5},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"input_tokens": None, "cache_creation_input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 7}},
        {"type": "message_stop"},
    ]
    return [(e["type"], e) for e in raw]


def test_stream_to_chat_golden() -> None:
    state = State("public", stream=True)
    short = state.vendor_tool_name(LONG_NAME)
    s = codec.StreamToChat(state)
    out = [c for name, data in vendor_stream(short) for c in s.event(name, data)] + s.end()

    def c(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "msg_1", "object": "chat.completion.chunk", "created": NOW, "model": "public", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    assert out == [
        c({"role": "assistant", "content": ""}),
        c({"reasoning_content": "hmm"}),
        c({"thinking_signature": "sig"}),
        c({"redacted_thinking": "x"}),
        c({"content": "Hi"}),
        c({"tool_calls": [{"index": 0, "id": ODD_ID, "type": "function", "function": {"name": LONG_NAME, "arguments": ""}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        c({"tool_calls": [{"index": 1, "id": "toolu_2", "type": "function", "function": {"name": "get", "arguments": ""}}]}),
        c({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        c({}, "tool_calls"),
        {"id": "msg_1", "object": "chat.completion.chunk", "created": NOW, "model": "public", "choices": [],
         "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37, "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 5}}},
    ]
    for item in out:
        ChatCompletionChunk.model_validate(item)


def test_stream_round_trip_through_the_pivot() -> None:
    """Anthropic events -> chat chunks -> Anthropic events: the SDK reads back the same message."""
    vendor_state = State("public")
    short = vendor_state.vendor_tool_name(LONG_NAME)
    decode, encode = codec.StreamToChat(vendor_state), codec.StreamFromChat(State("public", prompt_estimate=3))
    data = b"".join(encode.chunk(c) for name, e in vendor_stream(short) for c in decode.event(name, e))
    data += b"".join(encode.chunk(c) for c in decode.end()) + encode.end()
    check_grammar(data)
    message = sdk_message(data)
    assert [b.to_dict() for b in message.content] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "x"},
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": anthropic_id(ODD_ID), "name": LONG_NAME, "input": {"q": 1}},  # the client's name
        {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {}},
    ]
    assert message.stop_reason == "tool_use"
    assert message.usage.to_dict() == REAL_USAGE


def test_stream_to_chat_stop_sequence_error_and_end() -> None:
    s = codec.StreamToChat(State("m"))
    assert s.end() == []  # nothing started
    s.event("message_start", {"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 4, "output_tokens": 1}}})
    [finish] = s.event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"}, "usage": {"output_tokens": 2}})
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_sequence": "END"}]
    # the stream is cut before message_stop: end() still sends the usage, once
    [usage] = s.end()
    assert usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6, "prompt_tokens_details": {"cached_tokens": 0}}
    assert s.end() == [] and s.event("message_stop", {"type": "message_stop"}) == []
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert codec.StreamToChat(State("m")).event("error", error) == [{"error": {"message": "Overloaded", "type": "overloaded_error", "status": 529}}]
    assert codec.StreamToChat(State("m")).event("ping", {"type": "ping"}) == []


def test_tool_name_and_id_round_trip() -> None:
    """An OpenAI client's long tool name and odd call id through an Anthropic vendor and back; and an
    Anthropic client's ids through a chat vendor and back."""
    state = State("public")
    sent = codec.request_from_chat({"model": "m", "messages": [
        {"role": "assistant", "content": None, "tool_calls": [{"id": ODD_ID, "type": "function", "function": {"name": LONG_NAME, "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": ODD_ID, "content": "1"},
    ], "tools": [{"type": "function", "function": {"name": LONG_NAME}}]}, state)
    use, result = sent["messages"][0]["content"][0], sent["messages"][1]["content"][0]
    assert len(use["name"]) <= 64 and use["id"] == result["tool_use_id"] == anthropic_id(ODD_ID) and "." not in use["id"]
    answer = {"id": "msg_1", "content": [{"type": "tool_use", "id": use["id"], "name": use["name"], "input": {}}], "stop_reason": "tool_use", "usage": {}}
    call = codec.answer_to_chat(answer, state)["choices"][0]["message"]["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == (ODD_ID, LONG_NAME)
    # Anthropic client: the chat vendor's odd id goes out as anthropic_id, comes back as the original
    client_answer = codec.answer_from_chat({"id": "c", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{"id": ODD_ID, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]}, state)
    handed = client_answer["content"][0]["id"]
    back = codec.request_to_chat({"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [client_answer["content"][0]]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": handed, "content": "1"}]},
    ]}, state)
    assert back["messages"][0]["tool_calls"][0]["id"] == back["messages"][1]["tool_call_id"] == ODD_ID
