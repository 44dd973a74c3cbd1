"""providers/translate/responses.py: Responses requests to chat, chat answers and streams back to Responses,
checked against golden outputs and assembled by the real openai SDK."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from providers.translate import responses
from providers.translate.common import Refused, State
from providers.translate.responses import StreamFromChat, Unsupported, answer_from_chat, request_to_chat

EVENT = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responses, "_new_token", lambda: "T")


def state() -> State:
    return State(model="gpt-test")


# ---------------------------------------------------------------- request


def test_request_string_input_and_settings():
    body = {
        "model": "gpt-test", "input": "hi", "instructions": "be brief", "max_output_tokens": 50,
        "temperature": 0.2, "top_p": 0.9, "user": "u1", "safety_identifier": "s1", "metadata": {"a": "b"},
        "store": True, "truncation": "auto", "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "high", "summary": "auto"}, "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
    }
    st = state()
    assert request_to_chat(body, st) == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "parallel_tool_calls": False, "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9,
        "user": "u1", "safety_identifier": "s1",
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True}},
        "reasoning_effort": "high",
    }
    assert st.stream is False


def test_request_stream_always_asks_for_usage():
    st = state()
    out = request_to_chat({"model": "m", "input": "hi", "stream": True}, st)
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert st.stream is True


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "text"}, None),
])
def test_request_text_formats(fmt, expected):
    out = request_to_chat({"model": "m", "input": "x", "text": {"format": fmt}}, state())
    assert out.get("response_format") == expected


def test_request_items_of_every_kind():
    items = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x/img.png", "detail": "high"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "original"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JV", "filename": "a.pdf"},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "let me ", "annotations": []},
                     {"type": "output_text", "text": "check", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": '{"q":1}'},
        {"type": "function_call", "call_id": "c2", "name": "put", "arguments": ""},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [
            {"type": "input_text", "text": "two"}, {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "reasoning", "id": "rs_2", "summary": [],
         "content": [{"type": "reasoning_text", "text": "raw"}]},
        {"type": "function_call", "call_id": "c3", "name": "get", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c3", "output": [{"type": "input_text", "text": "three"}]},
        {"type": "reasoning", "id": "rs_3", "summary": [{"type": "summary_text", "text": "dropped"}]},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
    ]
    assert request_to_chat({"model": "m", "input": items}, state())["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/img.png", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JV", "filename": "a.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        ]},
        {"role": "assistant", "content": "let me check", "reasoning_content": "think", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"q":1}'}},
            {"id": "c2", "type": "function", "function": {"name": "put", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [
            {"type": "text", "text": "two"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "reasoning_content": "raw", "tool_calls": [
            {"id": "c3", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c3", "content": "three"},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "no"},
    ]


def test_request_tools_and_tool_choice():
    tools = [
        {"type": "function", "name": "get", "description": "d", "parameters": {"type": "object"}, "strict": True},
        {"type": "function", "name": "put", "parameters": None, "strict": None},
    ]
    out = request_to_chat({"model": "m", "input": "x", "tools": tools, "tool_choice": "required"}, state())
    assert out["tools"] == [
        {"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"}, "strict": True}},
        {"type": "function", "function": {"name": "put"}},
    ]
    assert out["tool_choice"] == "required"
    named = request_to_chat({"model": "m", "input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "put"}}, state())
    assert named["tool_choice"] == {"type": "function", "function": {"name": "put"}}
    allowed = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "put"}]}
    narrowed = request_to_chat({"model": "m", "input": "x", "tools": tools, "tool_choice": allowed}, state())
    assert narrowed["tool_choice"] == "required"
    assert narrowed["tools"] == [{"type": "function", "function": {"name": "put"}}]


def test_request_reasoning_carries_sealed_thinking_blocks():
    blocks = [{"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": "redacted_thinking", "data": "xx"}]
    sealed = responses._seal(blocks)
    items = [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "hm"}], "encrypted_content": sealed},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "reasoning", "id": "rs2", "summary": [], "encrypted_content": "gAAAA-openai-own"},
        {"role": "assistant", "content": "done"},
    ]
    messages = request_to_chat({"model": "m", "input": items}, state())["messages"]
    assert messages[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "reasoning_content": "hm", "thinking_blocks": blocks}
    assert messages[2] == {"role": "assistant", "content": "done"}


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "send the whole conversation in 'input'"),
    ({"conversation": "conv_1"}, "conversation", "send the whole conversation in 'input'"),
    ({"background": True}, "background", "'background'"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt", "stored prompt template"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "only tools of type 'function'"),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": []}]}, "tools[1].type", "'file_search'"),
    ({"tools": [{"type": "custom", "name": "patch"}]}, "tools[0].type", "declare it as a 'function' tool"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "'web_search_preview'"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "send the item itself"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type", "'web_search_call'"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id", "'image_url'"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id", "'file_data'"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
     "input[0].content[0].file_url", "'file_data'"),
])
def test_request_unsupported_fields(body, param, says):
    with pytest.raises(Unsupported) as caught:
        request_to_chat({"model": "m", "input": "x", **body}, state())
    assert caught.value.param == param
    assert says in caught.value.message
    assert "chat completions only" in caught.value.message
    assert isinstance(caught.value, Refused) and isinstance(caught.value, ValueError)


def test_request_store_false_and_true_are_both_served():
    for store in (True, False):
        assert request_to_chat({"model": "m", "input": "x", "store": store}, state())["messages"]


# ---------------------------------------------------------------- answer

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
         "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 2}}
RESPONSES_USAGE = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                   "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 15}
DEFAULTS = {"instructions": None, "max_output_tokens": None, "metadata": None, "parallel_tool_calls": True,
            "reasoning": None, "temperature": None, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": None}


def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = USAGE) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700, "model": "vendor-model",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage}


def response(output: list[dict[str, Any]], status: str = "completed", usage: Any = RESPONSES_USAGE, **extra: Any) -> dict[str, Any]:
    return {"id": "resp_T", "object": "response", "created_at": 1700, "status": status, "error": None,
            "incomplete_details": None, "model": "gpt-test", "output": output, "usage": usage, **DEFAULTS, **extra}


def test_answer_text():
    out = answer_from_chat(completion({"content": "Hello"}), state())
    assert out == response([{"id": "msg_T_0", "type": "message", "status": "completed", "role": "assistant",
                             "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}])
    assert Response.model_validate(out).output_text == "Hello"


def test_answer_tool_calls_echo_the_request():
    request = {"model": "m", "input": "x", "tool_choice": "required", "temperature": 0.5,
               "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}, "strict": False}]}
    message = {"content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": '{"q":1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get", "arguments": '{"q":2}'}}]}
    out = answer_from_chat(completion(message, "tool_calls"), state(), request=request)
    assert out == response(
        [{"id": "fc_T_0", "type": "function_call", "status": "completed", "arguments": '{"q":1}', "call_id": "call_a", "name": "get"},
         {"id": "fc_T_1", "type": "function_call", "status": "completed", "arguments": '{"q":2}', "call_id": "call_b", "name": "get"}],
        tool_choice="required", temperature=0.5, tools=request["tools"])
    parsed = Response.model_validate(out)
    assert [c.call_id for c in parsed.output if c.type == "function_call"] == ["call_a", "call_b"]


def test_answer_reasoning_text_and_thinking_blocks():
    blocks = [{"type": "thinking", "thinking": "hmm", "signature": "sig"}]
    out = answer_from_chat(completion({"content": "42", "reasoning_content": "hmm", "thinking_blocks": blocks}), state())
    assert out["output"] == [
        {"id": "rs_T_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}],
         "encrypted_content": responses._seal(blocks)},
        {"id": "msg_T_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "42", "annotations": []}]},
    ]
    Response.model_validate(out)
    # the client sends the reasoning item back: the vendor gets its signed thinking again
    back = request_to_chat({"model": "m", "input": [{"role": "user", "content": "q"}, *out["output"]]}, state())
    assert back["messages"][1] == {"role": "assistant", "content": "42", "reasoning_content": "hmm", "thinking_blocks": blocks}


def test_answer_echoes_the_request_kept_in_state():
    st = state()
    request = {"model": "m", "input": "x", "instructions": "be brief", "max_output_tokens": 9,
               "tools": [{"type": "function", "name": "f", "parameters": None, "strict": None}]}
    request_to_chat(request, st)
    out = answer_from_chat(completion({"content": "ok"}), st)
    assert (out["instructions"], out["max_output_tokens"], out["tools"]) == ("be brief", 9, request["tools"])
    stream = StreamFromChat(st)
    created = events(stream.chunk(chunk({"role": "assistant"})))[0]["response"]
    assert (created["instructions"], created["tools"]) == ("be brief", request["tools"])
    Response.model_validate(out)


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_answer_incomplete(finish, reason):
    out = answer_from_chat(completion({"content": "cut"}, finish, usage=None), state())
    assert out == response([{"id": "msg_T_0", "type": "message", "status": "incomplete", "role": "assistant",
                             "content": [{"type": "output_text", "text": "cut", "annotations": []}]}],
                           status="incomplete", usage=None, incomplete_details={"reason": reason})
    Response.model_validate(out)


def test_answer_refusal_and_cache_writes():
    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 3}}
    out = answer_from_chat(completion({"content": None, "refusal": "I can't"}, usage=usage), state())
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't"}]
    assert out["usage"]["input_tokens_details"] == {"cached_tokens": 4, "cache_write_tokens": 3}
    Response.model_validate(out)


# ---------------------------------------------------------------- stream


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700, "model": "v",
                           "choices": [] if delta is None and finish is None else
                           [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


def events(raw: bytes) -> list[dict[str, Any]]:
    """The SSE events, each checked: `event:` matches `type`, sequence numbers count from 0, the SDK's
    event model takes it; returned without their sequence numbers."""
    out = []
    for frame in raw.split(b"\n\n")[:-1]:
        head, data = frame.split(b"\n")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        assert event.pop("sequence_number") == len(out)
        EVENT.validate_python({**event, "sequence_number": 0})
        out.append(event)
    return out


def run(chunks: list[dict[str, Any]], request: dict[str, Any] | None = None, end: bool = True) -> bytes:
    stream = StreamFromChat(state(), request=request)
    raw = b"".join(stream.chunk(c) for c in chunks)
    return raw + stream.end() if end else raw


def lifecycle(status: str, output: list[dict[str, Any]], usage: Any = None, **extra: Any) -> dict[str, Any]:
    return {"type": f"response.{status}" if status != "in_progress" else "response.created",
            "response": response(output, status, usage, **extra)}


START = [lifecycle("in_progress", []), {**lifecycle("in_progress", []), "type": "response.in_progress"}]
MSG = {"item_id": "msg_T_0", "output_index": 0, "content_index": 0}


def text_item(text: str, index: int = 0, status: str = "completed") -> dict[str, Any]:
    return {"id": f"msg_T_{index}", "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def test_stream_text():
    raw = run([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
               chunk(finish="stop"), chunk(usage=USAGE)])
    assert events(raw) == [
        *START,
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": "msg_T_0", "type": "message", "status": "in_progress", "role": "assistant", "content": []}},
        {"type": "response.content_part.added", **MSG, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **MSG, "delta": "Hel", "logprobs": []},
        {"type": "response.output_text.delta", **MSG, "delta": "lo", "logprobs": []},
        {"type": "response.output_text.done", **MSG, "text": "Hello", "logprobs": []},
        {"type": "response.content_part.done", **MSG, "part": {"type": "output_text", "text": "Hello", "annotations": []}},
        {"type": "response.output_item.done", "output_index": 0, "item": text_item("Hello")},
        lifecycle("completed", [text_item("Hello")], RESPONSES_USAGE),
    ]


def test_stream_holds_completed_until_usage():
    stream = StreamFromChat(state())
    first = events(stream.chunk(chunk({"role": "assistant", "content": "ok"}, finish="stop")))
    assert first[-1] == {"type": "response.output_item.done", "output_index": 0, "item": text_item("ok")}
    last = stream.chunk(chunk(usage=USAGE))
    assert b"response.completed" in last and b'"input_tokens":10' in last
    assert stream.end() == b""
    assert stream.chunk(chunk({"content": "late"})) == b""


def test_stream_end_without_usage_completes():
    out = events(run([chunk({"role": "assistant", "content": "ok"}), chunk(finish="stop")]))
    assert out[-1] == lifecycle("completed", [text_item("ok")], None)


def test_stream_reasoning_then_text():
    blocks = [{"type": "thinking", "thinking": "hmm, ok", "signature": "sig"}]
    raw = run([chunk({"role": "assistant", "reasoning_content": "hmm"}), chunk({"reasoning_content": ", ok"}),
               chunk({"thinking_signature": "sig"}), chunk({"content": "42"}, finish="stop"), chunk(usage=USAGE)])
    rs = {"item_id": "rs_T_0", "output_index": 0, "summary_index": 0}
    reasoning = {"id": "rs_T_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm, ok"}],
                 "encrypted_content": responses._seal(blocks)}
    msg = {"item_id": "msg_T_1", "output_index": 1, "content_index": 0}
    assert events(raw) == [
        *START,
        {"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_T_0", "type": "reasoning", "summary": []}},
        {"type": "response.reasoning_summary_part.added", **rs, "part": {"type": "summary_text", "text": ""}},
        {"type": "response.reasoning_summary_text.delta", **rs, "delta": "hmm"},
        {"type": "response.reasoning_summary_text.delta", **rs, "delta": ", ok"},
        {"type": "response.reasoning_summary_text.done", **rs, "text": "hmm, ok"},
        {"type": "response.reasoning_summary_part.done", **rs, "part": {"type": "summary_text", "text": "hmm, ok"}},
        {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"id": "msg_T_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}},
        {"type": "response.content_part.added", **msg, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **msg, "delta": "42", "logprobs": []},
        {"type": "response.output_text.done", **msg, "text": "42", "logprobs": []},
        {"type": "response.content_part.done", **msg, "part": {"type": "output_text", "text": "42", "annotations": []}},
        {"type": "response.output_item.done", "output_index": 1, "item": text_item("42", 1)},
        lifecycle("completed", [reasoning, text_item("42", 1)], RESPONSES_USAGE),
    ]


def call_chunk(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        piece.update(id=call_id, type="function")
        piece["function"]["name"] = name
    return chunk({"tool_calls": [piece]})


def call_item(n: int, call_id: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": f"fc_T_{n}", "type": "function_call", "status": status, "arguments": arguments, "call_id": call_id, "name": "get"}


def test_stream_text_then_parallel_tool_calls():
    raw = run([chunk({"role": "assistant", "content": "On it."}),
               call_chunk(0, "", "call_a", "get"), call_chunk(0, '{"q":'), call_chunk(0, "1}"),
               call_chunk(1, '{"q":2}', "call_b", "get"),
               chunk(finish="tool_calls"), chunk(usage=USAGE)])
    assert events(raw)[8:] == [
        {"type": "response.output_item.added", "output_index": 1, "item": call_item(1, "call_a", "", "in_progress")},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_T_1", "output_index": 1, "delta": '{"q":'},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_T_1", "output_index": 1, "delta": "1}"},
        {"type": "response.output_item.added", "output_index": 2, "item": call_item(2, "call_b", "", "in_progress")},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_T_2", "output_index": 2, "delta": '{"q":2}'},
        {"type": "response.function_call_arguments.done", "item_id": "fc_T_1", "output_index": 1, "arguments": '{"q":1}'},
        {"type": "response.output_item.done", "output_index": 1, "item": call_item(1, "call_a", '{"q":1}')},
        {"type": "response.function_call_arguments.done", "item_id": "fc_T_2", "output_index": 2, "arguments": '{"q":2}'},
        {"type": "response.output_item.done", "output_index": 2, "item": call_item(2, "call_b", '{"q":2}')},
        lifecycle("completed", [text_item("On it."), call_item(1, "call_a", '{"q":1}'), call_item(2, "call_b", '{"q":2}')],
                  RESPONSES_USAGE),
    ]


def test_stream_interleaved_call_pieces_stay_with_their_call():
    raw = run([call_chunk(0, '{"a":', "call_a", "get"), call_chunk(1, '{"b":', "call_b", "get"),
               call_chunk(0, "1}"), call_chunk(1, "2}"), chunk(finish="tool_calls")])
    final = events(raw)[-1]["response"]["output"]
    assert final == [call_item(0, "call_a", '{"a":1}'), call_item(1, "call_b", '{"b":2}')]


def test_stream_refusal_and_length():
    raw = run([chunk({"role": "assistant", "content": "Par"}), chunk({"refusal": "no"}, finish="length")])
    out = events(raw)
    two = {"item_id": "msg_T_0", "output_index": 0, "content_index": 1}
    item = {"id": "msg_T_0", "type": "message", "status": "incomplete", "role": "assistant",
            "content": [{"type": "output_text", "text": "Par", "annotations": []}, {"type": "refusal", "refusal": "no"}]}
    assert out[6:] == [
        {"type": "response.content_part.done", **MSG, "part": {"type": "output_text", "text": "Par", "annotations": []}},
        {"type": "response.content_part.added", **two, "part": {"type": "refusal", "refusal": ""}},
        {"type": "response.refusal.delta", **two, "delta": "no"},
        {"type": "response.refusal.done", **two, "refusal": "no"},
        {"type": "response.content_part.done", **two, "part": {"type": "refusal", "refusal": "no"}},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        lifecycle("incomplete", [item], None, incomplete_details={"reason": "max_output_tokens"}),
    ]


def test_stream_error_chunk_fails_the_response():
    raw = run([chunk({"role": "assistant", "content": "Hi"}),
               {"error": {"message": "overloaded", "type": "overloaded_error", "status": 529}}])
    out = events(raw)
    assert out[-2] == {"type": "response.output_item.done", "output_index": 0, "item": text_item("Hi", status="incomplete")}
    assert out[-1] == lifecycle("failed", [text_item("Hi", status="incomplete")], None,
                                error={"code": "server_error", "message": "overloaded"})


def test_stream_error_first_and_rate_limit():
    out = events(run([{"error": {"message": "slow down", "type": "rate_limit_error", "status": 429}}]))
    assert [e["type"] for e in out] == ["response.created", "response.in_progress", "response.failed"]
    assert out[-1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}


def test_stream_cut_before_finish_fails():
    out = events(run([chunk({"role": "assistant", "content": "Hi"})]))
    assert out[-1]["type"] == "response.failed"
    assert "ended before the answer was complete" in out[-1]["response"]["error"]["message"]


# ---------------------------------------------------------------- the real SDK


def sdk_client(raw: bytes) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    return openai.OpenAI(api_key="k", base_url="http://gw/v1", http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))


def test_sdk_assembles_text_and_reasoning():
    raw = run([chunk({"role": "assistant", "reasoning_content": "think"}), chunk({"content": "Hel"}),
               chunk({"content": "lo"}, finish="stop"), chunk(usage=USAGE)])
    with sdk_client(raw) as client, client.responses.stream(model="gpt-test", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello"
    assert final.output[0].type == "reasoning" and final.output[0].summary[0].text == "think"
    assert final.usage is not None and final.usage.input_tokens == 10


def test_sdk_assembles_function_calls():
    tools = [{"type": "function", "name": "get", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}},
              "required": ["q"], "additionalProperties": False}, "strict": True}]
    raw = run([chunk({"role": "assistant"}), call_chunk(0, '{"q":', "call_a", "get"), call_chunk(0, "1}"),
               call_chunk(1, '{"q":2}', "call_b", "get"), chunk(finish="tool_calls"), chunk(usage=USAGE)],
              request={"model": "gpt-test", "input": "hi", "tools": tools})
    with sdk_client(raw) as client, client.responses.stream(model="gpt-test", input="hi", tools=tools) as stream:
        final = stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [("call_a", "get", '{"q":1}'), ("call_b", "get", '{"q":2}')]
    assert [c.parsed_arguments for c in calls] == [{"q": 1}, {"q": 2}]


def test_sdk_sees_failure():
    raw = run([chunk({"role": "assistant", "content": "Hi"}), {"error": {"message": "boom", "type": "api_error", "status": 500}}])
    with sdk_client(raw) as client, client.responses.stream(model="gpt-test", input="hi") as stream:
        kinds = [e.type for e in stream]
        assert kinds[-1] == "response.failed"
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
