"""Anthropic Messages <-> the chat pivot: both halves of the codec that docs/translation.md describes.

Client half (an Anthropic client, any vendor): `request_to_chat`, `answer_from_chat`, `StreamFromChat`,
`count_request_to_chat`, `count_answer`. Vendor half (any client, an Anthropic vendor): `request_from_chat`,
`answer_to_chat`, `StreamToChat`, `count_request_from_chat`, `count_tokens_of`.

Where the protocols do not meet, the choice is made once, here:

- thinking `budget_tokens` <-> `reasoning_effort`: low 1024, medium 4096, high 16384 (xhigh 32768 one way);
  a budget reads back as the nearest effort on a log scale. Adaptive thinking takes `output_config.effort`;
  disabled or adaptive-without-effort sends no effort (the vendor's default).
- Unsigned reasoning (from a non-Anthropic vendor) reaches an Anthropic client as a thinking block with an
  empty signature; going to an Anthropic vendor only `thinking_blocks` (signed) are sent back.
- `response_format` is dropped going to Anthropic; tool `strict` is dropped both ways (each side's strict
  mode rejects schemas the other accepts). Server tools (web search, bash, ...) cannot run elsewhere and
  are dropped going to chat, with their blocks.
- A tool_result's `is_error` becomes an "Error: " prefix on the chat tool message; images in a tool
  result follow the tool messages in a user message (chat tool messages carry text only).
- Temperature is clamped to Anthropic's 0..1; with thinking on, the sampling settings Anthropic refuses
  are dropped, and thinking itself is dropped when the request forces a tool or replays a tool call
  without its thinking block (both are 400s at Anthropic). `n` > 1 is refused.
- The chat request gets `max_completion_tokens` (what current OpenAI models take); system blocks are
  joined by a blank line, and chat system messages from anywhere in the conversation go to `system`.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from providers.translate.common import (
    ANTHROPIC_ERROR_STATUS,
    ANTHROPIC_ERROR_TYPES,
    DEFAULT_MAX_TOKENS,
    Refused,
    State,
    anthropic_id,
    data_url,
    json_text,
    now,
    original_id,
    positive,
    reasoning_text,
    sse,
    tool_arguments,
)

Json = dict[str, Any]

_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
_MIN_BUDGET = 1024  # Anthropic refuses a smaller budget_tokens

# Anthropic stop_reason -> chat finish_reason (anything else: stop), and back for what is not stop or
# tool calls (see _stop_reason).
_FINISH = {"max_tokens": "length", "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
_STOP = {"length": "max_tokens", "content_filter": "refusal"}

# What Anthropic's count_tokens endpoint takes of a Messages request.
_COUNT_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


def _text_of(content: Any) -> str:
    """The text of a chat message's content (a string or parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or p.get("refusal") or "" for p in content if isinstance(p, dict) and p.get("type") in ("text", "refusal"))
    return ""


def _message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id:
        return chat_id if chat_id.startswith("msg_") else "msg_" + chat_id
    return "msg_" + uuid.uuid4().hex


def _usage_to_chat(usage: Json) -> Json:
    """Anthropic usage -> chat usage: prompt_tokens counts cache reads and writes too."""
    read = positive(usage.get("cache_read_input_tokens"))
    write = positive(usage.get("cache_creation_input_tokens"))
    prompt = positive(usage.get("input_tokens")) + read + write
    completion = positive(usage.get("output_tokens"))
    details: Json = {"cached_tokens": read}
    if write:
        details["cache_write_tokens"] = write
    out: Json = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "prompt_tokens_details": details}
    thinking = usage.get("output_tokens_details")
    if isinstance(thinking, dict) and positive(thinking.get("thinking_tokens")):
        out["completion_tokens_details"] = {"reasoning_tokens": thinking["thinking_tokens"]}
    return out


