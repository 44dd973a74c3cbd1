"""The one narrow interface every upstream protocol adaptor implements.

An adaptor knows how to address its vendor (URL, headers), how to shape a request body it has been
handed, and how to read usage out of a response or a stream event. HTTP itself lives in `gateway.relay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from config import Channel


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0  # images generated or edited
    seconds: float = 0.0  # audio duration the vendor billed (transcription, translation)

    def merge(self, other: Usage) -> None:
        """Take the larger of each count: vendors repeat cumulative usage across events."""
        self.prompt_tokens = max(self.prompt_tokens, other.prompt_tokens)
        self.completion_tokens = max(self.completion_tokens, other.completion_tokens)
        self.cached_tokens = max(self.cached_tokens, other.cached_tokens)
        self.reasoning_tokens = max(self.reasoning_tokens, other.reasoning_tokens)
        self.total_tokens = max(self.total_tokens, other.total_tokens, self.prompt_tokens + self.completion_tokens)
        self.images = max(self.images, other.images)
        self.seconds = max(self.seconds, other.seconds)

    def add(self, other: Usage) -> None:
        """Sum counts of separate billable units, such as each response in a realtime session."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens or other.prompt_tokens + other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.images += other.images
        self.seconds += other.seconds


class Provider(Protocol):
    name: str

    def url(self, channel: Channel, endpoint: str) -> str:
        """Upstream URL for an OpenAI-style endpoint such as `chat/completions`."""

    def headers(self, channel: Channel, api_key: str | None) -> dict[str, str]:
        """Auth and fixed headers for one upstream request."""

    def prepare(self, endpoint: str, body: dict[str, Any], upstream_model: str, want_usage: bool) -> dict[str, Any]:
        """The body to send upstream; `want_usage` asks a stream to report usage."""

    def usage(self, endpoint: str, payload: Any) -> Usage | None:
        """Usage from a response body or one stream event, or None if it carries none."""
