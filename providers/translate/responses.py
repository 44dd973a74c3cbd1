"""The client half for the OpenAI Responses API (POST /v1/responses) served by a vendor that only speaks
chat completions: the request to the pivot, the pivot's answer and stream back to a Response.

Only what a stateless chat vendor can serve is taken. Fields that need OpenAI's server (stored responses,
conversations, background runs, stored prompts, hosted tools, stored files) raise `Unsupported`, which
names the field so the gateway can answer 400 with `param` set.

Decisions the API leaves open here:

- `reasoning` input items fold into the `reasoning_content` of the next assistant message (the pivot's
  word for a vendor's reasoning; the vendor half decides whether its vendor takes it back). Anthropic
  thinking blocks travel inside the reasoning item's `encrypted_content` (see `_seal`), so a client that
  sends its reasoning items back (Codex does) gives an Anthropic vendor its signed thinking again.
- Reasoning streams as a reasoning summary (`response.reasoning_summary_*`), which SDKs and Codex show;
  one summary part per reasoning item.
- `developer` messages become `system`: most chat vendors do not know the developer role.
- Ids are made here (`resp_`, `rs_`, `msg_`, `fc_` + one random token per response + output index);
  the vendor's chat ids are not unique enough to stand for a response.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.translate.common import Refused, State, reasoning_text, sse

Json = dict[str, Any]

_VENDOR = "this channel's vendor (chat completions only)"
_ITEM_KINDS = "only message, reasoning, function_call and function_call_output items are served here"
# Marks an `encrypted_content` this gateway wrote: Anthropic thinking blocks, base64url JSON after it.
_SEAL = "gw-thinking-1:"
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_DETAILS = ("low", "high", "auto")  # image detail values chat takes ("original" is Responses only)


class Unsupported(Refused):
    """A request field this translation cannot serve over chat completions; `param` names the field
    (a `Refused`, so the relay answers 400 with it)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, param)


def _new_token() -> str:
    """The random part of one response's ids (tests replace it to get fixed ids)."""
    return uuid.uuid4().hex


# ---------------------------------------------------------------- request


def request_to_chat(body: Json, state: State) -> Json:
    """A Responses request as a chat completions request; raises `Unsupported` for what needs OpenAI."""
    _refuse_server_state(body)
    messages: list[Json] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    source = body.get("input")
    if isinstance(source, str):
        messages.append({"role": "user", "content": source})
    elif isinstance(source, list):
        messages.extend(_messages(source))

    out: Json = {"model": body.get("model"), "messages": messages}
    tools = _tools(body.get("tools") or [])
    choice = body.get("tool_choice")
    if choice is not None:
        choice, tools = _tool_choice(choice, tools)
        out["tool_choice"] = choice
    if tools:
        out["tools"] = tools
    for key, chat_key in (
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("max_output_tokens", "max_completion_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("user", "user"),
        ("safety_identifier", "safety_identifier"),
    ):
        if body.get(key) is not None:
            out[chat_key] = body[key]
    response_format = _response_format((body.get("text") or {}).get("format"))
    if response_format is not None:
        out["response_format"] = response_format
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort
    state.client_request = body  # a Response echoes the request's settings
    state.stream = bool(body.get("stream"))
    if state.stream:
        # The gateway bills from usage, so it is always asked for; a Responses client gets it anyway.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _refuse_server_state(body: Json) -> None:
    if body.get("previous_response_id"):
        raise Unsupported(
            f"Field 'previous_response_id' needs server-side state, which {_VENDOR} does not keep; "
            "send the whole conversation in 'input'.",
            "previous_response_id",
        )
    if body.get("conversation"):
        raise Unsupported(
            f"Field 'conversation' needs server-side state, which {_VENDOR} does not keep; "
            "send the whole conversation in 'input'.",
            "conversation",
        )
    if body.get("background"):
        raise Unsupported(
            f"Field 'background' needs the response kept server-side for polling, which {_VENDOR} cannot do; "
            "leave 'background' out and use 'stream' for long answers.",
            "background",
        )
    if body.get("prompt"):
        raise Unsupported(
            f"Field 'prompt' names a stored prompt template, which {_VENDOR} cannot read; "
            "send the prompt's text in 'instructions' or 'input'.",
            "prompt",
        )


def _messages(items: list[Any]) -> list[Json]:
    """Input items as chat messages: consecutive calls share one assistant message, reasoning waits
    for the assistant message it came before."""
    out: list[Json] = []
    thoughts: list[str] = []
    blocks: list[Json] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise Unsupported(f"Item '{where}' is not an object; {_ITEM_KINDS}.", where)
        kind = item.get("type") or "message"
        if kind == "message":
            message = _message(item, where)
            if message["role"] == "assistant":
                _fold(message, thoughts, blocks)
            else:
                thoughts.clear()  # reasoning belongs to an answer; none follows it here
                blocks.clear()
            out.append(message)
        elif kind == "function_call":
            arguments = item.get("arguments")
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": arguments if arguments else "{}"},
            }
            last = out[-1] if out else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": None}
                out.append(last)
            last.setdefault("tool_calls", []).append(call)
            _fold(last, thoughts, blocks)
        elif kind == "function_call_output":
            content = _content(item.get("output"), where + ".output")
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
        elif kind == "reasoning":
            text = _reasoning_text(item)
            if text:
                thoughts.append(text)
            blocks.extend(_unseal(item.get("encrypted_content")))
        elif kind == "item_reference":
            raise Unsupported(
                f"Item '{where}' of type 'item_reference' points at an item stored with OpenAI, which {_VENDOR} "
                "cannot read; send the item itself.",
                where,
            )
        else:
            raise Unsupported(
                f"Item '{where}' of type '{kind}' belongs to a tool that runs on OpenAI's servers, which "
                f"{_VENDOR} cannot run; {_ITEM_KINDS}.",
                where + ".type",
            )
    return out


