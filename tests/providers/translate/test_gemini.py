"""providers/translate/gemini.py: Gemini requests, answers and streams to the chat pivot and back, checked
against golden outputs; what the client half produces is also read by the real google-genai types."""

from __future__ import annotations

import itertools
import re
from typing import Any

import orjson
import pytest
from google.genai import types

from providers.translate import gemini
from providers.translate.common import State, anthropic_id
from providers.translate.gemini import (
    StreamFromChat,
    StreamToChat,
    answer_from_chat,
    answer_to_chat,
    count_answer,
    count_request_from_chat,
    count_request_to_chat,
    count_tokens_of,
    request_from_chat,
    request_to_chat,
)

SIG = "CiQBjz1r+/++ECA="  # a thoughtSignature as Gemini sends it: standard base64, padded
SIG_IN_ID = "CiQBjz1r-_--ECA"


@pytest.fixture(autouse=True)
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = itertools.count()
    monkeypatch.setattr(gemini, "_new_id", lambda: f"call_new{next(ids)}")
    monkeypatch.setattr(gemini, "now", lambda: 1700)


def state(stream: bool = False) -> State:
    return State(model="gem-test", stream=stream)


def sdk(obj: dict[str, Any]) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(obj)


def events(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a Gemini SSE stream, each framed `data: ...` CRLF CRLF."""
    assert data.endswith(b"\r\n\r\n")
    return [orjson.loads(e.removeprefix(b"data: ")) for e in data.split(b"\r\n\r\n") if e]


# ================================================================ client half: Gemini client -> chat


def test_request_to_chat_every_part_kind():
    body = {
        "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "and kind"}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "look"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO+w/="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                {"inlineData": {"mimeType": "audio/mpeg", "data": "SUQz"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x/y.jpg"}},
            ]},
            {"role": "model", "parts": [
                {"text": "hmm", "thought": True},
                {"text": "Let me "},
                {"text": "check."},
                {"functionCall": {"id": "g1", "name": "get", "args": {"a": 1}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "get", "args": {"a": 2}}},
                {"executableCode": {"code": "print(1)"}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "g1", "name": "get", "response": {"temp": 3}}},
                {"functionResponse": {"name": "get", "response": {"result": "one"}}},
                {"text": "thanks"},
            ]},
        ],
    }
    assert request_to_chat(body, state()) == {
        "model": "gem-test",
        "messages": [
            {"role": "system", "content": "be brief\nand kind"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO+w/="}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "document.pdf"}},
                {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
            ]},
            {"role": "assistant", "content": "Let me check.", "reasoning_content": "hmm", "tool_calls": [
                {"id": "g1", "type": "function", "function": {"name": "get", "arguments": '{"a":1}'}},
                {"id": "call_1_1", "type": "function", "function": {"name": "get", "arguments": '{"a":2}'}},
            ]},
            # answered by id, else by name in call order
            {"role": "tool", "tool_call_id": "g1", "content": '{"temp":3}'},
            {"role": "tool", "tool_call_id": "call_1_1", "content": "one"},
            {"role": "user", "content": "thanks"},
        ],
    }


def test_request_to_chat_as_google_genai_sends_it():
    """The body google-genai 3.x puts on the wire: nested fields in snake_case, bytes URL-safe base64."""
    body = {
        "contents": [
            {"parts": [{"text": "hi"}, {"inlineData": {"data": "iVBO-w_=", "mime_type": "image/png"}},
                       {"fileData": {"file_uri": "gs://x/y.pdf", "mime_type": "application/pdf"}}], "role": "user"},
            {"parts": [{"functionCall": {"id": "c1", "args": {"a": "b"}, "name": "get"}, "thoughtSignature": "c2ln"}],
             "role": "model"},
            {"parts": [{"functionResponse": {"id": "c1", "name": "get", "response": {"output": "ok"}}}], "role": "user"},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}], "role": "user"},
        "tools": [
            {"googleSearch": {}},
            {"functionDeclarations": [{"description": "d", "name": "get", "parameters_json_schema": {
                "type": "object", "properties": {"a": {"type": "string"}}}}]},
        ],
        "toolConfig": {"functionCallingConfig": {"allowedFunctionNames": ["get"], "mode": "ANY"}},
        "generationConfig": {
            "temperature": 0.3, "topK": 4.0, "maxOutputTokens": 20, "stopSequences": ["x"],
            "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
            "thinkingConfig": {"include_thoughts": True, "thinking_budget": 1024},
        },
    }
    assert request_to_chat(body, state()) == {
        "model": "gem-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO+w/="}},
                {"type": "image_url", "image_url": {"url": "gs://x/y.pdf"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"a":"b"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get"}},
        "max_completion_tokens": 20, "temperature": 0.3, "stop": ["x"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}},
        "reasoning_effort": "low",
    }


def test_request_to_chat_calls_without_ids_pair_by_name_in_order():
    body = {"contents": [
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}}, {"functionCall": {"name": "b", "args": {}}},
                                    {"functionCall": {"name": "a", "args": {"n": 2}}}]},
        {"role": "function", "parts": [{"functionResponse": {"name": "b", "response": {"v": "b"}}},
                                       {"functionResponse": {"name": "a", "response": {"v": 1}}},
                                       {"functionResponse": {"name": "a", "response": {"v": 2}}}]},
    ]}
    messages = request_to_chat(body, state())["messages"]
    assert [m["id"] for m in messages[1]["tool_calls"]] == ["call_1_0", "call_1_1", "call_1_2"]
    assert [(m["tool_call_id"], m["content"]) for m in messages[2:]] == [
        ("call_1_1", '{"v":"b"}'), ("call_1_0", '{"v":1}'), ("call_1_2", '{"v":2}'),
    ]
    assert request_to_chat(body, state())["messages"] == messages  # the same ids every time: prompt caches hold


def test_request_to_chat_settings_and_gemini_schemas():
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [
            {"name": "find", "parameters": {"type": "OBJECT", "properties": {
                "q": {"type": "STRING", "nullable": True, "format": "enum", "enum": ["a", "b"]},
                "n": {"type": "INTEGER", "format": "int32", "max_items": 3},
                "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "min_items": 1},
            }, "required": ["q"], "propertyOrdering": ["q", "n", "tags"]}},
            {"name": "ping"},
        ]}, {"codeExecution": {}}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
        "generationConfig": {
            "topP": 0.9, "seed": 7, "presencePenalty": 0.1, "frequencyPenalty": 0.2, "candidateCount": 2,
            "responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {"x": {"type": "NUMBER"}}},
            "thinkingConfig": {"thinkingLevel": "HIGH"},
        },
    }
    st = state(stream=True)
    assert request_to_chat(body, st) == {
        "model": "gem-test",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "find", "parameters": {"type": "object", "properties": {
                "q": {"type": ["string", "null"], "enum": ["a", "b"]},
                "n": {"type": "integer", "format": "int32", "maxItems": 3},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            }, "required": ["q"]}}},
            {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
        ],
        "tool_choice": "auto",
        "top_p": 0.9, "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.2, "n": 2,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "response", "schema": {"type": "object", "properties": {"x": {"type": "number"}}}}},
        "reasoning_effort": "high",
        "stream": True, "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(("config", "effort"), [
    ({"thinkingLevel": "low"}, "low"),
    ({"thinkingLevel": "MINIMAL"}, "minimal"),
    ({"thinkingBudget": 1024}, "low"),
    ({"thinkingBudget": 8192}, "medium"),
    ({"thinkingBudget": 24576}, "high"),
    ({"thinkingBudget": 0}, None),
    ({"thinkingBudget": -1}, None),
    ({"includeThoughts": True}, None),
])
def test_request_to_chat_thinking(config, effort):
    body = {"contents": [], "generationConfig": {"thinkingConfig": config}}
    assert request_to_chat(body, state()).get("reasoning_effort") == effort


@pytest.mark.parametrize(("calling", "choice"), [
    ({"mode": "ANY"}, "required"),
    ({"mode": "ANY", "allowedFunctionNames": ["a", "b"]}, "required"),
    ({"mode": "NONE"}, "none"),
    ({"mode": "AUTO"}, "auto"),
    ({}, None),
])
def test_request_to_chat_tool_choice(calling, choice):
    body = {"contents": [], "tools": [{"functionDeclarations": [{"name": "a"}]}], "toolConfig": {"functionCallingConfig": calling}}
    assert request_to_chat(body, state()).get("tool_choice") == choice


def test_request_to_chat_json_without_schema():
    body = {"contents": [], "generationConfig": {"responseMimeType": "application/json"}}
    assert request_to_chat(body, state())["response_format"] == {"type": "json_object"}


def test_count_request_to_chat_both_shapes():
    plain = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert count_request_to_chat(plain, state()) == {"model": "gem-test", "messages": [{"role": "user", "content": "hi"}]}
    wrapped = {"generateContentRequest": {"model": "models/x", "systemInstruction": {"parts": [{"text": "s"}]}, **plain,
                                          "tools": [{"functionDeclarations": [{"name": "f"}]}]}}
    assert count_request_to_chat(wrapped, state()) == {
        "model": "gem-test",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
    }
    assert count_answer(42) == {"totalTokens": 42}


# ---------------------------------------------------------------- answers to a Gemini client


CHAT_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "reasoning_content": "think",
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get", "arguments": "not json"}},
        ]}}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
              "prompt_tokens_details": {"cached_tokens": 40}, "completion_tokens_details": {"reasoning_tokens": 10}},
}


def test_answer_from_chat():
    out = answer_from_chat(CHAT_ANSWER, state())
    assert out == {
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "think", "thought": True},
                {"text": "Checking."},
                {"functionCall": {"name": "get", "args": {"city": "Oslo"}, "id": "call_a"}},
                {"functionCall": {"name": "get", "args": {}, "id": "call_b"}},
            ]},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 130,
                          "cachedContentTokenCount": 40, "thoughtsTokenCount": 10},
        "modelVersion": "gem-test",
        "responseId": "chatcmpl-1",
    }
    answer = sdk(out)
    assert answer.text == "Checking."
    assert [(c.id, c.name, c.args) for c in answer.function_calls or ()] == [("call_a", "get", {"city": "Oslo"}), ("call_b", "get", {})]
    assert answer.usage_metadata is not None and answer.usage_metadata.thoughts_token_count == 10


def test_answer_from_chat_filtered_and_empty():
    filtered = {"id": "x", "choices": [{"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant", "content": None}}]}
    assert answer_from_chat(filtered, state()) == {
        "candidates": [{"finishReason": "SAFETY", "index": 0}], "modelVersion": "gem-test", "responseId": "x",
    }
    empty = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": ""}}]}
    out = answer_from_chat(empty, state())
    assert out == {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "MAX_TOKENS", "index": 0}],
                   "modelVersion": "gem-test"}
    assert sdk(out).candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


# ---------------------------------------------------------------- streams to a Gemini client


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}


USAGE = {"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


def test_stream_from_chat_text_thoughts_and_parallel_calls():
    enc = StreamFromChat(state())
    calls = [
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get", "arguments": '{"city":"Rome"}'}}]}),
    ]
    out = [
        enc.chunk(chunk({"role": "assistant", "content": ""})),
        enc.chunk(chunk({"reasoning_content": "hmm"})),
        enc.chunk(chunk({"content": "Hi"})),
        *(enc.chunk(c) for c in calls),
        enc.chunk(chunk({}, "tool_calls")),
        enc.chunk(USAGE),
        enc.end(),
    ]
    head = b'"modelVersion":"gem-test","responseId":"chatcmpl-9"}\r\n\r\n'
    assert out == [
        b"",
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"hmm","thought":true}]},"index":0}],' + head,
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"index":0}],' + head,
        b"", b"", b"",
        # the first call is whole when the second starts
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get","args":{"city":"Oslo"},"id":"call_a"}}]},"index":0}],' + head,
        b"",  # the finish waits for the usage
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get","args":{"city":"Rome"},"id":"call_b"}}]},'
        b'"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12},' + head,
        b"",
    ]
    answers = [sdk(e) for e in events(b"".join(out))]
    assert [a.candidates[0].content.parts[0].thought for a in answers[:1]] == [True]
    assert answers[1].text == "Hi"
    assert [c.args for a in answers for c in a.function_calls or ()] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert answers[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert answers[-1].usage_metadata is not None and answers[-1].usage_metadata.total_token_count == 12


def test_stream_from_chat_array_framing_and_end_without_usage():
    enc = StreamFromChat(state(), array=True)
    out = [
        enc.chunk(chunk({"role": "assistant", "content": "A"})),
        enc.chunk(chunk({"content": "B"})),
        enc.chunk(chunk({}, "length")),
        enc.end(),
    ]
    assert out == [
        b'[{"candidates":[{"content":{"role":"model","parts":[{"text":"A"}]},"index":0}],"modelVersion":"gem-test","responseId":"chatcmpl-9"}',
        b',\r\n{"candidates":[{"content":{"role":"model","parts":[{"text":"B"}]},"index":0}],"modelVersion":"gem-test","responseId":"chatcmpl-9"}',
        b"",
        b',\r\n{"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"finishReason":"MAX_TOKENS","index":0}],'
        b'"modelVersion":"gem-test","responseId":"chatcmpl-9"}]',
    ]
    items = orjson.loads(b"".join(out))
    assert "".join(sdk(i).text or "" for i in items) == "AB"
    assert StreamFromChat(state(), array=True).end() == b"[]"


def test_stream_from_chat_finish_with_last_delta_and_text_closing_a_call():
    enc = StreamFromChat(state())
    enc.chunk(chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}))
    closed = events(enc.chunk(chunk({"content": "done"})))
    assert closed[0]["candidates"][0]["content"]["parts"] == [{"functionCall": {"name": "f", "args": {}, "id": "c"}}, {"text": "done"}]
    assert enc.chunk(chunk({"content": "!"}, "stop")) == b""
    final = events(enc.chunk(USAGE) + enc.end())
    assert final[0]["candidates"] == [{"content": {"role": "model", "parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0}]


def test_stream_from_chat_error():
    enc = StreamFromChat(state())
    assert enc.chunk(chunk({"content": "x"})).startswith(b"data: ")
    assert enc.chunk({"error": {"message": "slow down", "type": "rate_limit_error", "status": 429}}) == (
        b'data: {"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}\r\n\r\n'
    )
    assert enc.chunk(chunk({"content": "late"})) == b"" and enc.end() == b""
    arr = StreamFromChat(state(), array=True)
    assert arr.chunk({"error": {"message": "boom"}}) + arr.end() == b'[{"error":{"code":500,"message":"boom","status":"INTERNAL"}}]'


def test_stream_from_chat_anthropic_overloaded_is_unavailable():
    # An Anthropic vendor's mid-stream overloaded_error (529, no Gemini status) reaches a Gemini client
    # as Gemini's own overloaded answer, 503 UNAVAILABLE.
    enc = StreamFromChat(state())
    assert enc.chunk({"error": {"message": "Overloaded", "type": "overloaded_error", "status": 529}}) == (
        b'data: {"error":{"code":503,"message":"Overloaded","status":"UNAVAILABLE"}}\r\n\r\n'
    )


# ================================================================ vendor half: chat -> Gemini vendor


def test_request_from_chat_everything():
    body = {
        "model": "gem-test", "stream": True, "stream_options": {"include_usage": True}, "user": "u",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://x/cat.JPG?s=1"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
                {"type": "file", "file": {"file_id": "file-1"}},
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            ]},
            {"role": "developer", "content": [{"type": "text", "text": "no emojis"}]},
            {"role": "assistant", "content": "Checking.", "reasoning_content": "hmm", "tool_calls": [
                {"id": f"g1__ts__{SIG_IN_ID}", "type": "function", "function": {"name": "get.weather", "arguments": '{"city":"Oslo"}'}},
                {"id": "g2", "type": "function", "function": {"name": "get.weather", "arguments": '{"city":"Rome"}'}},
            ]},
            {"role": "tool", "tool_call_id": f"g1__ts__{SIG_IN_ID}", "content": "sunny"},
            {"role": "tool", "tool_call_id": "g2", "content": '{"temp": 20}'},
            {"role": "user", "content": "and [1, 2]?"},
        ],
        "tools": [{"type": "function", "function": {"name": "get.weather", "description": "Weather", "strict": True, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}}],
        "tool_choice": {"type": "function", "function": {"name": "get.weather"}},
        "parallel_tool_calls": False,
        "max_tokens": 100, "temperature": 0.5, "top_p": 0.8, "stop": "END", "n": 2, "seed": 3,
        "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "medium",
    }
    st = state()
    assert request_from_chat(body, st) == {
        "contents": [
            {"role": "user", "parts": [
                {"text": "look"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x/cat.JPG?s=1"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
            ]},
            {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "g1"}, "thoughtSignature": SIG},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}, "id": "g2"}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}, "id": "g1"}},
                {"functionResponse": {"name": "get_weather", "response": {"temp": 20}, "id": "g2"}},
                {"text": "and [1, 2]?"},
            ]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "no emojis"}]},
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather", "parameters": {
            "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {
            "maxOutputTokens": 100, "temperature": 0.5, "topP": 0.8, "seed": 3, "presencePenalty": 0.1,
            "frequencyPenalty": 0.2, "candidateCount": 2, "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True},
        },
    }
    assert st.client_tool_name("get_weather") == "get.weather"


def test_request_from_chat_schema_cut_to_gemini_subset():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "$defs": {
            "Unit": {"type": "string", "enum": ["c", "f"], "description": "unit"},
            "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}},
        },
        "properties": {
            "unit": {"$ref": "#/$defs/Unit"},
            "tree": {"$ref": "#/$defs/Node"},
            "when": {"type": "string", "format": "date-time", "default": "now", "examples": ["2024-01-01T00:00:00Z"]},
            "site": {"type": "string", "format": "uri", "pattern": "^https://"},
            "maybe": {"type": ["string", "null"], "maxLength": 5},
            "either": {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}], "description": "n"},
            "mixed": {"type": ["string", "number"]},
            "shape": {"type": ["object", "array", "null"], "description": "d", "properties": {"x": {"type": "string"}},
                      "items": {"type": "integer"}, "minItems": 1},
            "fixed": {"const": "yes"},
            "level": {"type": "integer", "enum": [1, 2, 3], "minimum": 1},
            "one": {"oneOf": [{"type": "string"}, {"type": "boolean"}]},
            "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                               {"properties": {"b": {"type": "number", "format": "double"}}, "required": ["b"]}]},
            "list": {"type": "array"},
            "free": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["unit", "ghost"],
    }
    body = {"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "o", "strict": True, "schema": schema}}}
    out = request_from_chat(body, state())
    cleaned = {
        "type": "OBJECT",
        "properties": {
            "unit": {"description": "unit", "enum": ["c", "f"], "type": "STRING"},
            "tree": {"type": "OBJECT", "properties": {"child": {"type": "OBJECT"}}},
            "when": {"type": "STRING", "format": "date-time"},
            "site": {"pattern": "^https://", "type": "STRING"},
            "maybe": {"maxLength": 5, "type": "STRING", "nullable": True},
            "either": {"type": "INTEGER", "description": "n", "nullable": True},
            "mixed": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
            "shape": {"description": "d", "minItems": 1, "nullable": True, "anyOf": [
                {"type": "OBJECT", "properties": {"x": {"type": "STRING"}}},
                {"type": "ARRAY", "items": {"type": "INTEGER"}},
            ]},
            "fixed": {"enum": ["yes"], "type": "STRING"},
            "level": {"minimum": 1, "type": "INTEGER"},
            "one": {"anyOf": [{"type": "STRING"}, {"type": "BOOLEAN"}]},
            "both": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "NUMBER", "format": "double"}},
                     "required": ["a", "b"]},
            "list": {"type": "ARRAY", "items": {"type": "STRING"}},
            "free": {"type": "OBJECT"},
        },
        "required": ["unit"],
    }
    assert out["tools"] == [{"functionDeclarations": [{"name": "f", "parameters": cleaned}]}]
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": cleaned}
    types.Schema.model_validate(cleaned)  # the SDK's own model of Gemini's schema takes it


def test_request_from_chat_tool_without_parameters_and_foreign_calls():
    body = {
        "messages": [
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "now", "arguments": ""}},
                {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "text", "text": "[1, 2]"}]},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "12:00"},
        ],
        "tools": [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "none",
    }
    assert request_from_chat(body, state()) == {
        "contents": [
            {"role": "user", "parts": [{"text": "time?"}]},
            {"role": "model", "parts": [
                # another vendor's calls carry no signature: Gemini 3 takes Google's placeholder on the first
                {"functionCall": {"name": "now", "args": {}, "id": "toolu_1"}, "thoughtSignature": "skip_thought_signature_validator"},
                {"functionCall": {"name": "now", "args": {}, "id": "toolu_2"}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "now", "response": {"result": "[1, 2]"}, "id": "toolu_1"}},
                {"functionResponse": {"name": "now", "response": {"result": "12:00"}, "id": "toolu_2"}},
            ]},
        ],
        "tools": [{"functionDeclarations": [{"name": "now"}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
    }


def test_request_from_chat_only_system_becomes_contents():
    assert request_from_chat({"messages": [{"role": "system", "content": "hi"}]}, state()) == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    }


@pytest.mark.parametrize(("effort", "thinking"), [
    ("none", {"thinkingBudget": 0}),
    ("minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("bogus", None),
])
def test_request_from_chat_reasoning_effort(effort, thinking):
    out = request_from_chat({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}, state())
    assert out.get("generationConfig", {}).get("thinkingConfig") == thinking


def test_count_request_from_chat():
    body = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert count_request_from_chat(body, state()) == {
        "contents": [{"role": "user", "parts": [{"text": "sys"}, {"text": '[{"functionDeclarations":[{"name":"f"}]}]'}, {"text": "hi"}]}],
    }
    assert count_request_from_chat({"messages": [{"role": "assistant", "content": "a"}]}, state()) == {
        "contents": [{"role": "model", "parts": [{"text": "a"}]}],
    }
    assert count_tokens_of({"totalTokens": 31}) == 31
    assert count_tokens_of({}) is None


# ---------------------------------------------------------------- Gemini answers to chat


GEMINI_ANSWER = {
    "candidates": [{
        "content": {"role": "model", "parts": [
            {"text": "plan", "thought": True},
            {"text": "Calling."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}, "id": "g2"}},
        ]},
        "finishReason": "STOP",
        "index": 0,
    }],
    "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 12, "thoughtsTokenCount": 8, "totalTokenCount": 70,
                      "cachedContentTokenCount": 20, "toolUsePromptTokenCount": 0},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "resp-1",
}


def test_answer_to_chat_calls_end_with_tool_calls():
    st = state()
    st.vendor_tool_name("get.weather")
    assert answer_to_chat(GEMINI_ANSWER, st) == {
        "id": "resp-1", "object": "chat.completion", "created": 1700, "model": "gem-test",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Calling.", "reasoning_content": "plan",
            "tool_calls": [
                {"id": f"call_new0__ts__{SIG_IN_ID}", "type": "function", "function": {"name": "get.weather", "arguments": '{"city":"Oslo"}'}},
                {"id": "g2", "type": "function", "function": {"name": "get.weather", "arguments": '{"city":"Rome"}'}},
            ]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70,
                  "prompt_tokens_details": {"cached_tokens": 20}, "completion_tokens_details": {"reasoning_tokens": 8}},
    }


def test_thought_signature_round_trip_through_an_anthropic_client():
    """Gemini vendor -> pivot id -> an Anthropic client's tool_use id and back -> the same signature on
    the functionCall part Gemini gets next turn."""
    st = state()
    call = answer_to_chat(GEMINI_ANSWER, st)["choices"][0]["message"]["tool_calls"][0]
    client_id = anthropic_id(call["id"])
    assert client_id == call["id"] and re.fullmatch(r"[a-zA-Z0-9_-]+", client_id)
    nxt = request_from_chat({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": client_id, "type": "function", "function": call["function"]}]},
        {"role": "tool", "tool_call_id": client_id, "content": "sunny"},
    ]}, st)
    assert nxt["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_new0"}, "thoughtSignature": SIG}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}, "id": "call_new0"}}]},
    ]


@pytest.mark.parametrize(("reason", "finish"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"), ("MALFORMED_FUNCTION_CALL", "stop"), ("OTHER", "stop"), (None, "stop"),
])
def test_answer_to_chat_finish_reasons(reason, finish):
    answer = {"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert answer_to_chat(answer, state())["choices"][0]["finish_reason"] == finish


def test_answer_to_chat_blocked_prompt():
    answer = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "responseId": "r"}
    assert answer_to_chat(answer, state()) == {
        "id": "r", "object": "chat.completion", "created": 1700, "model": "gem-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": "content_filter"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}},
    }


# ---------------------------------------------------------------- Gemini streams to chat


def pivot(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"id": "resp-2", "object": "chat.completion.chunk", "created": 1700, "model": "gem-test",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_stream_to_chat_every_event_kind():
    dec = StreamToChat(state())
    usage1 = {"promptTokenCount": 10, "totalTokenCount": 10}
    usage2 = {"promptTokenCount": 10, "candidatesTokenCount": 6, "thoughtsTokenCount": 4, "totalTokenCount": 20}
    out = [
        dec.event(None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "think", "thought": True}]}, "index": 0}],
                         "usageMetadata": usage1, "responseId": "resp-2"}),
        dec.event(None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}, {"text": "lo"}]}, "index": 0}],
                         "usageMetadata": usage1, "responseId": "resp-2"}),
        dec.event(None, {"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": SIG},
            {"functionCall": {"name": "b", "args": {}}}]}, "index": 0}], "responseId": "resp-2"}),
        dec.event(None, {"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"id": "g3", "name": "c", "args": {"y": [1]}}}]}, "finishReason": "STOP", "index": 0}],
                         "usageMetadata": usage2, "responseId": "resp-2"}),
        dec.end(),
    ]
    assert out == [
        [pivot({"role": "assistant", "reasoning_content": "think"})],
        [pivot({"content": "Hello"})],
        [pivot({"tool_calls": [
            {"index": 0, "id": f"call_new0__ts__{SIG_IN_ID}", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
            {"index": 1, "id": "call_new1", "type": "function", "function": {"name": "b", "arguments": "{}"}},
        ]})],
        [pivot({"tool_calls": [{"index": 2, "id": "g3", "type": "function", "function": {"name": "c", "arguments": '{"y":[1]}'}}]}, "tool_calls")],
        [{"id": "resp-2", "object": "chat.completion.chunk", "created": 1700, "model": "gem-test", "choices": [],
          "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20,
                    "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 4}}}],
    ]


def test_stream_to_chat_calls_then_empty_stop_chunk():
    dec = StreamToChat(state())
    dec.event(None, {"responseId": "resp-2", "candidates": [{"content": {"parts": [{"functionCall": {"name": "a", "args": {}}}]}}]})
    assert dec.event(None, {"responseId": "resp-2", "candidates": [
        {"content": {"role": "model", "parts": [{"text": "", "thoughtSignature": SIG}]}, "finishReason": "STOP", "index": 0}]}) == [
        pivot({}, "tool_calls")
    ]
    assert dec.event(None, {"responseId": "resp-2", "candidates": [{"content": {"parts": [{"text": ""}]}}]}) == []
    assert dec.end() == []  # no usage seen: none invented


def test_stream_to_chat_text_ending_in_max_tokens_and_blocked_prompt():
    dec = StreamToChat(state())
    assert dec.event(None, {"responseId": "resp-2", "candidates": [
        {"content": {"parts": [{"text": "cut"}]}, "finishReason": "MAX_TOKENS"}]}) == [pivot({"role": "assistant", "content": "cut"}, "length")]
    blocked = StreamToChat(state())
    assert blocked.event(None, {"responseId": "resp-2", "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                "usageMetadata": {"promptTokenCount": 3}}) == [
        pivot({"role": "assistant", "content": ""}, "content_filter")
    ]
    assert blocked.end()[0]["usage"]["prompt_tokens"] == 3


def test_stream_to_chat_error():
    dec = StreamToChat(state())
    dec.event(None, {"responseId": "resp-2", "usageMetadata": {"promptTokenCount": 3},
                     "candidates": [{"content": {"parts": [{"text": "a"}]}}]})
    assert dec.event(None, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}) == [
        {"error": {"message": "overloaded", "type": "overloaded_error", "status": 503}}
    ]
    assert dec.event(None, {"candidates": [{"content": {"parts": [{"text": "b"}]}}]}) == []
    assert dec.end() == []


def test_gemini_vendor_stream_to_gemini_shaped_client_stream():
    """Both halves chained (as a Gemini client on a Gemini vendor never is, but it shows the stream
    survives the pivot): text, a signed call and the usage, read by google-genai."""
    dec, enc = StreamToChat(state()), StreamFromChat(state())
    raw = [
        {"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi "}]}}]},
        {"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {"q": "x"}}, "thoughtSignature": SIG}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}},
    ]
    data = b"".join(enc.chunk(c) for e in raw for c in dec.event(None, e))
    data += b"".join(enc.chunk(c) for c in dec.end()) + enc.end()
    answers = [sdk(e) for e in events(data)]
    assert answers[0].text == "Hi "
    assert [(c.name, c.args, c.id) for c in answers[1].function_calls or ()] == [("f", {"q": "x"}, f"call_new0__ts__{SIG_IN_ID}")]
    assert answers[1].usage_metadata is not None and answers[1].usage_metadata.total_token_count == 7
