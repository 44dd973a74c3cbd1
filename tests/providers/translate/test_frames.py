"""The translation plan and the stream filters that apply it: golden tests, no HTTP."""

from __future__ import annotations

import orjson
import pytest

from providers.base import ANTHROPIC, GEMINI, OPENAI
from providers.translate import ArrayFrame, Converter, Untranslatable, plan
from providers.translate import chat as chat_codec
from providers.translate.common import State, anthropic_id, original_id


def test_same_protocol_passes_through() -> None:
    assert plan(OPENAI, "chat/completions", OPENAI, stream=True, responses_over_chat=False, array=False, model="m") is None
    assert plan(ANTHROPIC, "messages", ANTHROPIC, stream=True, responses_over_chat=False, array=False, model="m") is None
    assert plan(OPENAI, "responses", OPENAI, stream=False, responses_over_chat=False, array=False, model="m") is None


def test_vendor_endpoints() -> None:
    def target(client: str, endpoint: str, vendor: str, stream: bool = False, **kw: bool) -> str | None:
        t = plan(client, endpoint, vendor, stream=stream, responses_over_chat=kw.get("over_chat", False), array=False, model="m")
        assert t is not None
        return t.endpoint

    assert target(ANTHROPIC, "messages", OPENAI) == "chat/completions"
    assert target(OPENAI, "chat/completions", ANTHROPIC) == "messages"
    assert target(OPENAI, "chat/completions", GEMINI, stream=True) == "streamGenerateContent"
    assert target(GEMINI, "streamGenerateContent", ANTHROPIC, stream=True) == "messages"
    assert target(OPENAI, "responses", OPENAI, over_chat=True) == "chat/completions"
    assert target(ANTHROPIC, "messages/count_tokens", GEMINI) == "countTokens"
    assert target(GEMINI, "countTokens", ANTHROPIC) == "messages/count_tokens"
    assert target(ANTHROPIC, "messages/count_tokens", OPENAI) is None  # estimated by the gateway


def test_an_endpoint_with_no_counterpart_is_untranslatable() -> None:
    with pytest.raises(Untranslatable, match="embeddings"):
        plan(OPENAI, "embeddings", ANTHROPIC, stream=False, responses_over_chat=False, array=False, model="m")


def test_gemini_stream_without_sse_is_reframed_even_on_gemini() -> None:
    t = plan(GEMINI, "streamGenerateContent", GEMINI, stream=True, responses_over_chat=False, array=True, model="m")
    assert t is not None and t.client is None and not t.sse


def test_array_frame_sends_each_element_as_it_comes() -> None:
    frame = ArrayFrame(1 << 20)
    assert frame.feed(b'data: {"a":1}\r\n\r\ndata: {"b"') == b'[{"a":1}'
    assert frame.feed(b':2}\r\n\r\n') == b',\r\n{"b":2}'
    assert frame.flush() == b"]"
    assert ArrayFrame(10).flush() == b"[]"


class _Upper:
    """A stand-in client encoder: each chunk's content, upper-cased, as one line."""

    def chunk(self, chunk: dict) -> bytes:
        return chunk["choices"][0]["delta"]["content"].upper().encode() + b"\n"

    def end(self) -> bytes:
        return b"END\n"


def test_converter_reads_whole_events_across_chunks() -> None:
    conv = Converter(chat_codec.StreamToChat(State("m")), _Upper(), 1 << 20)
    event = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    assert conv.feed(event[:10]) == b""
    assert conv.feed(event[10:] + event[:5]) == b"HI\n"
    assert conv.feed(event[5:] + b": comment\n\ndata: [DONE]\n\n") == b"HI\n"
    assert conv.flush() == b"END\n"
    assert conv.at_boundary


def test_converter_drops_an_event_past_the_limit() -> None:
    conv = Converter(chat_codec.StreamToChat(State("m")), _Upper(), 16)
    assert conv.feed(b"data: " + b"x" * 40) == b""
    assert conv.feed(b'\n\ndata: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n') == b"OK\n"


def test_chat_client_half_shows_usage_only_when_asked() -> None:
    state = State("public")
    chat_codec.request_to_chat({"model": "x", "messages": [], "stream": True}, state)
    enc = chat_codec.StreamFromChat(state)
    usage = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1}}
    assert enc.chunk(usage) == b""
    assert enc.end() == b"data: [DONE]\n\n"
    chat_codec.request_to_chat({"model": "x", "messages": [], "stream_options": {"include_usage": True}}, state)
    assert orjson.loads(chat_codec.StreamFromChat(state).chunk(usage)[6:]) == usage
    err = chat_codec.StreamFromChat(state)
    assert err.chunk({"error": {"message": "boom", "type": "overloaded_error"}}) == (
        b'data: {"error":{"message":"boom","type":"overloaded_error","param":null,"code":null}}\n\n'
    )
    assert err.end() == b""


def test_chat_vendor_half_shortens_names_and_restores_them() -> None:
    state = State("public")
    long_name = "n" * 70
    sent = chat_codec.request_from_chat(
        {
            "model": "public",
            "tools": [{"type": "function", "function": {"name": long_name, "parameters": {}}}],
            "tool_choice": {"type": "function", "function": {"name": long_name}},
            "messages": [
                {"role": "assistant", "content": None, "reasoning_content": "hm", "thinking_blocks": [],
                 "tool_calls": [{"id": "1", "type": "function", "function": {"name": long_name, "arguments": "{}"}}]},
            ],
        },
        state,
    )
    short = sent["tools"][0]["function"]["name"]
    assert len(short) == 64 and sent["tool_choice"]["function"]["name"] == short
    assert sent["messages"][0] == {"role": "assistant", "content": None,
                                   "tool_calls": [{"id": "1", "type": "function", "function": {"name": short, "arguments": "{}"}}]}
    delta = {"tool_calls": [{"index": 0, "id": "1", "function": {"name": short, "arguments": ""}}]}
    [out] = chat_codec.StreamToChat(state).event(None, {"model": "up", "choices": [{"index": 0, "delta": delta}]})
    assert out["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == long_name


def test_tool_ids_made_safe_for_anthropic_and_back() -> None:
    for original in ("call_abc-1", "functions.get_weather:0", "call.a:1", "ü"):
        safe = anthropic_id(original)
        assert safe.replace("_", "").replace("-", "").isalnum()
        assert original_id(safe) == original
    assert anthropic_id("call_abc-1") == "call_abc-1"  # already safe: unchanged


def test_chat_vendor_half_names_the_limit_as_the_model_takes_it() -> None:
    for upstream, field in (("deepseek-chat", "max_tokens"), ("qwen-max", "max_tokens"), ("o3-mini", "max_completion_tokens"),
                            ("gpt-5-mini", "max_completion_tokens")):
        state = State("public", upstream_model=upstream)
        sent = chat_codec.request_from_chat({"model": "public", "messages": [], "max_completion_tokens": 10}, state)
        assert sent[field] == 10 and len({"max_tokens", "max_completion_tokens"} & sent.keys()) == 1
