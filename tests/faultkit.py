"""Helpers shared by the fault tests: raw calls, stream collection, waiting on a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
from multidict import CIMultiDict

from tests.conftest import Gateway

MESSAGES = [{"role": "user", "content": "hello there"}]


async def collect(stream: Any) -> tuple[list[str], openai.APIError | None]:
    """The text deltas of a chat stream, and the error it ended with, if any."""
    texts: list[str] = []
    try:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
    except openai.APIError as err:
        return texts, err
    return texts, None


async def stream_chat(gw: Gateway, **kw: Any) -> tuple[list[str], openai.APIError | None]:
    stream = await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **kw)
    return await collect(stream)


async def post(
    gw: Gateway,
    body: Any = None,
    *,
    path: str = "/v1/chat/completions",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, bytes, CIMultiDict[str]]:
    """A raw request (no SDK checks in the way); the status, body and headers of the answer."""
    hdrs = {"Authorization": "Bearer test-key", **(headers or {})}
    async with aiohttp.ClientSession() as s, s.request(method, gw.url + path, json=body, data=data, headers=hdrs) as r:
        return r.status, await r.read(), CIMultiDict(r.headers)


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until `check()` holds; fail after `timeout` seconds (a bound for a hang, not a speed test)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def rows_eventually(gw: Gateway, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The usage rows once there are `n`: a hung-up request is recorded as its handler unwinds."""
    deadline = time.monotonic() + timeout
    while len(rows := await gw.rows()) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {n} usage rows, have {len(rows)}")
        await asyncio.sleep(0.02)
    return rows
