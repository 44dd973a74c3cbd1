"""What a request costs, from `models.*.price`: token prices per 1M tokens, the rest per unit.

Prompt tokens split three ways where the price says so: cache reads at `cached_input`, cache writes at
`cache_write`, the rest at `input` (a price without those prices bills them all at `input`). Reasoning
tokens are inside the completion count and billed as output. `per_second` bills audio or video
seconds, by the video's resolution where the price lists one per resolution.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

from config import Price

# Up front, before the vendor has said: ~4 bytes of request a prompt token, and this many completion
# tokens when the request sets no cap (max_tokens and its kin).
BYTES_PER_TOKEN = 4
DEFAULT_OUTPUT_TOKENS = 1024


class Metered(Protocol):
    """What one request used; a UsageRow is one."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    images: int
    audio_seconds: float
    input_chars: int
    resolution: str | None


@dataclass(slots=True)
class Quantities:
    """A `Metered` built from parts: a planned request, a task's usage, a quote."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    images: int = 0
    audio_seconds: float = 0.0
    input_chars: int = 0
    resolution: str | None = None


def cost(used: Metered, price: Price | None) -> float | None:
    """The cost of `used` at `price`; None when nothing prices it."""
    if price is None:
        return None
    total = 0.0
    known = False
    if price.input is not None:
        cached = used.cached_tokens if price.cached_input is not None else 0
        written = used.cache_write_tokens if price.cache_write is not None else 0
        fresh = max(used.prompt_tokens - cached - written, 0)
        total += fresh * price.input + cached * (price.cached_input or 0.0) + written * (price.cache_write or 0.0)
        known = True
    if price.output is not None:
        total += used.completion_tokens * price.output
        known = True
    total /= 1e6
    if price.per_image is not None:
        total += price.per_image * used.images
        known = True
    per_second = per_second_price(price, used.resolution)
    if per_second is not None:
        total += per_second * used.audio_seconds
        known = True
    if price.per_1k_chars is not None:
        total += price.per_1k_chars * used.input_chars / 1000
        known = True
    if price.per_request is not None:
        total += price.per_request
        known = True
    return round(total, 8) if known else None


def per_second_price(price: Price, resolution: str | None) -> float | None:
    """The price of a second: the one price, or the resolution's (the highest listed when the resolution
    is unknown or unlisted, so an estimate never falls short)."""
    table = price.per_second_by_resolution
    if not table:
        return price.per_second
    key = normalize_resolution(resolution)
    if key is not None and key in table:
        return table[key]
    return max(table.values())


_SIZE_RE = re.compile(r"^\s*(\d+)\s*[x*X\u00d7]\s*(\d+)\s*$")


def normalize_resolution(value: str | None) -> str | None:
    """ "720p" -> "720P"; a size "1280x720" or "1280*720" -> "720P" (its shorter side)."""
    if not value:
        return None
    m = _SIZE_RE.match(value)
    if m:
        return f"{min(int(m.group(1)), int(m.group(2)))}P"
    return value.strip().upper()


def estimate_tokens(request_bytes: int, output_cap: int | None) -> int:
    """Tokens a request will use at most, as far as can be told before the vendor answers."""
    return request_bytes // BYTES_PER_TOKEN + (output_cap if output_cap is not None else DEFAULT_OUTPUT_TOKENS)


def estimate(price: Price | None, request_bytes: int, output_cap: int | None) -> tuple[int, float]:
    """The tokens a request billed by tokens will use at most (`estimate_tokens`), and what to reserve
    against a budget for them (0 when nothing prices it): the token prices only, without building a
    Quantities for `cost`. Once per limited request."""
    prompt = request_bytes // BYTES_PER_TOKEN
    out = output_cap if output_cap is not None else DEFAULT_OUTPUT_TOKENS
    if price is None:
        return prompt + out, 0.0
    return prompt + out, (prompt * (price.input or 0.0) + out * (price.output or 0.0)) / 1e6 + (price.per_request or 0.0)


_QUOTE_FIELDS = {
    "prompt_tokens": ("prompt_tokens", "input_tokens", "promptTokenCount"),
    "completion_tokens": ("completion_tokens", "output_tokens", "candidatesTokenCount"),
    "cached_tokens": (
        "cached_tokens",
        "cache_read_input_tokens",
        "cachedContentTokenCount",
    ),
    "cache_write_tokens": ("cache_write_tokens", "cache_creation_input_tokens"),
    "images": ("images", "n", "image_count"),
    "audio_seconds": ("seconds", "duration", "audio_seconds", "video_seconds"),
    "input_chars": ("characters", "input_chars", "chars"),
}


def quantities(usage: dict[str, Any]) -> Quantities:
    """A usage record as a client may send one to be priced: OpenAI, Anthropic or Gemini token names,
    or images / seconds (+ resolution or size) / characters. Raises ValueError naming a bad field."""
    q = Quantities()
    for attr, names in _QUOTE_FIELDS.items():
        for name in names:
            if name in usage and usage[name] is not None:
                value = usage[name]
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"usage.{name} must be a number, got {value!r}") from None
                if number < 0 or not math.isfinite(number):
                    raise ValueError(f"usage.{name} must be a finite number >= 0, got {value!r}")
                setattr(q, attr, number if attr == "audio_seconds" else int(number))
                break
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int) and not q.cached_tokens:
        q.cached_tokens = details["cached_tokens"]
    if "input_tokens" in usage and "prompt_tokens" not in usage:
        q.prompt_tokens += q.cached_tokens + q.cache_write_tokens  # Anthropic counts cache reads and writes apart
    resolution = usage.get("resolution") or usage.get("size")
    q.resolution = normalize_resolution(str(resolution)) if resolution else None
    return q


def price_from_dict(snapshot: dict[str, Any] | None) -> Price | None:
    """A price as `Price.as_dict()` kept it (a task's price snapshot)."""
    if not snapshot:
        return None
    values = dict(snapshot)
    per_second = values.pop("per_second", None)
    if isinstance(per_second, dict):
        values["per_second_by_resolution"] = {str(k): float(v) for k, v in per_second.items()}
    elif per_second is not None:
        values["per_second"] = float(per_second)
    return Price(**values)
