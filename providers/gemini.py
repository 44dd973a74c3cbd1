"""Google's Gemini API (generateContent): `base_url` as google-genai's, the key in `x-goog-api-key`
(never in the URL, where logs and proxies would keep it).

Streams are always asked for as SSE (`alt=sse`); a client that wanted Gemini's JSON-array framing
gets it rebuilt by the gateway (providers.translate.ArrayFrame).
"""

from __future__ import annotations

import re
from typing import Any

from config import Channel
from providers.base import GEMINI, StreamEvents, Usage, token_counts

EVENTS = StreamEvents(
    usage_key=b'"usageMetadata"',
    usage_at=re.compile(rb'"usageMetadata"\s*:\s*\{'),
    text=re.compile(rb'"text"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'),
)
GENERATE, STREAM, COUNT = "generateContent", "streamGenerateContent", "countTokens"
_GENERATIONS = frozenset({GENERATE, STREAM})


class GeminiProvider:
    name = "gemini"
    protocol = GEMINI
    events = EVENTS

    def url(self, channel: Channel, endpoint: str, model: str, stream: bool) -> str:
        url = f"{channel.base_url}/v1beta/models/{model}:{endpoint}"
        return url + "?alt=sse" if endpoint == STREAM else url

    def headers(self, channel: Channel, api_key: str | None) -> dict[str, str]:
        headers = dict(channel.headers)
        if api_key:
            headers["x-goog-api-key"] = api_key
        return headers

    def prepare(self, endpoint: str, body: dict[str, Any], upstream_model: str, want_usage: bool) -> dict[str, Any]:
        # The model is in the URL (every answer carries usageMetadata), but for the one a countTokens
        # request may name inside its generateContentRequest.
        out = {k: v for k, v in body.items() if k != "model"}
        inner = out.get("generateContentRequest")
        if isinstance(inner, dict) and "model" in inner:
            out["generateContentRequest"] = {**inner, "model": f"models/{upstream_model}"}
        return out

    def hide_usage(self, event: Any) -> Any | None:
        return event  # never asked for, so never hidden

    def usage(self, endpoint: str, payload: Any) -> Usage | None:
        """Tokens from usageMetadata. Completion counts thoughts too, as OpenAI's completion_tokens
        counts reasoning; the prompt counts cached content and tool-use prompts."""
        if endpoint not in _GENERATIONS or not isinstance(payload, dict):
            return None
        raw = payload.get("usageMetadata")
        if not isinstance(raw, dict):
            return None
        (prompt, tool_prompt, cached, candidates, thoughts, total), estimated = token_counts(
            raw.get("promptTokenCount"),
            raw.get("toolUsePromptTokenCount"),
            raw.get("cachedContentTokenCount"),
            raw.get("candidatesTokenCount"),
            raw.get("thoughtsTokenCount"),
            raw.get("totalTokenCount"),
        )
        prompt += tool_prompt
        completion = candidates + thoughts
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=max(total, prompt + completion),
            cached_tokens=cached,
            reasoning_tokens=thoughts,
            estimated=estimated,
        )
