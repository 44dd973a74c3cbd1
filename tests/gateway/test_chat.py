"""Chat completions end to end: real openai client -> gateway -> fake vendor."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import KEYS, channel


async def test_non_stream_passthrough_and_usage_row(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor, model_map={"gpt-4o": "gpt-4o-2024"})]})
    client = gw.client()
    resp = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    completion = resp.parse()
    assert completion.choices[0].message.content == "hello from vendor"
    assert resp.headers["x-request-id"]
    assert resp.headers["x-vendor"] == "vendor"
    seen = vendor.requests[-1]
    assert seen.json()["model"] == "gpt-4o-2024"
    assert seen.headers["Authorization"] == "Bearer vk-main-secret"
    rows = await gw.rows()
    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"] == resp.headers["x-request-id"]
    assert (row["key_name"], row["model"], row["upstream_model"], row["channel"]) == ("app1", "gpt-4o", "gpt-4o-2024", "main")
    assert (row["status"], row["stream"], row["attempts"]) == (200, 0, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 3, 14)
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (2, 1)
    assert row["platform"] == "main" or row["platform"] == "openai"
    assert abs(row["ts"] - time.time()) < 60 and 0 < row["ttft_ms"] <= row["latency_ms"]
    assert (row["endpoint"], row["cost"], row["error"], row["estimated"]) == ("chat/completions", None, None, 0)
    assert (row["images"], row["input_chars"], row["audio_seconds"]) == (0, 0, 0.0)


async def test_stream_arrives_chunk_by_chunk(vendor_factory, gateway_factory):
    # The vendor holds every chunk after the first until the client has the first: a gateway that
    # waited for more before passing it on would hang here (bounded by the wait_for).
    vendor = await vendor_factory("gated", chunks=4)
    vendor.gate = asyncio.Event()
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor)]})
    stream = await gw.client().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    texts = []

    async def read() -> None:
        async for chunk in stream:
            assert chunk.usage is None  # the client did not ask for usage, so it never sees the usage chunk
            if chunk.choices:
                texts.append(chunk.choices[0].delta.content)
                vendor.gate.set()  # only now may the vendor go on

    await asyncio.wait_for(read(), 10)
    assert texts == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert vendor.requests[-1].json()["stream_options"] == {"include_usage": True}
    rows = await gw.rows()
    assert rows[0]["stream"] == 1
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (11, 4)
    assert rows[0]["ttft_ms"] < rows[0]["latency_ms"]


async def test_stream_usage_passed_when_client_asks(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor)]})
    stream = await gw.client().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    usages = [c.usage async for c in stream if c.usage is not None]
    assert len(usages) == 1 and usages[0].total_tokens == 16


async def test_unchanged_body_goes_upstream_as_sent_and_a_mapped_one_is_rewritten(vendor, gateway_factory):
    import aiohttp

    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor, model_map={"gpt-4o": "gpt-4o-2024"})]})
    raw = b'{"model":  "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],  "big": 12345678901234567890}'
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s:
        async with s.post(f"{gw.url}/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200
        assert vendor.requests[-1].body == raw  # byte for byte: spacing and a 20-digit integer intact
        mapped = raw.replace(b"gpt-4o-mini", b"gpt-4o").replace(b"12345678901234567890", b"1")
        async with s.post(f"{gw.url}/v1/chat/completions", data=mapped, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200
        assert vendor.requests[-1].json()["model"] == "gpt-4o-2024"


async def test_vendor_cookies_are_neither_kept_nor_shared_between_clients(vendor_factory, gateway_factory):
    # A vendor's cookie (Cloudflare sets them on real vendor APIs) must not ride along on the next
    # client's request. localhost, not 127.0.0.1: a cookie jar ignores cookies from bare IP hosts.
    vendor = await vendor_factory("cookies", set_cookie="__cf_bm=first-client-session; Path=/")
    route = channel("main", vendor, base_url=vendor.base_url.replace("127.0.0.1", "localhost"))
    gw = await gateway_factory({"keys": KEYS, "channels": [route]})
    client = gw.client()
    for _ in range(2):
        resp = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert "set-cookie" not in resp.headers
    assert len(vendor.requests) == 2
    assert "Cookie" not in vendor.requests[1].headers
