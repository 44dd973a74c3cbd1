"""OpenAI chat completions as a codec. The pivot is chat already, so both halves are thin: the client
half frames pivot chunks as chat SSE (usage only when the client asked), the vendor half makes tool
names every vendor accepts and drops the pivot's own fields, which OpenAI-compatible vendors refuse.
"""

from __future__ import annotations

import re
from typing import Any

from providers.translate.common import State, estimate_tokens, sse

DONE = b"data: [DONE]\n\n"
# OpenAI models that refuse max_tokens and take only max_completion_tokens.
_NEW_LIMIT_FIELD = re.compile(r"^(?:o\d|gpt-5)")
# The pivot's own fields (see common.py), never sent to an OpenAI-compatible vendor.
_PIVOT_MESSAGE_FIELDS = ("thinking_blocks", "reasoning_content")


# The client half: an OpenAI chat client on another protocol's vendor.


def request_to_chat(body: dict[str, Any], state: State) -> dict[str, Any]:
    opts = body.get("stream_options")
    state.include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    out = dict(body)
    out["model"] = state.model
    return out


def answer_from_chat(answer: dict[str, Any], state: State) -> dict[str, Any]:
    answer["model"] = state.model
    return answer


class StreamFromChat:
    """Pivot chunks as chat SSE: `data: {...}` each, `data: [DONE]` at the end; the usage chunk only
    for a client that asked for it (stream_options.include_usage), as OpenAI does."""

    __slots__ = ("_done", "_state")

    def __init__(self, state: State) -> None:
        self._state = state
        self._done = False

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if "error" in chunk:
            self._done = True  # an error ends an OpenAI stream: no [DONE] after it
            error = chunk["error"]
            return sse({"error": {"message": error.get("message"), "type": error.get("type"), "param": None, "code": None}})
        if not chunk.get("choices") and "usage" in chunk and not self._state.include_usage:
            return b""
        return sse(chunk)

    def end(self) -> bytes:
        return b"" if self._done else DONE



# The vendor half: another protocol's client on an OpenAI-compatible vendor.


def request_from_chat(body: dict[str, Any], state: State) -> dict[str, Any]:
    out = dict(body)
    limit = out.pop("max_completion_tokens", None)
    if limit is not None and "max_tokens" not in out:
        # The pivot says max_completion_tokens; of the OpenAI-compatible vendors only OpenAI's own
        # reasoning models take it, and others (DeepSeek, measured by its users) silently ignore it.
        out["max_completion_tokens" if _NEW_LIMIT_FIELD.match(state.upstream_model) else "max_tokens"] = limit
    tools = out.get("tools")
    if isinstance(tools, list):
        out["tools"] = [_named_tool(t, state) for t in tools]
    choice = out.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out["tool_choice"] = {**choice, "function": _renamed(choice["function"], state)}
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_vendor_message(m, state) for m in messages]
    return out


def _named_tool(tool: Any, state: State) -> Any:
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        return {**tool, "function": _renamed(tool["function"], state)}
    return tool


def _renamed(function: dict[str, Any], state: State) -> dict[str, Any]:
    name = function.get("name")
    return {**function, "name": state.vendor_tool_name(name)} if isinstance(name, str) else function


def _vendor_message(message: Any, state: State) -> Any:
    if not isinstance(message, dict):
        return message
    calls = message.get("tool_calls")
    if not isinstance(calls, list) and not any(f in message for f in _PIVOT_MESSAGE_FIELDS):
        return message
    out = {k: v for k, v in message.items() if k not in _PIVOT_MESSAGE_FIELDS}
    if isinstance(calls, list):
        out["tool_calls"] = [
            {**c, "function": _renamed(c["function"], state)} if isinstance(c, dict) and isinstance(c.get("function"), dict) else c
            for c in calls
        ]
    return out


def answer_to_chat(answer: dict[str, Any], state: State) -> dict[str, Any]:
    answer["model"] = state.model
    for choice in answer.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            _client_names(message.get("tool_calls"), state)
    return answer


def _client_names(calls: Any, state: State) -> None:
    if not isinstance(calls, list):
        return
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            function["name"] = state.client_tool_name(function["name"])


class StreamToChat:
    """Chat SSE events as pivot chunks: the same dicts, with the client's tool names. (The model name
    is left as the vendor said: no client encoder reads a chunk's model, each says `state.model`.)"""

    __slots__ = ("_state",)

    def __init__(self, state: State) -> None:
        self._state = state

    @property
    def unchanged(self) -> bool:
        """Every event that is a chunk (not an error) passes as it is: the Converter may skip this decoder."""
        return not self._state.renamed

    def event(self, name: str | None, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, dict):
            return []  # [DONE], or something that is not a chunk
        if "error" in data:
            error = data["error"]
            return [{"error": error if isinstance(error, dict) else {"message": str(error)}}]
        if not self._state.renamed:
            return [data]
        for choice in data.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and "tool_calls" in delta:
                _client_names(delta["tool_calls"], self._state)
        return [data]

    def end(self) -> list[dict[str, Any]]:
        return []


def count_request_from_chat(body: dict[str, Any], state: State) -> dict[str, Any]:
    raise NotImplementedError("OpenAI-compatible vendors have no token counting call")  # see Translation.endpoint


def count_tokens_of(answer: dict[str, Any]) -> int | None:
    return None


def estimate_count(body: dict[str, Any]) -> int:
    """The input tokens of a chat request, estimated: for vendors that cannot count them."""
    return estimate_tokens([body.get("messages"), body.get("tools")])
