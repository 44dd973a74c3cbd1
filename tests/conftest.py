"""Shared fixtures: fake vendors and a gateway, both real servers on local ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from providers import CHANNEL_PROVIDERS
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


@pytest.fixture(scope="session", autouse=True)
def no_temp_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite, and every process it starts (the demo, the bench, gateways), leaves no folder of
    ours (`gateway-*`, `bench-*`) in the temp folder: for the session TMPDIR is a folder of its own,
    checked and removed at the end. pytest's own tmp_path folders stay where pytest keeps them. (A
    supervisor killed with SIGKILL cannot remove its metrics folder: a test that kills one fails here.)"""
    tmp_path_factory.getbasetemp()  # placed before TMPDIR changes
    private = tempfile.mkdtemp(prefix="gateway-tests-")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = private
    try:
        yield
    finally:
        if saved[0] is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        left = sorted(name for name in os.listdir(private) if name.startswith(("gateway-", "bench-")))
        shutil.rmtree(private, ignore_errors=True)
    assert not left, f"left behind in the temp folder: {left}"


def make_config(raw: dict[str, Any], tmp_path: Path) -> Config:
    raw = {"database": str(tmp_path / "usage.db"), **raw}
    return parse_config(yaml.safe_dump(raw), env={}, providers=CHANNEL_PROVIDERS).config


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