def _fold(message: Json, thoughts: list[str], blocks: list[Json]) -> None:
    """Give an assistant message the reasoning items that came before it."""
    if thoughts:
        earlier = message.get("reasoning_content")
        message["reasoning_content"] = "\n\n".join([earlier, *thoughts] if earlier else thoughts)
        thoughts.clear()
    if blocks:
        message["thinking_blocks"] = [*message.get("thinking_blocks", ()), *blocks]
        blocks.clear()


def _reasoning_text(item: Json) -> str:
    """A reasoning item's text: the raw reasoning when the client has it, else the summary."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        texts = [p["text"] for p in item.get(key) or () if isinstance(p, dict) and p.get("type") == kind]
        if texts:
            return "\n\n".join(texts)
    return ""


def _message(item: Json, where: str) -> Json:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise Unsupported(
            f"Field '{where}.role' is {role!r}; a message's role is user, assistant, system or developer.",
            where + ".role",
        )
    content = _content(item.get("content"), where + ".content")
    if role == "assistant" and isinstance(content, list):
        # Chat assistants take a string; a list could only hold text (or a refusal, as text) anyway.
        content = "".join(p.get("text", "") for p in content)
    return {"role": "system" if role == "developer" else role, "content": content}


def _content(content: Any, where: str) -> str | list[Json]:
    """Message or tool output content in chat's shape: a lone text part becomes a string."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [_part(p, f"{where}[{j}]") for j, p in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _part(part: Any, where: str) -> Json:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    if kind == "input_image":
        if not part.get("image_url"):
            raise _stored_file(part, where, "image", "'image_url' (an https: or data: URL)")
        image: Json = {"url": part["image_url"]}
        if part.get("detail") in _DETAILS:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if not part.get("file_data"):
            raise _stored_file(part, where, "file", "'file_data' (a base64 data: URL)")
        file: Json = {"file_data": part["file_data"]}
        if part.get("filename"):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    raise Unsupported(
        f"Content part '{where}' has type {kind!r}, which {_VENDOR} cannot take; "
        "send input_text, input_image, input_file or input_audio.",
        where + ".type",
    )


