"""Anthropic's Messages API: `base_url` as the Anthropic SDK's, the key in `x-api-key`.

The client's `anthropic-version` and `anthropic-beta` go through with the other client headers (see
gateway.relay.headers); a request that carries no version gets `DEFAULT_VERSION`.
"""

from __future__ import annotations

import re
from typing import Any

from config import Channel
from providers.base import ANTHROPIC, StreamEvents, Usage, token_counts

DEFAULT_VERSION = "2023-06-01"  # the only version Anthropic has published; its SDKs send it

# Usage rides on message_start (inside "message") and message_delta; text on text, thinking and tool
# input deltas.
EVENTS = StreamEvents(
    usage_key=b'"usage"',
    usage_at=re.compile(rb'"usage"\s*:\s*\{'),
    text=re.compile(rb'"(?:text|thinking|partial_json)"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'),
)
_GENERATIONS = frozenset({"messages"})


class AnthropicProvider:
    name = "anthropic"
    protocol = ANTHROPIC
    events = EVENTS

    def url(self, channel: Channel, endpoint: str, model: str, stream: bool) -> str:
        return f"{channel.base_url}/v1/{endpoint}"

    def headers(self, channel: Channel, api_key: str | None) -> dict[str, str]:
        headers = dict(channel.headers)
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def prepare(self, endpoint: str, body: dict[str, Any], upstream_model: str, want_usage: bool) -> dict[str, Any]:
        # Anthropic streams always report usage: nothing to ask for.
        out = dict(body)
        out["model"] = upstream_model
        return out

    def hide_usage(self, event: Any) -> Any | None:
        return event  # never asked for, so never hidden

    def usage(self, endpoint: str, payload: Any) -> Usage | None:
        """Tokens from a Messages answer, a message_start (usage inside "message") or a message_delta.
        Input counts cache reads and writes too, as OpenAI's prompt_tokens does."""
        if endpoint not in _GENERATIONS or not isinstance(payload, dict):
            return None
        raw = payload.get("usage")
        if not isinstance(raw, dict):
            message = payload.get("message")
            raw = message.get("usage") if isinstance(message, dict) else None
            if not isinstance(raw, dict):
                return None
        (fresh, read, written, completion), estimated = token_counts(
            raw.get("input_tokens"),
            raw.get("cache_read_input_tokens"),
            raw.get("cache_creation_input_tokens"),
            raw.get("output_tokens"),
        )
        prompt = fresh + read + written
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cached_tokens=read,
            cache_write_tokens=written,
            estimated=estimated,
        )
