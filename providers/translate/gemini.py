"""Gemini generateContent <-> the chat pivot: both halves of the codec that docs/translation.md describes.

Client half (a Gemini client, any vendor): `request_to_chat`, `answer_from_chat`, `StreamFromChat`,
`count_request_to_chat`, `count_answer`. Vendor half (any client, a Gemini vendor): `request_from_chat`,
`answer_to_chat`, `StreamToChat`, `count_request_from_chat`, `count_tokens_of`. The model is in Gemini's
URL, never in its body.

Where the protocols do not meet, the choice is made once, here:

- `reasoning_effort` -> `thinkingBudget` (a budget works on 2.5 and 3 models alike, `thinkingLevel` only on
  3): none 0, minimal 512, low 1024, medium 8192, high and xhigh 24576, with `includeThoughts` so the
  thoughts come back as reasoning. Back: `thinkingLevel` names its effort; a budget reads as the
  nearest effort on a log scale; 0 and -1 (dynamic) send none, which no chat model refuses.
- Tool call ids: a call Gemini gave no id gets "call_" + random hex (unique across turns, as Anthropic
  wants); one in a Gemini client's history gets "call_<turn>_<n>", the same on every request, so the
  vendor's prompt cache holds. A call's `thoughtSignature` rides in its pivot id as
  `<id>__ts__<base64url>` and goes back onto the functionCall part; a call turn with no signature
  (history from another vendor) gets the placeholder Google documents, which Gemini 3 takes.
- Tool results must be objects: a JSON object string goes as that object, any other text as
  {"result": text}; back, a lone string "result" or "output" is unwrapped.
- Schemas going to Gemini are cut to its OpenAPI subset, and from a Gemini client made JSON Schema
  again (providers.translate.schema); `parametersJsonSchema` and `responseJsonSchema` pass as they are.
- countTokens takes system and tools only inside `generateContentRequest`, which needs the upstream
  model name the codec does not know: they are counted as a leading user turn (tools as JSON text).
- Dropped: non-function tools (googleSearch, codeExecution...) and their parts, topK, safetySettings,
  cachedContent, logprobs, Anthropic thinking signatures (a Gemini client gets the text only).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from providers.translate.common import (
    ANTHROPIC_ERROR_TYPES,
    GEMINI_STATUS,
    State,
    data_url,
    json_text,
    now,
    positive,
    reasoning_text,
    tool_arguments,
)
from providers.translate.schema import gemini_schema, json_schema

Json = dict[str, Any]

_CONTENT_FILTER = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP", "content_filter": "SAFETY"}

_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
_LEVELS = {"MINIMAL": "minimal", "LOW": "low", "MEDIUM": "medium", "HIGH": "high", "XHIGH": "high"}
# Geometric means of the low/medium and medium/high budgets: a budget reads as the nearest effort.
_LOW_BELOW, _MEDIUM_BELOW = 2896, 14189

_SIGNATURE_SEP = "__ts__"  # Anthropic ids must match [a-zA-Z0-9_-]: so must the separator
_FOREIGN_SIGNATURE = "skip_thought_signature_validator"
_TO_URL = str.maketrans("+/", "-_")
_FROM_URL = str.maketrans("-_", "+/")


# Sampling settings both sides have: Gemini's name, chat's (also google-genai's snake_case one).
_SETTINGS = (("temperature", "temperature"), ("topP", "top_p"), ("seed", "seed"), ("presencePenalty", "presence_penalty"), ("frequencyPenalty", "frequency_penalty"))
_AUDIO = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}
# Media types of URLs by extension: Gemini's fileData wants one, and `mimetypes` would read system files.
_EXTENSIONS = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp", "heic": "image/heic", "heif": "image/heif"}
_EXTENSIONS |= {"pdf": "application/pdf", "mp3": "audio/mp3", "wav": "audio/wav", "mp4": "video/mp4", "txt": "text/plain"}

def _new_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _get(obj: Json, camel: str, snake: str) -> Any:
    """A field as the REST API names it, or as google-genai sends nested ones (snake_case)."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _standard_b64(data: str) -> str:
    """google-genai sends bytes as URL-safe base64; data: URLs want the standard alphabet."""
    return data.translate(_FROM_URL) if "-" in data or "_" in data else data