def _stored_file(part: Json, where: str, what: str, instead: str) -> Unsupported:
    param = where + (".file_url" if part.get("file_url") and not part.get("file_id") else ".file_id")
    return Unsupported(
        f"Content part '{where}' refers to a {what} by file_id or URL only OpenAI can fetch, which {_VENDOR} "
        f"cannot read; send the {what} as {instead}.",
        param,
    )


def _tools(tools: list[Any]) -> list[Json]:
    """Function tools in chat's nested shape; any other tool runs on OpenAI's side and is refused."""
    out: list[Json] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            fix = (
                "declare it as a 'function' tool with a JSON schema"
                if kind == "custom"
                else "only tools of type 'function' are served here"
            )
            raise Unsupported(
                f"Tool 'tools[{i}]' has type {kind!r}, which {_VENDOR} cannot run; {fix}.", f"tools[{i}].type"
            )
        function: Json = {"name": tool.get("name")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, tools: list[Json]) -> tuple[Any, list[Json]]:
    """Chat's tool_choice, and the tools it leaves callable (`allowed_tools` narrows the list, which every
    chat vendor understands, where chat's own allowed_tools is OpenAI's alone)."""
    if isinstance(choice, str):
        return choice, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}, tools
    if kind == "allowed_tools":
        allowed = choice.get("tools") or []
        if any(t.get("type") != "function" for t in allowed):
            raise Unsupported(
                f"Field 'tool_choice.tools' allows a tool other than a function, which {_VENDOR} cannot run; "
                "allow only 'function' tools.",
                "tool_choice.tools",
            )
        names = {t.get("name") for t in allowed}
        return choice.get("mode") or "auto", [t for t in tools if t["function"]["name"] in names]
    raise Unsupported(
        f"Field 'tool_choice' names a tool of type {kind!r}, which {_VENDOR} cannot run; "
        "use auto, required, none or a function tool.",
        "tool_choice",
    )


def _response_format(fmt: Any) -> Json | None:
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None  # plain text is chat's default: saying so only risks a vendor that rejects the field


# ---------------------------------------------------------------- shared by answer and stream


def _seal(blocks: list[Json]) -> str:
    """Anthropic thinking blocks (signatures kept) as an opaque `encrypted_content`."""
    return _SEAL + base64.urlsafe_b64encode(orjson.dumps(blocks)).decode()


def _unseal(value: Any) -> list[Json]:
    """The thinking blocks `_seal` hid; nothing for another server's encrypted reasoning."""
    if not isinstance(value, str) or not value.startswith(_SEAL):
        return []
    try:
        blocks = orjson.loads(base64.urlsafe_b64decode(value[len(_SEAL) :]))
    except (ValueError, orjson.JSONDecodeError):
        return []
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def _reasoning_item(item_id: str, text: str, blocks: list[Json]) -> Json:
    summary = [{"type": "summary_text", "text": text}] if text else []
    item: Json = {"id": item_id, "type": "reasoning", "summary": summary}
    if blocks:
        item["encrypted_content"] = _seal(blocks)
    return item


def _message_item(item_id: str, parts: list[Json], status: str) -> Json:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def _text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": []}


def _refusal_part(text: str) -> Json:
    return {"type": "refusal", "refusal": text}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Json:
    item = {"id": item_id, "type": "function_call", "status": status, "arguments": arguments}
    return {**item, "call_id": call_id, "name": name}


def _echo(request: Json | None) -> Json:
    """The request fields a Response repeats (the SDK's model requires parallel_tool_calls, tool_choice
    and tools); defaults when the caller did not keep the request."""
    r = request or {}
    return {
        "instructions": r.get("instructions"),
        "max_output_tokens": r.get("max_output_tokens"),
        "metadata": r.get("metadata"),
        "parallel_tool_calls": r.get("parallel_tool_calls") is not False,
        "reasoning": r.get("reasoning"),
        "temperature": r.get("temperature"),
        "text": r.get("text") or {"format": {"type": "text"}},
        "tool_choice": r.get("tool_choice") or "auto",
        "tools": r.get("tools") or [],
        "top_p": r.get("top_p"),
    }


