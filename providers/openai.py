"""OpenAI and every OpenAI-compatible vendor (DeepSeek, vLLM, Ollama, ...): passthrough but for the model."""

from __future__ import annotations

import re
from typing import Any

from config import Channel
from providers.base import OPENAI, StreamEvents, Usage, token_counts

_STREAM_USAGE_ENDPOINTS = frozenset({"chat/completions", "completions"})
_AUDIO_DURATION_ENDPOINTS = frozenset({"audio/transcriptions", "audio/translations"})


# Stream events of chat, completions and Responses carry usage under "usage" (Responses nests it in
# "response"); the text is in content, text, delta, reasoning_content and tool-call arguments.
# (The string body is the unrolled `[^"\\]*(?:\\.[^"\\]*)*`: twice as fast as an alternation per character.)
EVENTS = StreamEvents(
    usage_key=b'"usage"',
    usage_at=re.compile(rb'"usage"\s*:\s*\{'),
    text=re.compile(rb'"(?:content|text|delta|reasoning_content|arguments)"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'),
)


class OpenAIProvider:
    name = "openai"
    protocol = OPENAI
    events = EVENTS

    def url(self, channel: Channel, endpoint: str, model: str, stream: bool) -> str:
        return f"{channel.base_url}/{endpoint}"

    def headers(self, channel: Channel, api_key: str | None) -> dict[str, str]:
        headers = dict(channel.headers)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def prepare(self, endpoint: str, body: dict[str, Any], upstream_model: str, want_usage: bool) -> dict[str, Any]:
        out = dict(body)
        out["model"] = upstream_model
        if want_usage and out.get("stream") and endpoint in _STREAM_USAGE_ENDPOINTS:
            opts = out.get("stream_options")
            out["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return out

    def hide_usage(self, event: Any) -> Any | None:
        """The usage-only chunk `stream_options.include_usage` adds is dropped; usage riding on a chunk
        with choices (some compatible vendors send it so) is removed from it."""
        if not isinstance(event, dict) or "usage" not in event:
            return event
        if not event.get("choices"):
            return None
        out = dict(event)
        del out["usage"]
        return out

    def usage(self, endpoint: str, payload: Any) -> Usage | None:
        """Tokens from `usage` (chat and embeddings names, Responses and Realtime names, nested in
        `response` for stream events), plus images for images/* and audio seconds for transcription."""
        if not isinstance(payload, dict):
            return None
        raw = payload.get("usage")
        if not isinstance(raw, dict):
            # Responses API stream events and Realtime response.done nest usage in the response.
            response = payload.get("response")
            raw = response.get("usage") if isinstance(response, dict) else None
        out = _tokens(raw) if isinstance(raw, dict) else None
        if endpoint.startswith("images/"):
            images = _image_count(payload)
            if images:
                out = out or Usage()
                out.images = images
        elif endpoint in _AUDIO_DURATION_ENDPOINTS:
            # verbose_json reports `duration`; newer models report usage {type: duration, seconds}.
            seconds = _number(payload.get("duration"))
            if seconds:
                out = out or Usage()
                out.seconds = max(out.seconds, seconds)
        return out


def _tokens(raw: dict[str, Any]) -> Usage:
    prompt = raw.get("prompt_tokens", raw.get("input_tokens"))
    completion = raw.get("completion_tokens", raw.get("output_tokens"))
    total = raw.get("total_tokens")
    cached = _first_dict(raw, "prompt_tokens_details", "input_tokens_details", "input_token_details").get("cached_tokens")
    reasoning = _first_dict(raw, "completion_tokens_details", "output_tokens_details", "output_token_details").get("reasoning_tokens")
    (prompt, completion, total, cached, reasoning), estimated = token_counts(prompt, completion, total, cached, reasoning)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total or prompt + completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        seconds=_number(raw.get("seconds")) if raw.get("type") == "duration" else 0.0,
        estimated=estimated,
    )


def _image_count(payload: dict[str, Any]) -> int:
    data = payload.get("data")
    if isinstance(data, list):
        return len(data)
    kind = payload.get("type")
    # Streamed image generation ends each image with image_generation.completed / image_edit.completed.
    if isinstance(kind, str) and kind.startswith("image_") and kind.endswith(".completed"):
        return 1
    return 0


def _first_dict(raw: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        value = raw.get(name)
        if isinstance(value, dict):
            return value
    return {}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if value > 0 else 0.0