def _text_of(content: Any) -> str:
    """The text of a chat message's content (a string or parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _pack_id(call_id: str, signature: Any) -> str:
    """A pivot tool call id carrying the call's thoughtSignature (base64 made URL-safe, unpadded)."""
    if not isinstance(signature, str) or not signature:
        return call_id
    return call_id + _SIGNATURE_SEP + signature.translate(_TO_URL).rstrip("=")


def _unpack_id(pivot_id: str) -> tuple[str, str | None]:
    """Undo `_pack_id`: (Gemini's call id, thoughtSignature or None)."""
    call_id, sep, packed = pivot_id.partition(_SIGNATURE_SEP)
    if not sep or not packed:
        return pivot_id, None
    return call_id, packed.translate(_FROM_URL) + "=" * (-len(packed) % 4)


def _finish_to_chat(reason: Any, calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if calls and reason == "STOP" else "stop"


def _usage_to_chat(meta: Json) -> Json:
    """usageMetadata -> chat usage: completion counts the thoughts, as OpenAI's counts reasoning."""
    prompt = positive(meta.get("promptTokenCount")) + positive(meta.get("toolUsePromptTokenCount"))
    thoughts = positive(meta.get("thoughtsTokenCount"))
    completion = positive(meta.get("candidatesTokenCount")) + thoughts
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": max(positive(meta.get("totalTokenCount")), prompt + completion),
        "prompt_tokens_details": {"cached_tokens": positive(meta.get("cachedContentTokenCount"))},
    }
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def _usage_from_chat(usage: Json) -> Json:
    """Chat usage -> usageMetadata: candidates count only what is not reasoning."""
    prompt = positive(usage.get("prompt_tokens"))
    completion = positive(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = positive(details.get("cached_tokens")) if isinstance(details, dict) else 0
    details = usage.get("completion_tokens_details")
    reasoning = min(positive(details.get("reasoning_tokens")), completion) if isinstance(details, dict) else 0
    out: Json = {"promptTokenCount": prompt, "candidatesTokenCount": completion - reasoning, "totalTokenCount": positive(usage.get("total_tokens")) or prompt + completion}
    if cached:
        out["cachedContentTokenCount"] = cached
    if reasoning:
        out["thoughtsTokenCount"] = reasoning
    return out


def _error_from_chat(error: Any) -> Json:
    """A pivot error chunk's `error` -> Gemini's error object."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    code = error.get("status")
    code = code if type(code) is int else 500
    if code == 529:  # Anthropic's overloaded: Gemini says 503 UNAVAILABLE, which its SDKs retry
        code = 503
    return {"error": {"code": code, "message": str(error.get("message") or "error"), "status": GEMINI_STATUS.get(code, "UNKNOWN")}}


# ---------------------------------------------------------------------------------------------------
# Client half: a Gemini client, the pivot standing for the vendor.


def request_to_chat(body: Json, state: State) -> Json:
    """A generateContent request -> a chat completions request."""
    chat = _chat_core(body, state)
    config = _get(body, "generationConfig", "generation_config")
    if isinstance(config, dict):
        _config_to_chat(config, chat)
    if state.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # every Gemini answer carries usageMetadata
    return chat


def count_request_to_chat(body: Json, state: State) -> Json:
    """A countTokens request (contents, or a whole generateContentRequest) -> a chat request."""
    inner = _get(body, "generateContentRequest", "generate_content_request")
    return _chat_core(inner if isinstance(inner, dict) else body, state)


def count_answer(tokens: int) -> Json:
    return {"totalTokens": tokens}


def _chat_core(body: Json, state: State) -> Json:
    """model, messages and tools: what a generation and a count share."""
    chat: Json = {"model": state.model, "messages": _messages_to_chat(body)}
    tools = _tools_to_chat(body.get("tools"))
    if tools:  # chat refuses tool_choice without tools
        chat["tools"] = tools
        config = _get(body, "toolConfig", "tool_config")
        choice = _tool_choice_to_chat(config) if isinstance(config, dict) else None
        if choice is not None:
            chat["tool_choice"] = choice
    return chat


def _config_to_chat(config: Json, chat: Json) -> None:
    max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
    if type(max_tokens) is int:
        chat["max_completion_tokens"] = max_tokens
    for camel, key in _SETTINGS:
        value = _get(config, camel, key)
        if value is not None:
            chat[key] = value
    stops = _get(config, "stopSequences", "stop_sequences")
    if isinstance(stops, list) and stops:
        chat["stop"] = stops
    count = _get(config, "candidateCount", "candidate_count")
    if type(count) is int and count > 1:
        chat["n"] = count
    if _get(config, "responseMimeType", "response_mime_type") == "application/json":
        schema = _get(config, "responseJsonSchema", "response_json_schema")
        if schema is None:
            schema = json_schema(_get(config, "responseSchema", "response_schema"))
        if isinstance(schema, dict):
            chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
        else:
            chat["response_format"] = {"type": "json_object"}
    thinking = _get(config, "thinkingConfig", "thinking_config")
    effort = _effort_of(thinking) if isinstance(thinking, dict) else None
    if effort:
        chat["reasoning_effort"] = effort


def _effort_of(thinking: Json) -> str | None:
    level = _get(thinking, "thinkingLevel", "thinking_level")
    if isinstance(level, str) and level.upper() in _LEVELS:
        return _LEVELS[level.upper()]
    budget = positive(_get(thinking, "thinkingBudget", "thinking_budget"))
    if not budget:
        return None
    return "low" if budget < _LOW_BELOW else "medium" if budget < _MEDIUM_BELOW else "high"


def _tools_to_chat(tools: Any) -> list[Json]:
    out: list[Json] = []
    for tool in tools if isinstance(tools, list) else ():
        declarations = _get(tool, "functionDeclarations", "function_declarations") if isinstance(tool, dict) else None
        for declaration in declarations if isinstance(declarations, list) else ():  # other tools (googleSearch, ...) run at Google only
            if not isinstance(declaration, dict) or not declaration.get("name"):
                continue
            function: Json = {"name": declaration["name"]}
            if declaration.get("description"):
                function["description"] = declaration["description"]
            schema = _get(declaration, "parametersJsonSchema", "parameters_json_schema")
            if not isinstance(schema, dict):
                parameters = declaration.get("parameters")
                schema = json_schema(parameters) if isinstance(parameters, dict) else {"type": "object", "properties": {}}
            function["parameters"] = schema
            out.append({"type": "function", "function": function})
    return out


def _tool_choice_to_chat(config: Json) -> Any:
    calling = _get(config, "functionCallingConfig", "function_calling_config")
    if not isinstance(calling, dict):
        return None
    mode = str(calling.get("mode") or "").upper()
    if mode == "ANY":
        names = _get(calling, "allowedFunctionNames", "allowed_function_names")
        if isinstance(names, list) and len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        return "required"
    if mode == "NONE":
        return "none"
    return "auto" if mode in ("AUTO", "VALIDATED") else None


def _messages_to_chat(body: Json) -> list[Json]:
    out: list[Json] = []
    system = _system_text(_get(body, "systemInstruction", "system_instruction"))
    if system:
        out.append({"role": "system", "content": system})
    pending: list[tuple[str, str]] = []  # the last model turn's calls not yet answered: (id, name)
    contents = body.get("contents")
    for turn, content in enumerate(contents if isinstance(contents, list) else ()):
        if not isinstance(content, dict):
            continue
        parts = content.get("parts")
        parts = parts if isinstance(parts, list) else []
        if content.get("role") == "model":
            message, pending = _model_to_chat(parts, turn)
            if message is not None:
                out.append(message)
        else:
            _user_to_chat(parts, turn, pending, out)
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    parts = system.get("parts") if isinstance(system, dict) else system
    if not isinstance(parts, list):
        return ""
    return "\n".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"])


def _model_to_chat(parts: list[Any], turn: int) -> tuple[Json | None, list[tuple[str, str]]]:
    """A model turn -> (an assistant message, its calls as (id, name) for the answers that follow)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        call = _get(part, "functionCall", "function_call")
        if isinstance(call, dict):
            # The same id on every request, so the vendor's prompt cache holds.
            call_id = str(call.get("id") or f"call_{turn}_{len(calls)}")
            function = {"name": str(call.get("name") or ""), "arguments": json_text(call.get("args") or {})}
            calls.append({"id": call_id, "type": "function", "function": function})
            continue
        text = part.get("text")
        if isinstance(text, str) and text:
            (thoughts if part.get("thought") else texts).append(text)
    if not (texts or thoughts or calls):
        return None, []
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, [(c["id"], c["function"]["name"]) for c in calls]


def _user_to_chat(parts: list[Any], turn: int, pending: list[tuple[str, str]], out: list[Json]) -> None:
    """A user turn: its function responses become tool messages (first: they answer the model's calls),
    the rest one user message."""
    content: list[Json] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        response = _get(part, "functionResponse", "function_response")
        if isinstance(response, dict):
            out.append({"role": "tool", "tool_call_id": _answered_id(response, pending, turn), "content": _result_text(response.get("response"))})
            continue
        chat_part = _part_to_chat(part)
        if chat_part is not None:
            content.append(chat_part)
    if len(content) == 1 and content[0]["type"] == "text":
        out.append({"role": "user", "content": content[0]["text"]})
    elif content:
        out.append({"role": "user", "content": content})


def _answered_id(response: Json, pending: list[tuple[str, str]], turn: int) -> str:
    """The id of the call a functionResponse answers: its own id, else the first open call of its name
    (Gemini pairs calls and responses by name and order when there are no ids)."""
    call_id = response.get("id")
    name = response.get("name")
    at = next((i for i, (open_id, _) in enumerate(pending) if call_id and open_id == call_id), None)
    if at is None:
        at = next((i for i, (_, open_name) in enumerate(pending) if open_name == name), None)
    if at is None:
        return str(call_id or f"call_{turn}_{name}")
    return pending.pop(at)[0]


def _result_text(result: Any) -> str:
    if isinstance(result, dict) and len(result) == 1:
        value = result.get("result", result.get("output"))
        if isinstance(value, str):
            return value
    return result if isinstance(result, str) else json_text(result)


def _part_to_chat(part: Json) -> Json | None:
    """A text, inlineData or fileData part -> a chat content part (None: nothing chat can carry)."""
    text = part.get("text")
    if isinstance(text, str):
        return {"type": "text", "text": text} if text and not part.get("thought") else None
    blob = _get(part, "inlineData", "inline_data")
    if isinstance(blob, dict):
        mime = str(_get(blob, "mimeType", "mime_type") or "application/octet-stream")
        data = _standard_b64(str(blob.get("data") or ""))
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
        if mime in _AUDIO:
            return {"type": "input_audio", "input_audio": {"data": data, "format": _AUDIO[mime]}}
        filename = "document.pdf" if mime == "application/pdf" else "file"
        return {"type": "file", "file": {"file_data": f"data:{mime};base64,{data}", "filename": filename}}
    file = _get(part, "fileData", "file_data")
    if isinstance(file, dict):
        uri = _get(file, "fileUri", "file_uri")
        if isinstance(uri, str) and uri:
            return {"type": "image_url", "image_url": {"url": uri}}
    return None


def answer_from_chat(answer: Json, state: State) -> Json:
    """A chat completion -> a generateContent answer."""
    candidates: list[Json] = []
    for position, choice in enumerate(answer.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        parts = _message_parts(message) if isinstance(message, dict) else []
        index = choice.get("index")
        candidates.append(_candidate(parts, choice.get("finish_reason"), index if type(index) is int else position))
    out: Json = {"candidates": candidates}
    usage = answer.get("usage")
    if isinstance(usage, dict):
        out["usageMetadata"] = _usage_from_chat(usage)
    out["modelVersion"] = state.model
    if answer.get("id"):
        out["responseId"] = str(answer["id"])
    return out


def _candidate(parts: list[Json], finish: Any, index: int) -> Json:
    """A finished candidate. Gemini sends no content for a filtered one; any other carries a part, since
    google-genai's chat drops a turn with an empty content from its history."""
    candidate: Json = {}
    if parts or finish != "content_filter":
        candidate["content"] = {"role": "model", "parts": parts or [{"text": ""}]}
    candidate["finishReason"] = _FINISH.get(finish, "STOP")
    candidate["index"] = index
    return candidate


def _message_parts(message: Json) -> list[Json]:
    parts: list[Json] = []
    reasoning = reasoning_text(message)
    if reasoning:
        parts.append({"text": reasoning, "thought": True})
    text = _text_of(message.get("content")) or message.get("refusal")
    if isinstance(text, str) and text:
        parts.append({"text": text})
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") or {}
            parts.append(_call_part(call.get("id"), function.get("name"), function.get("arguments")))
    return parts


def _call_part(call_id: Any, name: Any, arguments: Any) -> Json:
    call: Json = {"name": name or "", "args": tool_arguments(arguments)}
    if call_id:  # given back in the functionResponse: the vendor's own id finds its call
        call["id"] = call_id
    return {"functionCall": call}


class StreamFromChat:
    """Chat chunks -> a Gemini stream: one GenerateContentResponse per chunk that has something to say,
    as SSE events (`data: {...}` and CRLF CRLF, as Gemini frames them) or, with `array=True` (a client
    that did not ask for alt=sse), as one JSON array sent an element at a time.

    Gemini sends whole function calls: argument pieces are kept until the call is complete (another
    call or other content starts, or the finish). The finishing response waits for the usage chunk,
    which chat sends after the finish, or for `end()`, to carry usageMetadata.
    """

    __slots__ = ("_array", "_calls", "_closed", "_finishes", "_id", "_sent", "_state", "_usage")

    def __init__(self, state: State, *, array: bool = False) -> None:
        self._state = state
        self._array = array
        self._sent = False  # an element went out: array mode has sent "["
        self._closed = False  # an error went out: nothing more but the array's end
        self._id: str | None = None
        self._calls: dict[int, dict[int, list[Any]]] = {}  # choice -> call index -> [id, name, argument pieces]
        self._finishes: dict[int, Json] = {}  # choice -> its finishing candidate, held for the usage
        self._usage: Json | None = None

    def chunk(self, chunk: Json) -> bytes:
        if self._closed:
            return b""
        if "error" in chunk:
            self._closed = True
            return self._frame(_error_from_chat(chunk["error"]))
        if self._id is None and chunk.get("id"):
            self._id = str(chunk["id"])
        out = b""
        candidates: list[Json] = []
        for choice in chunk.get("choices") or ():
            candidate = self._choice(choice) if isinstance(choice, dict) else None
            if candidate is not None:
                candidates.append(candidate)
        if candidates:
            out = self._frame(self._response(candidates))
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            self._usage = usage
            if self._finishes:
                out += self._final()
        return out

    def end(self) -> bytes:
        out = b""
        if not self._closed:
            self._closed = True
            # Calls still open (a stream cut before its finish) go out whole all the same.
            open_calls = [{"content": {"role": "model", "parts": parts}, "index": index} for index in sorted(self._calls) if (parts := self._complete(index))]
            if open_calls:
                out = self._frame(self._response(open_calls))
            if self._finishes:
                out += self._final()
        if self._array:
            out += b"]" if self._sent else b"[]"
            self._array = False  # closed once
        return out

    def _choice(self, choice: Json) -> Json | None:
        """The candidate a chunk's choice adds now (None: nothing yet, or held for the finish)."""
        index = choice.get("index")
        index = index if type(index) is int else 0
        parts: list[Json] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = reasoning_text(delta)
            text = delta.get("content")
            text = text if isinstance(text, str) else ""
            if (reasoning or text) and self._calls.get(index):
                parts.extend(self._complete(index))  # other content: the open call is whole
            if reasoning:
                parts.append({"text": reasoning, "thought": True})
            if text:
                parts.append({"text": text})
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._call_piece(index, call, parts)
        finish = choice.get("finish_reason")
        if finish:
            parts.extend(self._complete(index))
            self._finishes[index] = _candidate(parts, finish, index)
            return None
        return {"content": {"role": "model", "parts": parts}, "index": index} if parts else None

    def _call_piece(self, index: int, call: Json, parts: list[Json]) -> None:
        calls = self._calls.setdefault(index, {})
        at = call.get("index", 0)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        pending = calls.get(at)
        if pending is None:
            parts.extend(self._complete(index))  # a new call: the one before it is whole
            pending = calls[at] = [call.get("id") or "", "", []]
        if function.get("name"):
            pending[1] = function["name"]
        if function.get("arguments"):
            pending[2].append(function["arguments"])

    def _complete(self, index: int) -> list[Json]:
        """The choice's open calls as whole functionCall parts, closed."""
        calls = self._calls.get(index)
        if not calls:
            return []
        parts = [_call_part(call_id, name, "".join(pieces)) for call_id, name, pieces in calls.values()]
        calls.clear()
        return parts

    def _response(self, candidates: list[Json]) -> Json:
        response: Json = {"candidates": candidates, "modelVersion": self._state.model}
        if self._id:
            response["responseId"] = self._id
        return response

    def _final(self) -> bytes:
        response: Json = {"candidates": [self._finishes[i] for i in sorted(self._finishes)]}
        self._finishes = {}
        if self._usage is not None:
            response["usageMetadata"] = _usage_from_chat(self._usage)
        response["modelVersion"] = self._state.model
        if self._id:
            response["responseId"] = self._id
        return self._frame(response)

    def _frame(self, response: Json) -> bytes:
        payload = orjson.dumps(response)
        if not self._array:
            return b"data: " + payload + b"\r\n\r\n"
        if self._sent:
            return b",\r\n" + payload
        self._sent = True
        return b"[" + payload


# ---------------------------------------------------------------------------------------------------
# Vendor half: a Gemini vendor, the pivot standing for the client.


def request_from_chat(body: Json, state: State) -> Json:
    """A chat completions request -> a generateContent request (the model goes in the URL)."""
    out = _gemini_core(body, state)
    config = _config_from_chat(body)
    if config:
        out["generationConfig"] = config
    return out


def count_request_from_chat(body: Json, state: State) -> Json:
    """A chat request -> a countTokens request: system and tools counted as a leading user turn."""
    core = _gemini_core(body, state)
    contents: list[Json] = core["contents"]
    lead: list[Json] = list(core["systemInstruction"]["parts"]) if "systemInstruction" in core else []
    if "tools" in core:
        lead.append({"text": json_text(core["tools"])})
    if lead:
        if contents and contents[0]["role"] == "user":
            contents[0] = {"role": "user", "parts": lead + contents[0]["parts"]}
        else:
            contents.insert(0, {"role": "user", "parts": lead})
    return {"contents": contents}


def count_tokens_of(answer: Json) -> int | None:
    tokens = answer.get("totalTokens")
    return tokens if type(tokens) is int else None


def _gemini_core(body: Json, state: State) -> Json:
    """contents, systemInstruction and tools: what a generation and a count share."""
    messages = body.get("messages")
    system, contents = _contents_from_chat(messages if isinstance(messages, list) else [], state)
    out: Json = {"contents": contents}
    if system:
        if contents:
            out["systemInstruction"] = {"parts": system}
        else:  # Gemini refuses a request without contents
            contents.append({"role": "user", "parts": system})
    declarations = [_declaration(t, state) for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        config = _calling_config(body.get("tool_choice"), state)
        if config is not None:
            out["toolConfig"] = {"functionCallingConfig": config}
    return out


def _declaration(tool: Json, state: State) -> Json:
    function = tool.get("function")
    function = function if isinstance(function, dict) else {}
    out: Json = {"name": state.vendor_tool_name(str(function.get("name") or ""))}
    if function.get("description"):
        out["description"] = function["description"]
    schema = function.get("parameters")
    if isinstance(schema, dict):
        parameters = gemini_schema(schema)
        if parameters.get("properties"):  # Gemini refuses an OBJECT without properties: no parameters then
            out["parameters"] = parameters
    return out


def _calling_config(choice: Any, state: State) -> Json | None:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "required":
        return {"mode": "ANY"}
    if choice == "none":
        return {"mode": "NONE"}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and function.get("name"):
        return {"mode": "ANY", "allowedFunctionNames": [state.vendor_tool_name(str(function["name"]))]}
    return None


def _config_from_chat(body: Json) -> Json:
    config: Json = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if type(max_tokens) is int and max_tokens > 0:
        config["maxOutputTokens"] = max_tokens
    for camel, key in _SETTINGS:
        if body.get(key) is not None:
            config[camel] = body[key]
    n = body.get("n")
    if type(n) is int and n > 1:
        config["candidateCount"] = n
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s]
    if stops:
        config["stopSequences"] = stops
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema)
    effort = body.get("reasoning_effort")
    budget = _BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}
    return config