def _response(
    token: str,
    created: int,
    state: State,
    echo: Json,
    status: str,
    output: list[Json],
    usage: Json | None,
    *,
    incomplete: Json | None = None,
    error: Json | None = None,
) -> Json:
    return {
        "id": f"resp_{token}",
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": state.model,
        "output": output,
        "usage": usage,
        **echo,
    }


def _usage(usage: Any) -> Json | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    asked = usage.get("prompt_tokens_details") or {}
    said = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": asked.get("cached_tokens") or 0,
            "cache_write_tokens": asked.get("cache_write_tokens") or 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": said.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def _ending(finish: str | None) -> tuple[str, Json | None]:
    """A Response's status and incomplete_details for a chat finish_reason."""
    reason = _INCOMPLETE.get(finish or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


# ---------------------------------------------------------------- answer


def answer_from_chat(answer: Json, state: State, *, request: Json | None = None) -> Json:
    """A chat completion as a Response. The fields a Response repeats (tools, tool_choice, text, ...)
    come from `request`, else `state.client_request`, else the API's defaults."""
    token = _new_token()
    choices = answer.get("choices") or [{}]
    message = choices[0].get("message") or {}
    status, incomplete = _ending(choices[0].get("finish_reason"))
    item_status = "incomplete" if incomplete else "completed"
    output: list[Json] = []

    blocks = [b for b in message.get("thinking_blocks") or () if isinstance(b, dict)]
    thought = reasoning_text(message) or "".join(b.get("thinking", "") for b in blocks)
    if thought or blocks:
        output.append(_reasoning_item(f"rs_{token}_{len(output)}", thought, blocks))

    parts: list[Json] = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        parts.append(_text_part(content))
    if message.get("refusal"):
        parts.append(_refusal_part(message["refusal"]))
    if parts:
        output.append(_message_item(f"msg_{token}_{len(output)}", parts, item_status))

    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        n = len(output)
        call_id = call.get("id") or f"call_{token}_{n}"
        name, arguments = function.get("name") or "", function.get("arguments") or ""
        output.append(_call_item(f"fc_{token}_{n}", call_id, name, arguments, item_status))

    created = answer.get("created") or int(time.time())
    echo = _echo(request or state.client_request)
    usage = _usage(answer.get("usage"))
    return _response(token, created, state, echo, status, output, usage, incomplete=incomplete)


# ---------------------------------------------------------------- stream


@dataclass(slots=True)
class _Reasoning:
    index: int
    id: str
    pieces: list[str] = field(default_factory=list)
    block: list[str] = field(default_factory=list)  # thinking since the last signature
    blocks: list[Json] = field(default_factory=list)
    part_open: bool = False


@dataclass(slots=True)
class _Message:
    index: int
    id: str
    parts: list[Json] = field(default_factory=list)  # finished content parts
    kind: str | None = None  # "output_text" or "refusal": the open part
    pieces: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    index: int
    id: str
    call_id: str
    name: str
    pieces: list[str] = field(default_factory=list)


class StreamFromChat:
    """Chat chunks -> Responses SSE events; the request's settings come as for `answer_from_chat`.

    One item is open at a time, as the API streams them, but for tool calls: those stay open together
    until something else starts or the answer finishes, so a vendor that interleaves the pieces of
    parallel calls loses nothing. `response.completed` (or `.incomplete`) waits for the usage that
    follows the finish; an error chunk, or an upstream that ends before the finish, gives `response.failed`.
    """

    def __init__(self, state: State, *, request: Json | None = None) -> None:
        self._state = state
        self._echo = _echo(request or state.client_request)
        self._token = _new_token()
        self._created = 0
        self._seq = 0
        self._out: list[bytes] = []
        self._started = False
        self._over = False  # the terminal event is sent
        self._items = 0  # output indexes handed out
        self._done: dict[int, Json] = {}  # finished items by output index
        self._reasoning: _Reasoning | None = None
        self._message: _Message | None = None
        self._calls: dict[int, _Call] = {}  # open calls by the pivot's tool call index
        self._finish: str | None = None
        self._usage: Json | None = None

    def chunk(self, chunk: Json) -> bytes:
        """The events one pivot chunk makes."""
        if self._over:
            return b""
        if not self._started:
            self._start(chunk.get("created"))
        error = chunk.get("error")
        if error:
            self._fail(error if isinstance(error, dict) else {"message": str(error)})
            return self._flush()
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer
            self._delta(choice.get("delta") or {})
            if choice.get("finish_reason") and self._finish is None:
                self._finish = choice["finish_reason"]
                self._close_all("incomplete" if self._finish in _INCOMPLETE else "completed")
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        if self._finish is not None and self._usage is not None:
            self._complete()
        return self._flush()

    def end(self) -> bytes:
        """Upstream ended: the terminal event, if it is still owed."""
        if self._over:
            return b""
        if not self._started:
            self._start(None)
        if self._finish is None:
            self._fail({"message": "The vendor's stream ended before the answer was complete."})
        else:
            self._complete()
        return self._flush()

    # -- framing

    def _emit(self, kind: str, data: Json) -> None:
        self._out.append(sse({"type": kind, **data, "sequence_number": self._seq}, event=kind))
        self._seq += 1

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _snapshot(self, status: str, *, incomplete: Json | None = None, error: Json | None = None) -> Json:
        output = [self._done[i] for i in sorted(self._done)]
        usage = _usage(self._usage) if status != "in_progress" else None
        head = (self._token, self._created, self._state, self._echo)
        return _response(*head, status, output, usage, incomplete=incomplete, error=error)

    def _start(self, created: Any) -> None:
        self._started = True
        self._created = created if isinstance(created, int) and created else int(time.time())
        snapshot = self._snapshot("in_progress")
        self._emit("response.created", {"response": snapshot})
        self._emit("response.in_progress", {"response": snapshot})

    def _complete(self) -> None:
        status, incomplete = _ending(self._finish)
        self._emit(f"response.{status}", {"response": self._snapshot(status, incomplete=incomplete)})
        self._over = True

    def _fail(self, error: Json) -> None:
        self._close_all("incomplete")
        code = "rate_limit_exceeded" if error.get("status") == 429 else "server_error"
        failure = {"code": code, "message": str(error.get("message") or "The vendor failed.")}
        self._emit("response.failed", {"response": self._snapshot("failed", error=failure)})
        self._over = True

    def _next_index(self) -> int:
        self._items += 1
        return self._items - 1

    def _close_all(self, status: str) -> None:
        if self._reasoning is not None:
            self._close_reasoning()
        if self._message is not None:
            self._close_message(status)
        for call in self._calls.values():
            self._close_call(call, status)
        self._calls.clear()

    # -- deltas

    def _delta(self, delta: Json) -> None:
        thought = reasoning_text(delta)
        if thought:
            self._think(thought)
        signature = delta.get("thinking_signature")
        if signature:
            r = self._open_reasoning()
            r.blocks.append({"type": "thinking", "thinking": "".join(r.block), "signature": signature})
            r.block.clear()
        redacted = delta.get("redacted_thinking")
        if redacted:
            data = redacted.get("data") if isinstance(redacted, dict) else redacted
            self._open_reasoning().blocks.append({"type": "redacted_thinking", "data": data})
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._say("output_text", content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._say("refusal", refusal)
        for piece in delta.get("tool_calls") or ():
            self._call_piece(piece)

    # -- reasoning

    def _open_reasoning(self) -> _Reasoning:
        if self._reasoning is None:
            self._close_all("completed")
            index = self._next_index()
            self._reasoning = _Reasoning(index, f"rs_{self._token}_{index}")
            item = _reasoning_item(self._reasoning.id, "", [])
            self._emit("response.output_item.added", {"output_index": index, "item": item})
        return self._reasoning

    def _think(self, text: str) -> None:
        r = self._open_reasoning()
        where = {"item_id": r.id, "output_index": r.index, "summary_index": 0}
        if not r.part_open:
            r.part_open = True
            self._emit("response.reasoning_summary_part.added", {**where, "part": {"type": "summary_text", "text": ""}})
        self._emit("response.reasoning_summary_text.delta", {**where, "delta": text})
        r.pieces.append(text)
        r.block.append(text)

    def _close_reasoning(self) -> None:
        r = self._reasoning
        assert r is not None
        self._reasoning = None
        text = "".join(r.pieces)
        if r.part_open:
            where = {"item_id": r.id, "output_index": r.index, "summary_index": 0}
            self._emit("response.reasoning_summary_text.done", {**where, "text": text})
            part = {"type": "summary_text", "text": text}
            self._emit("response.reasoning_summary_part.done", {**where, "part": part})
        self._finish_item(r.index, _reasoning_item(r.id, text, r.blocks))

    # -- message

    def _say(self, kind: str, text: str) -> None:
        m = self._message
        if m is None:
            self._close_all("completed")
            index = self._next_index()
            m = self._message = _Message(index, f"msg_{self._token}_{index}")
            item = _message_item(m.id, [], "in_progress")
            self._emit("response.output_item.added", {"output_index": index, "item": item})
        if m.kind != kind:
            if m.kind is not None:
                self._close_part(m)
            m.kind = kind
            part = _text_part("") if kind == "output_text" else _refusal_part("")
            self._emit("response.content_part.added", {**self._where(m), "part": part})
        if kind == "output_text":
            self._emit("response.output_text.delta", {**self._where(m), "delta": text, "logprobs": []})
        else:
            self._emit("response.refusal.delta", {**self._where(m), "delta": text})
        m.pieces.append(text)

    @staticmethod
    def _where(m: _Message) -> Json:
        return {"item_id": m.id, "output_index": m.index, "content_index": len(m.parts)}

    def _close_part(self, m: _Message) -> None:
        text = "".join(m.pieces)
        if m.kind == "output_text":
            self._emit("response.output_text.done", {**self._where(m), "text": text, "logprobs": []})
            part = _text_part(text)
        else:
            self._emit("response.refusal.done", {**self._where(m), "refusal": text})
            part = _refusal_part(text)
        self._emit("response.content_part.done", {**self._where(m), "part": part})
        m.parts.append(part)
        m.kind = None
        m.pieces = []

    def _close_message(self, status: str) -> None:
        m = self._message
        assert m is not None
        self._message = None
        if m.kind is not None:
            self._close_part(m)
        self._finish_item(m.index, _message_item(m.id, m.parts, status))

    # -- function calls

    def _call_piece(self, piece: Json) -> None:
        at = piece.get("index", 0)
        function = piece.get("function") or {}
        call = self._calls.get(at)
        if call is None:
            if self._reasoning is not None or self._message is not None:
                self._close_all("completed")
            index = self._next_index()
            call_id = piece.get("id") or f"call_{self._token}_{index}"
            call = self._calls[at] = _Call(index, f"fc_{self._token}_{index}", call_id, function.get("name") or "")
            item = _call_item(call.id, call.call_id, call.name, "", "in_progress")
            self._emit("response.output_item.added", {"output_index": index, "item": item})
        arguments = function.get("arguments")
        if arguments:
            call.pieces.append(arguments)
            where = {"item_id": call.id, "output_index": call.index}
            self._emit("response.function_call_arguments.delta", {**where, "delta": arguments})

    def _close_call(self, call: _Call, status: str) -> None:
        arguments = "".join(call.pieces)
        where = {"item_id": call.id, "output_index": call.index}
        self._emit("response.function_call_arguments.done", {**where, "arguments": arguments})
        self._finish_item(call.index, _call_item(call.id, call.call_id, call.name, arguments, status))

    def _finish_item(self, index: int, item: Json) -> None:
        self._done[index] = item
        self._emit("response.output_item.done", {"output_index": index, "item": item})
