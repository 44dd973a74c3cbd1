"""Shared fixtures: fake vendors and a gateway, both real servers on local ports."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from aiohttp.test_utils import TestServer

from config import Config, parse_config
from gateway.app import create_app
from gateway.state import SERVICES, Runtime
from providers import PROVIDERS
from tests.fakevendor import FakeVendor
from tests.rawvendor import RawVendor


@dataclass
class Gateway:
    server: TestServer
    runtime: Runtime
    db_path: Path
    clients: list[openai.AsyncOpenAI]

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def client(self, key: str = "test-key", platform: str | None = None, **kw: Any) -> openai.AsyncOpenAI:
        base = f"{self.url}/{platform}/v1" if platform else f"{self.url}/v1"
        client = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0, **kw)
        self.clients.append(client)
        return client

    async def rows(self) -> list[dict[str, Any]]:
        await self.server.app[SERVICES].usage.flush()
        db = sqlite3.connect(self.db_path)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM usage ORDER BY id")]
        finally:
            db.close()


def make_config(raw: dict[str, Any], tmp_path: Path) -> Config:
    raw = {"database": str(tmp_path / "usage.db"), **raw}
    return parse_config(yaml.safe_dump(raw), env={}, providers=PROVIDERS).config


@pytest.fixture
async def vendor_factory() -> AsyncIterator[Callable[..., Awaitable[FakeVendor]]]:
    started: list[FakeVendor] = []

    async def make(name: str = "vendor", **kw: Any) -> FakeVendor:
        v = await FakeVendor(name=name, **kw).start()
        started.append(v)
        return v

    yield make
    for v in started:
        await v.close()


@pytest.fixture
async def vendor(vendor_factory: Callable[..., Awaitable[FakeVendor]]) -> FakeVendor:
    return await vendor_factory("vendor")


@pytest.fixture
async def raw_vendor() -> AsyncIterator[RawVendor]:
    vendor = RawVendor()
    vendor.server = await asyncio.start_server(vendor._serve, "127.0.0.1", 0)
    yield vendor
    vendor.server.close()


@pytest.fixture
async def gateway_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    started: list[Gateway] = []

    async def make(raw: dict[str, Any], http_path: str | None = None) -> Gateway:
        config = make_config(raw, tmp_path)
        runtime = Runtime(config)
        server = TestServer(create_app(runtime, http_path=http_path), host="127.0.0.1")
        await server.start_server()  # TestServer cancels handlers on disconnect, as serve() does
        gw = Gateway(server, runtime, Path(config.database), [])
        started.append(gw)
        return gw

    yield make
    for gw in started:
        for client in gw.clients:
            await client.close()
        await gw.server.close()


def channel(name: str, vendor: FakeVendor | RawVendor, models: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "base_url": vendor.base_url, "api_keys": [f"vk-{name}-secret"],
            "models": models or ["gpt-*"], **kw}


KEYS = [{"name": "app1", "key": "test-key"}]