def _contents_from_chat(messages: list[Any], state: State) -> tuple[list[Json], list[Json]]:
    """(system parts, contents): system and developer messages from anywhere go to systemInstruction,
    tool messages become functionResponse parts of a user turn, and same-role neighbours merge."""
    system: list[Json] = []
    contents: list[Json] = []
    names: dict[str, str] = {}  # pivot tool call id -> the vendor's function name, for the responses
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "assistant":
            turn_role, parts = "model", _assistant_parts(message, state, names)
        elif role in ("tool", "function"):
            turn_role, parts = "user", [_function_response(message, state, names)]
        elif role == "user":
            turn_role, parts = "user", _user_parts(message.get("content"))
        else:
            continue
        if not parts:  # Gemini refuses a content without parts
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    return system, contents


def _assistant_parts(message: Json, state: State, names: dict[str, str]) -> list[Json]:
    # Reasoning text is not sent back: Gemini keeps its thinking in signatures, not in thought text.
    parts: list[Json] = []
    text = _text_of(message.get("content"))
    if text:
        parts.append({"text": text})
    calls: list[Json] = []
    signed = False
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        pivot_id = str(call.get("id") or "")
        call_id, signature = _unpack_id(pivot_id)
        name = names[pivot_id] = state.vendor_tool_name(str(function.get("name") or ""))
        part = _call_part(call_id, name, function.get("arguments"))
        if signature:
            part["thoughtSignature"] = signature
            signed = True
        calls.append(part)
    if calls and not signed:
        # History from another vendor has no signature, and Gemini 3 refuses a call turn whose first
        # call has none: Google documents this placeholder for such history.
        calls[0]["thoughtSignature"] = _FOREIGN_SIGNATURE
    parts.extend(calls)
    return parts


