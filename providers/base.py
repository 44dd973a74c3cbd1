"""The one narrow interface every upstream protocol adaptor implements.

An adaptor knows which wire protocol its vendor speaks, how to address it (URL, headers), how to
shape a request body it has been handed, and how to read usage out of a response or a stream event.
HTTP itself lives in `gateway.http`; the relay decides when to call what.
"""

from __future__ import annotations

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
    images: int = 0  # images generated or edited
    seconds: float = 0.0  # audio duration the vendor billed (transcription, translation)
    estimated: bool = False  # a count was unreadable or absurd as the vendor sent it, and was guessed

    def merge(self, other: Usage) -> None:
        """Take the larger of each count: vendors repeat cumulative usage across events."""
        self.prompt_tokens = max(self.prompt_tokens, other.prompt_tokens)
        self.completion_tokens = max(self.completion_tokens, other.completion_tokens)
        self.cached_tokens = max(self.cached_tokens, other.cached_tokens)
        self.reasoning_tokens = max(self.reasoning_tokens, other.reasoning_tokens)
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
