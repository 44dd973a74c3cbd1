"""Cost from models.*.price."""

from __future__ import annotations

import pytest

from config import Price
from gateway.billing.pricing import DEFAULT_OUTPUT_TOKENS, cost, estimate
from gateway.ledger.sink import UsageRow


def row(**kw: float) -> UsageRow:
    return UsageRow(request_id="r", ts=0, **kw)  # type: ignore[arg-type]


def test_token_prices_with_cached_input():
    price = Price(input=2.5, output=10.0, cached_input=1.25)
    got = cost(row(prompt_tokens=1_000_000, cached_tokens=400_000, completion_tokens=100_000), price)
    assert got == pytest.approx(0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10.0)


def test_unit_prices_and_unknown():
    assert cost(row(images=3), Price(per_image=0.2)) == pytest.approx(0.6)
    assert cost(row(audio_seconds=10), Price(per_second=0.5)) == pytest.approx(5.0)
    assert cost(row(input_chars=2500), Price(per_1k_chars=0.015)) == pytest.approx(0.0375)
    assert cost(row(prompt_tokens=5), None) is None
    assert cost(row(prompt_tokens=5), Price()) is None


def test_an_estimate_is_the_cost_of_the_tokens_it_counts():
    """What a limited request charges its tpm and reserves against its budget before a vendor answers:
    the tokens are ~4 bytes each plus its max_tokens (or the default); the reservation their price."""
    price = Price(input=2.0, output=8.0, per_request=0.001)
    tokens, reserve = estimate(price, 4000, 500)
    assert tokens == 1500
    assert reserve == pytest.approx(cost(row(prompt_tokens=1000, completion_tokens=500), price))
    assert estimate(price, 4000, None)[0] == 1000 + DEFAULT_OUTPUT_TOKENS
    assert estimate(None, 4000, 500) == (1500, 0.0)
