"""The one narrow interface every upstream protocol adaptor implements.

An adaptor knows which wire protocol its vendor speaks, how to address it (URL, headers), how to
shape a request body it has been handed, and how to read usage out of a response or a stream event.
HTTP itself lives in `gateway.http`; the relay decides when to call what.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

from config import Channel

# The wire protocols a client or a vendor speaks. A client's is told by its route (gateway.api.pipeline),
# a vendor's by its provider. Where the two are the same, a body goes through as the client sent it.
OPENAI, ANTHROPIC, GEMINI = "openai", "anthropic", "gemini"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # prompt tokens written to the vendor's cache (Anthropic), priced apart
    images: int = 0  # images generated or edited
    seconds: float = 0.0  # audio duration the vendor billed (transcription, translation)
    estimated: bool = False  # a count was unreadable or absurd as the vendor sent it, and was guessed

    def merge(self, other: Usage) -> None:
        """Take the larger of each count: vendors repeat cumulative usage across events."""
        self.prompt_tokens = max(self.prompt_tokens, other.prompt_tokens)
        self.completion_tokens = max(self.completion_tokens, other.completion_tokens)
        self.cached_tokens = max(self.cached_tokens, other.cached_tokens)
        self.reasoning_tokens = max(self.reasoning_tokens, other.reasoning_tokens)
        self.cache_write_tokens = max(self.cache_write_tokens, other.cache_write_tokens)
        self.total_tokens = max(self.total_tokens, other.total_tokens, self.prompt_tokens + self.completion_tokens)
        self.images = max(self.images, other.images)
        self.seconds = max(self.seconds, other.seconds)
        self.estimated = self.estimated or other.estimated

    def add(self, other: Usage) -> None:
        """Sum counts of separate billable units, such as each response in a realtime session."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens or other.prompt_tokens + other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.images += other.images
        self.seconds += other.seconds
        self.estimated = self.estimated or other.estimated


@dataclass(frozen=True, slots=True)
class StreamEvents:
    """What the usage tap (gateway.relay.sse) must know of a protocol's stream events.

    The tap reads every event's bytes but parses only those that may carry usage, so these are
    byte-level tests, cheap enough to run over every chunk.
    """

    usage_key: bytes  # a literal that every event carrying usage contains: the first, fastest test
    usage_at: re.Pattern[bytes]  # where a usage object starts in an event
    text: re.Pattern[bytes]  # generated text (group 1): counted for an estimate when no usage comes


class Provider(Protocol):
    name: str  # the `provider:` of a channel
    protocol: str  # the wire protocol its vendor speaks: OPENAI, ANTHROPIC or GEMINI
    events: StreamEvents

    def url(self, channel: Channel, endpoint: str, model: str, stream: bool) -> str:
        """Upstream URL for an endpoint such as `chat/completions`, for `model` (the upstream name);
        `stream` tells whether the call streams (some vendors stream at another URL)."""

    def headers(self, channel: Channel, api_key: str | None) -> dict[str, str]:
        """Auth and fixed headers for one upstream request."""

    def prepare(self, endpoint: str, body: dict[str, Any], upstream_model: str, want_usage: bool) -> dict[str, Any]:
        """The body to send upstream; `want_usage` asks a stream to report usage."""

    def usage(self, endpoint: str, payload: Any) -> Usage | None:
        """Usage from a response body or one stream event, or None if it carries none."""

    def hide_usage(self, event: Any) -> Any | None:
        """A stream event without the usage `prepare(want_usage=True)` asked for and the client did not:
        the event to send instead, or None to send nothing. Called only on events that carry usage."""


def token_counts(*values: Any) -> tuple[list[int], bool]:
    """Token counts as a vendor sent them, read: (the counts, whether any was a guess).

    Read on every answer: a sane count (an int in range) is checked inline, and only an odd one goes
    through `_loose`, which reads what it can and says the row is estimated.
    """
    counts = list(values)
    estimated = False
    for i, value in enumerate(counts):
        if not (type(value) is int and 0 <= value <= MAX_TOKENS):
            counts[i], odd = _loose(value)
            estimated = estimated or odd
    return counts, estimated


# No single request is billed a billion tokens: a count past this is absurd, clamped and marked estimated.
MAX_TOKENS = 10**9


def _loose(value: Any) -> tuple[int, bool]:
    """A token count that is not a plain int in range: (what can be read of it, whether it is a guess).

    Absent is 0. A whole float (12.0) or a digit string ("12") is read as is; a fraction is rounded, a
    negative count is 0 and an absurd one is clamped to MAX_TOKENS, each marked as a guess; anything
    else (a bool, a list, NaN) is 0, marked too.
    """
    if value is None:
        return 0, False
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0, True
    exact = float(value).is_integer() and 0 <= value <= MAX_TOKENS
    return min(max(round(value), 0), MAX_TOKENS), not exact
