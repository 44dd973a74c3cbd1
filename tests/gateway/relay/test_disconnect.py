"""Client hang-ups close the vendor connection at once and are billed for what was streamed (499)."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import KEYS, channel
from tests.fakevendor import Fault
from tests.faultkit import MESSAGES, eventually, rows_eventually, stream_chat


async def test_client_hangs_up_mid_stream(vendor_factory, gateway_factory):
    vendor = await vendor_factory("v", chunks=200, chunk_delay=0.05)
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    stream = await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    got = [await stream.__anext__() for _ in range(3)]
    assert [c.choices[0].delta.content for c in got] == ["tok0 ", "tok1 ", "tok2 "]
    await stream.close()
    # The vendor sees its connection closed while it is still producing.
    await eventually(lambda: vendor.closed_streams == 1, what="the vendor to see the hang-up")
    [row] = await rows_eventually(gw, 1)
    assert (row["status"], row["stream"], row["channel"], row["attempts"]) == (499, 1, "a", 1)
    assert row["error"] == "client closed the connection"
    # No usage reached the gateway: the tokens so far are estimated from the text streamed.
    assert row["estimated"] == 1
    assert row["completion_tokens"] >= len("tok0 tok1 tok2 ") // 4
    assert row["completion_tokens"] < 200 * 5 // 4
    assert not gw.runtime.health.cooling(gw.runtime.config.channels[0])  # not the channel's fault


async def test_client_hangs_up_while_the_vendor_is_thinking(vendor, gateway_factory):
    vendor.fail_next(Fault("hang"))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
        try:
            async with s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES},
                              headers={"Authorization": "Bearer test-key"}) as r:
                await r.read()
        except TimeoutError:
            pass
    await eventually(lambda: vendor.disconnects == 1, what="the vendor to see the hang-up")
    [row] = await rows_eventually(gw, 1)
    assert (row["status"], row["attempts"], row["channel"]) == (499, 1, "a")
    assert row["total_tokens"] == 0  # nothing was answered


async def test_client_hangs_up_while_waiting_for_the_first_chunk(vendor, gateway_factory):
    vendor.fail_next(Fault("headers_hang"))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    task = asyncio.create_task(stream_chat(gw))
    await vendor.received.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    await eventually(lambda: vendor.disconnects == 1, what="the vendor to see the hang-up")
    [row] = await rows_eventually(gw, 1)
    assert row["status"] == 499