def _function_response(message: Json, state: State, names: dict[str, str]) -> Json:
    pivot_id = str(message.get("tool_call_id") or "")
    name = names.get(pivot_id) or state.vendor_tool_name(str(message.get("name") or "tool"))
    response: Json = {"name": name, "response": _result_object(message.get("content"))}
    call_id = _unpack_id(pivot_id)[0]
    if call_id:
        response["id"] = call_id
    return {"functionResponse": response}


def _result_object(content: Any) -> Json:
    """A tool message's content as the object Gemini's functionResponse.response must be."""
    text = content if isinstance(content, str) else _text_of(content)
    if text.lstrip().startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"result": text}


def _user_parts(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        return []
    parts: list[Json] = []
    for item in content:
        part = _part_from_chat(item) if isinstance(item, dict) else None
        if part is not None:
            parts.append(part)
    return parts


def _part_from_chat(part: Json) -> Json | None:
    """A chat content part -> a Gemini part (None: empty text, OpenAI file ids, unknown kinds)."""
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return {"text": text} if isinstance(text, str) and text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url", "") if isinstance(image, dict) else image if isinstance(image, str) else ""
        return _media_part(url) if url else None
    if kind == "input_audio":
        audio = part.get("input_audio")
        if isinstance(audio, dict) and audio.get("data"):
            return {"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio["data"]}}
        return None
    if kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        return _media_part(data) if isinstance(data, str) and data.startswith("data:") else None
    return None


def _media_part(url: str) -> Json:
    data = data_url(url)
    if data is not None:
        return {"inlineData": {"mimeType": data[0], "data": data[1]}}
    file: Json = {"fileUri": url}
    mime = _EXTENSIONS.get(url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower())
    if mime:
        file = {"mimeType": mime, "fileUri": url}
    return {"fileData": file}


def answer_to_chat(answer: Json, state: State) -> Json:
    """A generateContent answer -> a chat completion. A prompt Gemini blocked (no candidates, a
    promptFeedback.blockReason) is an empty answer filtered for content."""
    choices: list[Json] = []
    candidates = answer.get("candidates")
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
        if not isinstance(candidate, dict):
            continue
        text, thoughts, calls = _parts_to_chat(candidate.get("content"), state, None)
        message: Json = {"role": "assistant", "content": text if text or not calls else None}
        if thoughts:
            message["reasoning_content"] = thoughts
        if calls:
            message["tool_calls"] = calls
        index = candidate.get("index")
        finish = _finish_to_chat(candidate.get("finishReason"), bool(calls))
        choices.append({"index": index if type(index) is int else position, "message": message, "logprobs": None, "finish_reason": finish})
    if not choices:
        feedback = answer.get("promptFeedback")
        finish = "content_filter" if isinstance(feedback, dict) and feedback.get("blockReason") else "stop"
        choices.append({"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": finish})
    usage = answer.get("usageMetadata")
    return {
        "id": answer.get("responseId") or "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": now(),
        "model": state.model,
        "choices": choices,
        "usage": _usage_to_chat(usage if isinstance(usage, dict) else {}),
    }


def _parts_to_chat(content: Any, state: State, first_call: int | None) -> tuple[str, str, list[Json]]:
    """(text, thoughts, tool calls) of a candidate's content. Stream deltas number their calls from
    `first_call`; a message's calls (None) carry no index."""
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            call_id = call.get("id")
            pivot: Json = {} if first_call is None else {"index": first_call + len(calls)}
            pivot["id"] = _pack_id(call_id if isinstance(call_id, str) and call_id else _new_id(), part.get("thoughtSignature"))
            pivot["type"] = "function"
            pivot["function"] = {"name": state.client_tool_name(str(call.get("name") or "")), "arguments": json_text(call.get("args") or {})}
            calls.append(pivot)
            continue
        text = part.get("text")
        if isinstance(text, str) and text:
            (thoughts if part.get("thought") else texts).append(text)
    return "".join(texts), "".join(thoughts), calls


class StreamToChat:
    """Gemini stream events (each a whole GenerateContentResponse) -> chat chunks. Function calls come
    whole, so each is one tool call delta, numbered across the answer. Usage repeats, growing, in
    Gemini's events: the last one is sent once, at the end."""

    __slots__ = ("_calls", "_created", "_failed", "_id", "_started", "_state", "_usage")

    def __init__(self, state: State) -> None:
        self._state = state
        self._id = ""
        self._created = now()
        self._started: set[int] = set()  # candidates whose first chunk (with the role) went out
        self._calls: dict[int, int] = {}  # candidate -> function calls seen
        self._usage: Json | None = None
        self._failed = False

    def event(self, name: str | None, data: Any) -> list[Json]:
        if not isinstance(data, dict) or self._failed:
            return []
        if "error" in data:
            self._failed = True
            error = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            code = error.get("code")
            code = code if type(code) is int else 500
            return [{"error": {"message": str(error.get("message") or error.get("status") or "error"), "type": ANTHROPIC_ERROR_TYPES.get(code, "api_error"), "status": code}}]
        if not self._id:
            self._id = str(data.get("responseId") or "chatcmpl-" + uuid.uuid4().hex)
        usage = data.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = usage
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                return [self._chunk(0, {}, "content_filter")]
            return []
        out: list[Json] = []
        for position, candidate in enumerate(candidates):
            if isinstance(candidate, dict):
                chunk = self._candidate(candidate, position)
                if chunk is not None:
                    out.append(chunk)
        return out

    def end(self) -> list[Json]:
        if self._failed or self._usage is None:
            return []
        usage, self._usage = self._usage, None
        return [{"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._state.model, "choices": [], "usage": _usage_to_chat(usage)}]

    def _candidate(self, candidate: Json, position: int) -> Json | None:
        index = candidate.get("index")
        index = index if type(index) is int else position
        seen = self._calls.get(index, 0)
        text, thoughts, calls = _parts_to_chat(candidate.get("content"), self._state, seen)
        delta: Json = {}
        if thoughts:
            delta["reasoning_content"] = thoughts
        if text:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = calls
            self._calls[index] = seen + len(calls)
        reason = candidate.get("finishReason")
        finish = _finish_to_chat(reason, index in self._calls) if reason else None
        if not delta and finish is None and index in self._started:
            return None  # an empty text part, or one carrying only a signature
        return self._chunk(index, delta, finish)

    def _chunk(self, index: int, delta: Json, finish: str | None) -> Json:
        if index not in self._started:
            self._started.add(index)
            delta = {"role": "assistant", **delta} if delta else {"role": "assistant", "content": ""}
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._state.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }
