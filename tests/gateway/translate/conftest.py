"""Clients of every protocol, each the real SDK pointed at the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anthropic
import pytest
from google import genai
from google.genai import types

from tests.conftest import Gateway


@pytest.fixture
async def sdk() -> AsyncIterator[Callable[..., Any]]:
    """sdk("anthropic" | "gemini", gw, key=..., platform=...): a real SDK client on the gateway, closed after the test."""
    made: list[Any] = []
    # google-genai's own aiohttp session subclasses ClientSession, which aiohttp warns about (an error here).
    session = aiohttp.ClientSession()

    def make(kind: str, gw: Gateway, key: str = "test-key", platform: str | None = None) -> Any:
        base = f"{gw.url}/{platform}" if platform else gw.url
        if kind == "anthropic":
            client: Any = anthropic.AsyncAnthropic(base_url=base, api_key=key, max_retries=0)
        else:
            opts = types.HttpOptions(base_url=base, api_version="v1beta", aiohttp_client=session)
            client = genai.Client(api_key=key, http_options=opts)
        made.append(client)
        return client

    yield make
    for client in made:
        if isinstance(client, anthropic.AsyncAnthropic):
            await client.close()
        else:
            await client.aio.aclose()
    await session.close()
