"""OpenAI and every OpenAI-compatible vendor (DeepSeek, vLLM, Ollama, ...): passthrough but for the model."""

from __future__ import annotations

from typing import Any

from config import Channel
from providers.base import Usage

_STREAM_USAGE_ENDPOINTS = frozenset({"chat/completions", "completions"})


class OpenAIProvider:
    name = "openai"

    def url(self, channel: Channel, endpoint: str) -> str:
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

    def usage(self, endpoint: str, payload: Any) -> Usage | None:
        if not isinstance(payload, dict):
            return None
        raw = payload.get("usage")
        if not isinstance(raw, dict):
            # Responses API streams nest usage in response.completed.
            response = payload.get("response")
            raw = response.get("usage") if isinstance(response, dict) else None
            if not isinstance(raw, dict):
                return None
        prompt = _int(raw.get("prompt_tokens", raw.get("input_tokens")))
        completion = _int(raw.get("completion_tokens", raw.get("output_tokens")))
        in_details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
        out_details = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=_int(raw.get("total_tokens")) or prompt + completion,
            cached_tokens=_int(in_details.get("cached_tokens") if isinstance(in_details, dict) else 0),
            reasoning_tokens=_int(out_details.get("reasoning_tokens") if isinstance(out_details, dict) else 0),
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
