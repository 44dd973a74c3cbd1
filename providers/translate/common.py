"""What every translator shares: the per-request `State`, names and ids made safe for the other side
and back, and SSE framing.

The pivot between protocols is OpenAI chat completions (request, answer and stream chunks as dicts),
with a few fields of the gateway's own where chat has no word for something another protocol needs
to get back unchanged (see docs/translation.md):

- assistant message `thinking_blocks`: Anthropic thinking / redacted_thinking blocks, signatures kept;
- stream delta `thinking_signature` (closes the thinking block it belongs to), `redacted_thinking`; an
  assistant message a client put together from such a stream carries `thinking_signature` back, with
  its `reasoning_content`, as one signed thinking block;
- choice `stop_sequence`: the stop sequence that ended the answer, when the vendor says;
- usage `prompt_tokens_details.cache_write_tokens` (Anthropic cache_creation_input_tokens);
- a chunk `{"error": {"message", "type", "status"}}`: the vendor's stream ended in an error.

`prompt_tokens` always counts every input token (cache reads and writes included) and
`cached_tokens` the cache reads among them, as OpenAI reports them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

# Tool names every vendor takes: OpenAI's rule (Anthropic's and Gemini's are no looser).
MAX_TOOL_NAME = 64
_SAFE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
_SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_ID_PREFIX = "toolu_gw_"  # a tool id rewritten for Anthropic's [a-zA-Z0-9_-]: base64url of the original follows
# How each protocol names an HTTP error status, shared by the translators and the gateway's own errors.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large", 422: "invalid_request_error",
    429: "rate_limit_error", 431: "invalid_request_error", 500: "api_error", 503: "overloaded_error",
    504: "timeout_error", 529: "overloaded_error",
}  # fmt: skip
ANTHROPIC_ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "timeout_error": 504, "overloaded_error": 529,
}  # fmt: skip
GEMINI_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT", 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 431: "INVALID_ARGUMENT",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
# Anthropic requires max_tokens; OpenAI and Gemini clients may leave it out.
DEFAULT_MAX_TOKENS = 8192


@dataclass(slots=True)
class State:
    """One translated attempt: what the request's translation learnt that the answer's needs.

    `model`: the public model name the client asked for (answers carry it, not the upstream name).
    `prompt_estimate`: input tokens guessed from the request, for a client that must be told them
    before the vendor says (Anthropic's message_start). `include_usage`: an OpenAI client asked for
    usage in its stream. `stream`: the client asked for a stream.
    """

    model: str
    stream: bool = False
    include_usage: bool = False
    prompt_estimate: int = 0
    upstream_model: str = ""  # the name the vendor gets (some vendor quirks go by it)
    # the client's request as it came (a Responses answer echoes its settings back)
    client_request: dict[str, Any] | None = None
    # vendor-side tool name -> the client's, for the names that had to be shortened or cleaned
    _names: dict[str, str] = field(default_factory=dict)

    def vendor_tool_name(self, name: str) -> str:
        """A tool name every vendor accepts; the same client name always gives the same one."""
        if _SAFE_NAME.match(name):
            return name
        clean = re.sub(r"[^a-zA-Z0-9_-]", "_", name)
        if not clean or not (clean[0].isalpha() or clean[0] == "_"):
            clean = "_" + clean
        short = clean if len(clean) <= MAX_TOOL_NAME else clean[: MAX_TOOL_NAME - 9] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
        self._names[short] = name
        return short

    @property
    def renamed(self) -> bool:
        """Some tool name had to be changed for the vendor (so answers need reading for it)."""
        return bool(self._names)

    def client_tool_name(self, name: str) -> str:
        """The client's own name for a tool the vendor named (undoes vendor_tool_name)."""
        return self._names.get(name, name)


def anthropic_id(tool_id: str) -> str:
    """A tool call id as Anthropic requires it ([a-zA-Z0-9_-]+), reversibly (see `original_id`)."""
    if tool_id and _SAFE_ID.match(tool_id):
        return tool_id
    return _ID_PREFIX + base64.urlsafe_b64encode(tool_id.encode()).decode().rstrip("=")


def original_id(tool_id: str) -> str:
    """Undo `anthropic_id`: the id the vendor gave."""
    if not tool_id.startswith(_ID_PREFIX):
        return tool_id
    raw = tool_id[len(_ID_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return tool_id


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event: `event:` line (when named) and the JSON data."""
    payload = orjson.dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def estimate_tokens(value: Any) -> int:
    """A rough token count (~4 bytes a token) of a request's content, never 0 for something."""
    size = len(orjson.dumps(value)) if not isinstance(value, str | bytes) else len(value)
    return max(1, size // 4) if size else 0


class Refused(ValueError):
    """A request field the vendor's protocol cannot carry and that cannot be dropped without changing
    the answer: the client gets a 400 naming `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def tool_arguments(arguments: Any) -> dict[str, Any]:
    """Chat tool call arguments (a JSON string) as the object Anthropic's `input` and Gemini's `args`
    want: {} when unreadable or not an object, since one bad call must not fail the conversation."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 `data:` URL, else None."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    if not comma or not header.endswith(";base64"):
        return None
    return header[:-7].split(";", 1)[0], data


def now() -> int:
    """Unix seconds, as answers stamp `created`."""
    return int(time.time())


def positive(value: Any) -> int:
    """A token count as sent: anything but a positive int counts 0."""
    return value if type(value) is int and value > 0 else 0


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def reasoning_text(source: dict[str, Any]) -> str:
    """Reasoning text of a chat message or delta: `reasoning_content`, or `reasoning` as some vendors name it."""
    text = source.get("reasoning_content") or source.get("reasoning")
    return text if isinstance(text, str) else ""
