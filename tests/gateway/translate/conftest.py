"""Clients of every protocol, each the real SDK pointed at the gateway; the fake Anthropic and Gemini
vendors (tests/fakeprotocols.py) and channels on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import pytest
from google import genai
from google.genai import types

from tests.conftest import Gateway
from tests.fakeprotocols import FakeAnthropic, FakeGemini


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


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """fakes("anthropic" | "gemini", **kw): a started FakeAnthropic / FakeGemini (tests/fakeprotocols.py),
    closed after the test."""
    started: list[FakeAnthropic | FakeGemini] = []

    async def make(kind: str, **kw: Any) -> FakeAnthropic | FakeGemini:
        fake = await (FakeAnthropic(**kw) if kind == "anthropic" else FakeGemini(**kw)).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.close()


def claude_channel(fake: FakeAnthropic, name: str = "claude", **kw: Any) -> dict[str, Any]:
    """A channel on a fake Anthropic vendor, serving claude-* (the SDK warns on real deprecated names)."""
    return {"name": name, "provider": "anthropic", "base_url": fake.base_url, "api_keys": [f"vk-{name}-secret"],
            "models": ["claude-*"], **kw}


def gemini_channel(fake: FakeGemini, name: str = "gemini", **kw: Any) -> dict[str, Any]:
    """A channel on a fake Gemini vendor, serving gemini-*."""
    return {"name": name, "provider": "gemini", "base_url": fake.base_url, "api_keys": [f"vk-{name}-secret"],
            "models": ["gemini-*"], **kw}