def _usage_from_chat(usage: Json) -> Json:
    """Chat usage -> Anthropic usage: input_tokens counts only what was neither read from nor written to
    the cache."""
    prompt = positive(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    read = write = 0
    if isinstance(details, dict):
        read = min(positive(details.get("cached_tokens")), prompt)
        write = min(positive(details.get("cache_write_tokens")), prompt - read)
    out: Json = {"input_tokens": prompt - read - write, "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
                 "output_tokens": positive(usage.get("completion_tokens"))}
    completion = usage.get("completion_tokens_details")
    if isinstance(completion, dict) and positive(completion.get("reasoning_tokens")):
        out["output_tokens_details"] = {"thinking_tokens": completion["reasoning_tokens"]}
    return out


def _stop_reason(finish: Any, stop_sequence: Any, tool_calls: bool) -> tuple[str, str | None]:
    """Chat finish_reason -> (Anthropic stop_reason, stop_sequence). `tool_use` goes with tool calls and
    only with them, whatever the vendor said: Anthropic agents run the tools on that reason alone."""
    if isinstance(stop_sequence, str) and finish in (None, "stop"):
        return "stop_sequence", stop_sequence
    if finish in (None, "stop", "tool_calls", "function_call"):
        return ("tool_use" if tool_calls else "end_turn"), None
    return _STOP.get(finish, "end_turn"), None


def _error_body(error: Any) -> Json:
    """A pivot error chunk's `error` -> Anthropic's error shape."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    kind = error.get("type")
    if kind not in ANTHROPIC_ERROR_STATUS:
        status = error.get("status")
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error") if type(status) is int else "api_error"
    return {"type": "error", "error": {"type": kind, "message": str(error.get("message") or kind)}}


def _same_name(name: str) -> str:
    return name


def _blocks_to_message(blocks: list[Any], client_name: Callable[[str], str]) -> Json:
    """Anthropic assistant content -> a chat assistant message: thinking as reasoning_content and, with
    signatures, as thinking_blocks; tool_use as tool_calls under the ids and names the client knows.
    Server tool blocks (they ran at Anthropic) have no chat form and are left out."""
    texts: list[str] = []
    reasoning: list[str] = []
    thinking: list[Json] = []
    calls: list[Json] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking" or kind == "redacted_thinking":
            thinking.append(block)
            if kind == "thinking":
                reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            function = {"name": client_name(block.get("name", "")), "arguments": json_text(block.get("input") or {})}
            calls.append({"id": original_id(str(block.get("id", ""))), "type": "function", "function": function})
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if thinking:
        message["thinking_blocks"] = thinking
    if calls:
        message["tool_calls"] = calls
    return message


def _message_to_blocks(message: Json, vendor_name: Callable[[str], str], unsigned: bool) -> list[Json]:
    """A chat assistant message -> Anthropic content blocks. Thinking comes from `thinking_blocks`, else
    from reasoning with its `thinking_signature`, or, when `unsigned` (for a client, which sends it back
    to the gateway only), from bare reasoning with an empty signature; an Anthropic vendor refuses
    unsigned thinking."""
    blocks: list[Json] = []
    thinking = message.get("thinking_blocks")
    if isinstance(thinking, list) and thinking:
        blocks.extend(b for b in thinking if isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking"))
    else:
        # A chat client that put a stream back together (the openai SDK's stream helper does) has its
        # thinking as reasoning_content and the block's signature_delta as `thinking_signature`.
        reasoning = reasoning_text(message)
        signature = message.get("thinking_signature")
        signature = signature if isinstance(signature, str) else ""
        if reasoning and (signature or unsigned):
            blocks.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    text = _text_of(message.get("content")) or message.get("refusal")
    if isinstance(text, str) and text:
        blocks.append({"type": "text", "text": text})
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        call_id = anthropic_id(str(call.get("id") or f"call_{i}"))
        blocks.append({"type": "tool_use", "id": call_id, "name": vendor_name(function.get("name", "")), "input": tool_arguments(function.get("arguments"))})
    return blocks


# ---------------------------------------------------------------------------------------------------
# Client half: an Anthropic client, the pivot standing for the vendor.


def request_to_chat(body: Json, state: State) -> Json:
    """An Anthropic Messages request -> a chat completions request."""
    chat = _chat_core(body)
    if type(body.get("max_tokens")) is int:
        chat["max_completion_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):  # top_k has no chat equivalent
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    effort = _effort_of(body)
    if effort:
        chat["reasoning_effort"] = effort
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.get("schema") or {}}}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        chat["user"] = metadata["user_id"]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # message_delta must carry the real usage
    return chat


def count_request_to_chat(body: Json, state: State) -> Json:
    """An Anthropic count_tokens request -> a chat request holding what is counted."""
    return _chat_core(body)


def count_answer(tokens: int) -> Json:
    return {"input_tokens": tokens}


def _chat_core(body: Json) -> Json:
    """model, messages and tools: what a generation and a count share."""
    chat: Json = {"model": body.get("model"), "messages": _messages_to_chat(body)}
    tools = [_tool_to_chat(t) for t in body.get("tools") or () if isinstance(t, dict) and "input_schema" in t]
    choice = body.get("tool_choice")
    if tools:  # chat refuses tool_choice and parallel_tool_calls without tools
        chat["tools"] = tools
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "tool":
                chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
            elif kind in ("auto", "any", "none"):
                chat["tool_choice"] = "required" if kind == "any" else kind
            if choice.get("disable_parallel_tool_use"):
                chat["parallel_tool_calls"] = False
    return chat


def _tool_to_chat(tool: Json) -> Json:
    function: Json = {"name": tool.get("name", "")}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _effort_of(body: Json) -> str | None:
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        budget = positive(thinking.get("budget_tokens")) if isinstance(thinking, dict) else 0
        return "low" if budget < 2048 else "medium" if budget < 8192 else "high"
    if kind == "adaptive":
        config = body.get("output_config")
        effort = config.get("effort") if isinstance(config, dict) else None
        if effort in ("low", "medium", "high"):
            return str(effort)
        if effort in ("xhigh", "max"):
            return "high"
    return None


def _messages_to_chat(body: Json) -> list[Json]:
    out: list[Json] = []
    system = body.get("system")
    if isinstance(system, list):
        system = "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict) and b.get("type") == "text")
    if isinstance(system, str) and system:
        out.append({"role": "system", "content": system})
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role = "assistant" if message.get("role") == "assistant" else "user"
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            if role == "assistant":
                out.append(_blocks_to_message(content, _same_name))
            else:
                _user_to_chat(content, out)
    return out


def _user_to_chat(blocks: list[Any], out: list[Json]) -> None:
    """A user turn: its tool results become tool messages (first: they answer the assistant's calls),
    the rest one user message."""
    parts: list[Json] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_result":
            text, extra = _tool_result_to_chat(block)
            out.append({"role": "tool", "tool_call_id": original_id(str(block.get("tool_use_id", ""))), "content": text})
            parts.extend(extra)
        else:
            part = _part_to_chat(block)
            if part is not None:
                parts.append(part)
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})


def _tool_result_to_chat(block: Json) -> tuple[str, list[Json]]:
    """(text for the tool message, parts that only a user message can carry)."""
    content = block.get("content")
    if isinstance(content, list):
        parts = [part for item in content if isinstance(item, dict) and (part := _part_to_chat(item)) is not None]
        text = "\n".join(p["text"] for p in parts if p["type"] == "text")
        extra = [p for p in parts if p["type"] != "text"]
    else:
        text, extra = (content if isinstance(content, str) else ""), []
    if block.get("is_error"):
        text = "Error: " + text if text else "Error"
    return text, extra


def _part_to_chat(block: Json) -> Json | None:
    """A text, image or document block -> a chat content part (None: nothing chat can carry)."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    origin = source.get("type")
    if kind == "image":
        if origin == "base64":
            return {"type": "image_url", "image_url": {"url": f"data:{source.get('media_type')};base64,{source.get('data', '')}"}}
        if origin == "url":
            return {"type": "image_url", "image_url": {"url": source.get("url", "")}}
    elif kind == "document":
        if origin == "base64":
            data = f"data:{source.get('media_type', 'application/pdf')};base64,{source.get('data', '')}"
            return {"type": "file", "file": {"file_data": data, "filename": block.get("title") or "document.pdf"}}
        if origin == "text":
            return {"type": "text", "text": source.get("data", "")}
        if origin == "content":
            inner = source.get("content")
            text = inner if isinstance(inner, str) else _text_of(inner)
            return {"type": "text", "text": text}
    return None  # file ids (Anthropic's Files API) and PDF URLs: no chat equivalent


def answer_from_chat(answer: Json, state: State) -> Json:
    """A chat completion -> an Anthropic Messages answer."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    content = _message_to_blocks(message, _same_name, unsigned=True) if isinstance(message, dict) else []
    calls = any(b["type"] == "tool_use" for b in content)
    stop_reason, stop_sequence = _stop_reason(choice.get("finish_reason"), choice.get("stop_sequence"), calls)
    usage = answer.get("usage")
    usage = _usage_from_chat(usage if isinstance(usage, dict) else {"prompt_tokens": state.prompt_estimate})
    return {"id": _message_id(answer.get("id")), "type": "message", "role": "assistant", "model": state.model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}


_PING = sse({"type": "ping"}, "ping")
_TEXT_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%b}}\n\n'
_MESSAGE_STOP = sse({"type": "message_stop"}, "message_stop")


class StreamFromChat:
    """Chat chunks -> Anthropic SSE events, sent as soon as they can be.

    One content block is open at a time; a block of another kind (thinking, text, one tool call) closes
    it and opens the next index. The finish closes the open block, but message_delta (stop reason and
    usage) and message_stop wait for the usage chunk, which chat sends after the finish, or `end()`.
    """

    __slots__ = ("_block", "_chars", "_done", "_open", "_started", "_state", "_stop_reason", "_stop_sequence", "_tools", "_usage")

    def __init__(self, state: State) -> None:
        self._state = state
        self._started = False  # message_start was sent
        self._done = False  # message_stop or an error was sent: nothing more
        self._block = -1  # the last block index started: the first block is 0
        self._open: str | None = None  # the open block's kind: "thinking", "text", "tool"
        self._tools: dict[int, int] = {}  # chat tool call index -> block index
        self._stop_reason: str | None = None  # known at the finish
        self._stop_sequence: str | None = None
        self._usage: Json | None = None  # the last usage seen
        self._chars = 0  # generated characters: output tokens guessed if no usage comes

    def chunk(self, chunk: Json) -> bytes:
        choices = chunk.get("choices")
        if self._open == "text" and choices and len(choices) == 1 and not chunk.get("usage"):
            # Most chunks of a stream: more text for the open text block, and nothing else to do.
            choice = choices[0]
            delta = choice.get("delta")
            if delta and not choice.get("finish_reason") and (len(delta) == 1 or (len(delta) == 2 and "role" in delta)):
                text = delta.get("content")
                if text and isinstance(text, str):
                    self._chars += len(text)
                    return _TEXT_DELTA % (self._block, orjson.dumps(text))
        if self._done:
            return b""
        if "error" in chunk:
            self._done, self._open = True, None  # nothing follows an error, not even the open block's text
            return sse(_error_body(chunk["error"]), "error")
        out: list[bytes] = []
        if not self._started:
            self._start(chunk.get("id"), out)
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                self._delta(delta, out)
            finish = choice.get("finish_reason")
            if finish and self._stop_reason is None:
                self._close(out)
                self._stop_reason, self._stop_sequence = _stop_reason(finish, choice.get("stop_sequence"), bool(self._tools))
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
            if self._stop_reason is not None:  # only usage at or after the finish is final
                self._finish(out)
        return b"".join(out)

    def end(self) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._start(None, out)
        self._close(out)
        if self._stop_reason is None:
            self._stop_reason = "end_turn"
        self._finish(out)
        return b"".join(out)

    def _start(self, chat_id: Any, out: list[bytes]) -> None:
        self._started = True
        message: Json = {"id": _message_id(chat_id), "type": "message", "role": "assistant", "model": self._state.model, "content": [],
                         "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": self._state.prompt_estimate, "output_tokens": 1}}
        out.append(sse({"type": "message_start", "message": message}, "message_start"))
        out.append(_PING)

    def _delta(self, delta: Json, out: list[bytes]) -> None:
        reasoning = reasoning_text(delta)
        if reasoning:
            self._open_as("thinking", out)
            self._chars += len(reasoning)
            out.append(self._block_delta({"type": "thinking_delta", "thinking": reasoning}))
        signature = delta.get("thinking_signature")
        if signature:
            self._open_as("thinking", out)
            out.append(self._block_delta({"type": "signature_delta", "signature": signature}))
            self._close(out)  # a signature ends its thinking block
        redacted = delta.get("redacted_thinking")
        if redacted:
            self._close(out)
            self._block += 1
            out.append(sse({"type": "content_block_start", "index": self._block, "content_block": {"type": "redacted_thinking", "data": redacted}}, "content_block_start"))
            out.append(sse({"type": "content_block_stop", "index": self._block}, "content_block_stop"))
        text = delta.get("content")
        if text and isinstance(text, str):
            self._text(text, out)
        calls = delta.get("tool_calls")
        if calls:
            for call in calls:
                self._tool_delta(call, out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != "text":
            self._open_as("text", out)
        self._chars += len(text)
        out.append(_TEXT_DELTA % (self._block, orjson.dumps(text)))  # the most common event, as sse() writes it

    def _tool_delta(self, call: Json, out: list[bytes]) -> None:
        index = call.get("index", 0)
        function = call.get("function") or {}
        block = self._tools.get(index)
        if block is None:
            self._close(out)
            self._block = block = self._block + 1
            self._tools[index] = block
            self._open = "tool"
            content_block: Json = {"type": "tool_use", "id": anthropic_id(str(call.get("id") or f"call_{index}")), "name": function.get("name") or "", "input": {}}
            out.append(sse({"type": "content_block_start", "index": block, "content_block": content_block}, "content_block_start"))
        arguments = function.get("arguments")
        if arguments:
            self._chars += len(arguments)
            # A piece of a call whose block was already closed (a vendor interleaving calls, which none
            # seen does) still goes to that call's own index: clients accumulate by index.
            out.append(sse({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": arguments}}, "content_block_delta"))

    def _open_as(self, kind: str, out: list[bytes]) -> None:
        if self._open == kind:
            return
        self._close(out)
        self._block += 1
        self._open = kind
        content_block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "", "signature": ""}
        out.append(sse({"type": "content_block_start", "index": self._block, "content_block": content_block}, "content_block_start"))

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(sse({"type": "content_block_stop", "index": self._block}, "content_block_stop"))
            self._open = None

    def _block_delta(self, delta: Json) -> bytes:
        return sse({"type": "content_block_delta", "index": self._block, "delta": delta}, "content_block_delta")

    def _finish(self, out: list[bytes]) -> None:
        self._close(out)  # a bad vendor's delta after its finish
        if self._usage is not None:
            usage = _usage_from_chat(self._usage)
        else:
            usage = _usage_from_chat({"prompt_tokens": self._state.prompt_estimate, "completion_tokens": (self._chars + 3) // 4})
        delta = {"stop_reason": self._stop_reason, "stop_sequence": self._stop_sequence}
        out.append(sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta"))
        out.append(_MESSAGE_STOP)
        self._done = True


# ---------------------------------------------------------------------------------------------------
# Vendor half: an Anthropic vendor, the pivot standing for the client.


def request_from_chat(body: Json, state: State) -> Json:
    """A chat completions request -> an Anthropic Messages request."""
    if type(body.get("n")) is int and body["n"] > 1:
        raise Refused("Anthropic answers with one choice only", "n")
    out = _anthropic_core(body, state)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = max_tokens if type(max_tokens) is int and max_tokens > 0 else DEFAULT_MAX_TOKENS
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if isinstance(temperature, int | float):
        out["temperature"] = min(temperature, 1.0)  # chat allows up to 2, Anthropic 1
    if isinstance(top_p, int | float):
        out["top_p"] = top_p
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s.strip()]  # Anthropic refuses blank ones
    if stops:
        out["stop_sequences"] = stops
    thinking = _thinking_from_chat(body, out)
    if thinking is not None:
        out["thinking"] = thinking
        if thinking.get("type") != "disabled":  # Anthropic refuses other sampling with thinking on
            if out.get("temperature") not in (None, 1, 1.0):
                del out["temperature"]
            if out.get("top_p") is not None and out["top_p"] < 0.95:
                del out["top_p"]
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if body.get("stream"):
        out["stream"] = True
    return out


def count_request_from_chat(body: Json, state: State) -> Json:
    """A chat request -> an Anthropic count_tokens request."""
    full = request_from_chat(body, state)
    return {key: full[key] for key in _COUNT_KEYS if key in full}


def count_tokens_of(answer: Json) -> int | None:
    tokens = answer.get("input_tokens")
    return tokens if type(tokens) is int else None


def _anthropic_core(body: Json, state: State) -> Json:
    system, messages = _messages_from_chat(body.get("messages") or (), state)
    out: Json = {"model": body.get("model"), "messages": messages}
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    tools = [_tool_from_chat(t, state) for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    if tools:  # Anthropic refuses tool_choice without tools
        out["tools"] = tools
        choice = body.get("tool_choice")
        tool_choice: Json | None = None
        if choice in ("auto", "none"):
            tool_choice = {"type": choice}
        elif choice == "required":
            tool_choice = {"type": "any"}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            tool_choice = {"type": "tool", "name": state.vendor_tool_name(choice["function"].get("name", ""))}
        if body.get("parallel_tool_calls") is False:
            tool_choice = tool_choice or {"type": "auto"}
            if tool_choice["type"] != "none":
                tool_choice["disable_parallel_tool_use"] = True
        if tool_choice:
            out["tool_choice"] = tool_choice
    return out


def _tool_from_chat(tool: Json, state: State) -> Json:
    function = tool.get("function") or {}
    schema = function.get("parameters")
    if not isinstance(schema, dict):
        schema = {"type": "object", "properties": {}}
    elif "type" not in schema:  # Anthropic requires an object schema to say so
        schema = {"type": "object", **schema}
    out: Json = {"name": state.vendor_tool_name(function.get("name", ""))}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = schema
    return out


def _thinking_from_chat(body: Json, out: Json) -> Json | None:
    """Anthropic `thinking` for a chat request: the client's own `thinking` as it sent it, else one made
    from `reasoning_effort`; none where Anthropic would refuse the request with it."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        budget = _BUDGETS.get(str(body.get("reasoning_effort")))
        if budget is None:
            return None
        if budget >= out["max_tokens"]:  # the budget must stay below max_tokens
            budget = max(_MIN_BUDGET, out["max_tokens"] // 2)
            if budget >= out["max_tokens"]:
                return None
        thinking = {"type": "enabled", "budget_tokens": budget}
    if thinking.get("type") == "disabled":
        return thinking
    if out.get("tool_choice", {}).get("type") in ("any", "tool"):
        return None  # forced tool use and thinking do not go together; the forced call matters more
    for message in reversed(out["messages"]):
        if message["role"] == "assistant":
            # A tool-use turn replayed without its thinking block (a client that dropped it) is refused
            # while thinking is on.
            blocks = message["content"]
            if any(b["type"] == "tool_use" for b in blocks) and blocks[0]["type"] not in ("thinking", "redacted_thinking"):
                return None
            break
    return thinking


def _messages_from_chat(messages: Any, state: State) -> tuple[list[Json], list[Json]]:
    """(system text blocks, turns): system and developer messages from anywhere go to `system`, tool
    messages become tool_result blocks of a user turn, and same-role neighbours merge (Anthropic wants
    turns to alternate)."""
    system: list[Json] = []
    turns: list[Json] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            content = message.get("content")
            text = content if isinstance(content, str) else _text_of(content)
            if text:
                system.append({"type": "text", "text": text})
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result_from_chat(message)]
        elif role == "assistant":
            # Only signed thinking goes back: Anthropic refuses a thinking block without its signature.
            blocks = _message_to_blocks(message, state.vendor_tool_name, unsigned=False)
        elif role == "user":
            blocks = _user_from_chat(message.get("content"))
        else:
            continue
        if not blocks:  # Anthropic refuses empty turns
            continue
        if not turns or turns[-1]["role"] != role:
            turns.append({"role": role, "content": blocks})
            continue
        previous = turns[-1]["content"]
        if blocks[0]["type"] == "tool_result":  # tool results must lead their user turn
            at = 0
            while at < len(previous) and previous[at]["type"] == "tool_result":
                at += 1
            previous[at:at] = blocks
        else:
            previous.extend(blocks)
    return system, turns


def _user_from_chat(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return []
    return [block for part in content if isinstance(part, dict) and (block := _part_from_chat(part)) is not None]


def _part_from_chat(part: Json) -> Json | None:
    """A chat content part -> an Anthropic block (None: audio, file ids, empty text)."""
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return {"type": "text", "text": text} if text else None  # Anthropic refuses empty text blocks
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url", "") if isinstance(image, dict) else image if isinstance(image, str) else ""
        data = data_url(url)
        if data:
            return {"type": "image", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
        return {"type": "image", "source": {"type": "url", "url": url}} if url else None
    if kind == "file":
        file = part.get("file")
        data = data_url(file.get("file_data") or "") if isinstance(file, dict) else None
        if not data or not isinstance(file, dict):
            return None
        if data[0] == "application/pdf":
            block: Json = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data[1]}}
        elif data[0] == "text/plain":
            try:
                text = base64.b64decode(data[1]).decode()
            except (ValueError, UnicodeDecodeError):
                return None
            block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        else:
            return None  # Anthropic documents are PDF or plain text only
        if file.get("filename"):
            block["title"] = file["filename"]
        return block
    return None


def _tool_result_from_chat(message: Json) -> Json:
    result: Json = {"type": "tool_result", "tool_use_id": anthropic_id(str(message.get("tool_call_id") or ""))}
    content = message.get("content")
    if isinstance(content, list):
        blocks = [b for b in _user_from_chat(content) if b["type"] != "document" or b["source"]["type"] == "base64"]
        if blocks:
            result["content"] = blocks
    elif isinstance(content, str) and content:
        result["content"] = content
    return result


def answer_to_chat(answer: Json, state: State) -> Json:
    """An Anthropic Messages answer -> a chat completion."""
    message = _blocks_to_message(answer.get("content") or [], state.client_tool_name)
    choice: Json = {"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH.get(str(answer.get("stop_reason")), "stop")}
    if answer.get("stop_sequence"):
        choice["stop_sequence"] = answer["stop_sequence"]
    usage = answer.get("usage")
    usage = _usage_to_chat(usage if isinstance(usage, dict) else {})
    return {"id": answer.get("id", ""), "object": "chat.completion", "created": now(), "model": state.model, "choices": [choice], "usage": usage}


class StreamToChat:
    """Anthropic stream events -> chat chunks. Tool calls are numbered 0.. apart from block indices (a
    thinking or text block takes an index too); usage is merged from message_start and message_delta
    and sent once, in a final chunk with no choices."""

    __slots__ = ("_created", "_id", "_started", "_state", "_tools", "_usage", "_usage_sent")

    def __init__(self, state: State) -> None:
        self._state = state
        self._id = ""
        self._created = now()
        self._started = False
        self._tools: dict[Any, int] = {}  # block index -> chat tool call index, for tool_use blocks only
        self._usage: Json = {}
        self._usage_sent = False

    def event(self, name: str | None, data: Any) -> list[Json]:
        if not isinstance(data, dict):
            return []
        kind = data.get("type") or name
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id") or ""
            self._started = True
            if isinstance(message.get("usage"), dict):
                self._usage.update(message["usage"])
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, dict):  # cumulative; a field left null keeps message_start's figure
                self._usage.update((k, v) for k, v in usage.items() if v is not None)
            delta = data.get("delta") or {}
            chunk = self._chunk({}, _FINISH.get(str(delta.get("stop_reason")), "stop"))
            if delta.get("stop_sequence"):
                chunk["choices"][0]["stop_sequence"] = delta["stop_sequence"]
            return [chunk]
        if kind == "message_stop":
            return self._usage_chunk()
        if kind == "error":
            error: Json = data["error"] if isinstance(data.get("error"), dict) else {}
            error_type = error.get("type") or "api_error"
            return [{"error": {"message": error.get("message") or error_type, "type": error_type, "status": ANTHROPIC_ERROR_STATUS.get(error_type, 500)}}]
        return []  # ping, content_block_stop, and events of later API versions

    def end(self) -> list[Json]:
        return self._usage_chunk() if self._started else []

    def _delta(self, data: Json) -> list[Json]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta["text"]})] if delta.get("text") else []
        if kind == "input_json_delta":
            call = self._tools.get(data.get("index"))
            if call is None or not delta.get("partial_json"):  # a server tool's input, or the empty first piece
                return []
            return [self._chunk({"tool_calls": [{"index": call, "function": {"arguments": delta["partial_json"]}}]})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta["thinking"]})] if delta.get("thinking") else []
        if kind == "signature_delta":
            return [self._chunk({"thinking_signature": delta["signature"]})] if delta.get("signature") else []
        return []  # citations_delta and the like: no chat equivalent

    def _block_start(self, data: Json) -> list[Json]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            call = self._tools[data.get("index")] = len(self._tools)
            inputs = block.get("input")
            function = {"name": self._state.client_tool_name(block.get("name", "")), "arguments": json_text(inputs) if inputs else ""}
            return [self._chunk({"tool_calls": [{"index": call, "id": original_id(block.get("id", "")), "type": "function", "function": function}]})]
        if kind == "redacted_thinking":
            return [self._chunk({"redacted_thinking": block.get("data", "")})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]})]
        return []  # empty text and thinking starts; server tool blocks run at Anthropic only

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._state.model, "choices": [choice]}

    def _usage_chunk(self) -> list[Json]:
        if self._usage_sent:
            return []
        self._usage_sent = True
        return [{"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._state.model, "choices": [], "usage": _usage_to_chat(self._usage)}]
