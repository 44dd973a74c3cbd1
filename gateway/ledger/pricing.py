"""Cost of one request from `models.*.price` (token prices are per 1M tokens)."""

from __future__ import annotations

from config import Price
from gateway.ledger.sink import UsageRow


def cost(row: UsageRow, price: Price | None) -> float | None:
    if price is None:
        return None
    total = 0.0
    known = False
    if price.input is not None:
        cached = row.cached_tokens if price.cached_input is not None else 0
        total += (row.prompt_tokens - cached) * price.input / 1e6
        total += cached * (price.cached_input or 0.0) / 1e6
        known = True
    if price.output is not None:
        total += row.completion_tokens * price.output / 1e6
        known = True
    if price.per_image is not None:
        total += price.per_image * row.images
        known = True
    if price.per_second is not None:
        total += price.per_second * row.audio_seconds
        known = True
    if price.per_1k_chars is not None:
        total += price.per_1k_chars * row.input_chars / 1000
        known = True
    if price.per_request is not None:
        total += price.per_request
        known = True
    return round(total, 8) if known else None
