"""The lean upstream client: what goes on the wire, and what it makes of what comes back.

The vendor here is a raw TCP server on a local port, so a test sees the exact request bytes and can
answer with bytes no HTTP server library would send (interim answers, garbage, a closed connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import aiohttp.connector
import pytest
from aiohttp.http import HttpProcessingError

from gateway.http.lean_client import LeanUpstream
from gateway.relay.headers import upstream_query
from tests.conftest import KEYS, channel
from tests.fakevendor import Fault
from tests.faultkit import MESSAGES, post
from tests.rawvendor import OK, RawVendor


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, from the openssl command line tool."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_vendor(certificate: tuple[Path, Path]) -> AsyncIterator[RawVendor]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    vendor = RawVendor()
    vendor.server = await asyncio.start_server(vendor._serve, "127.0.0.1", 0, ssl=context)
    yield vendor
    vendor.server.close()


@pytest.fixture
async def upstream() -> AsyncIterator[LeanUpstream]:
    client = LeanUpstream()
    yield client
    await client.close()


@contextlib.contextmanager
def socket_closed() -> Iterator[int]:
    """A local port nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    yield port


async def fetch(upstream: LeanUpstream, url: str, body: bytes = b"{}", query: str = "", **headers: str) -> tuple[int, bytes]:
    response = await upstream.request("POST", url, {"Content-Type": "application/json", **headers}, body, query, 5.0)
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def test_the_request_on_the_wire(raw_vendor, upstream):
    status, body = await fetch(upstream, f"{raw_vendor.url}/v1/chat/completions", b'{"a":1}', **{"X-Request-Id": "r1"})
    assert (status, body) == (200, b"{}")
    assert raw_vendor.requests == [
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Request-Id: r1\r\n"
        b"Content-Length: 7\r\n"
        b"\r\n"
        b'{"a":1}' % raw_vendor.port
    ]


async def test_connections_are_reused_until_the_vendor_closes_them(raw_vendor, upstream):
    url = f"{raw_vendor.url}/v1/x"
    for _ in range(3):
        assert (await fetch(upstream, url))[0] == 200
    assert len(set(raw_vendor.peers)) == 1
    raw_vendor.answer = lambda _: OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    for _ in range(2):
        assert (await fetch(upstream, url))[0] == 200
    first, *_, fourth, fifth = raw_vendor.peers
    assert fourth == first  # the first answer that said close came on the pooled connection,
    assert fifth != fourth  # and was the last on it


async def test_a_connection_the_vendor_closed_while_idle_is_not_reused(raw_vendor, upstream):
    raw_vendor.close_after = True
    url = f"{raw_vendor.url}/v1/x"
    assert (await fetch(upstream, url))[0] == 200
    await asyncio.sleep(0.05)  # the vendor's FIN arrives
    assert (await fetch(upstream, url))[0] == 200
    assert len(set(raw_vendor.peers)) == 2


async def test_a_body_not_read_to_its_end_does_not_go_back_to_the_pool(raw_vendor, upstream):
    raw_vendor.answer = lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100
    url = f"{raw_vendor.url}/v1/x"
    response = await upstream.request("POST", url, {}, b"", "", 5.0)
    response.release()  # 99,900 bytes still to come on that connection: it cannot carry another request
    raw_vendor.answer = lambda _: OK
    assert (await fetch(upstream, url))[0] == 200
    assert len(set(raw_vendor.peers)) == 2


async def test_a_large_body_arrives_whole(raw_vendor, upstream):
    body = bytes(range(256)) * 1024  # 256 KiB: written apart from the head
    await fetch(upstream, f"{raw_vendor.url}/v1/x", body)
    assert raw_vendor.requests[0].endswith(b"\r\nContent-Length: 262144\r\n\r\n" + body)


async def test_interim_answers_are_skipped(raw_vendor, upstream):
    raw_vendor.answer = lambda _: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    assert await fetch(upstream, f"{raw_vendor.url}/v1/x") == (200, b"{}")


async def test_an_answer_that_is_not_http_raises(raw_vendor, upstream):
    raw_vendor.answer = lambda _: b"SSH-2.0-OpenSSH_9.6\r\n\r\n"
    with pytest.raises(HttpProcessingError):
        await fetch(upstream, f"{raw_vendor.url}/v1/x")


async def test_a_header_with_a_line_break_is_never_sent(raw_vendor, upstream):
    with pytest.raises(ValueError, match="line break"):
        await fetch(upstream, f"{raw_vendor.url}/v1/x", **{"X-Evil": "a\r\nX-Injected: 1"})
    assert raw_vendor.requests == []


async def test_connect_failures_raise_aiohttps_connector_error(upstream):
    with socket_closed() as port, pytest.raises(aiohttp.ClientConnectorError):
        await fetch(upstream, f"http://127.0.0.1:{port}/v1/x")


@pytest.mark.parametrize(("raw", "sent"), [
    ("", ""),
    ("api-version=2024-10&x=%20y", "api-version=2024-10&x=%20y"),  # percent-encoding kept as the client sent it
    ("key=sk-client&api-version=1", "api-version=1"),
    ("api-version=1&k%65y=sk-client&keys=2", "api-version=1&keys=2"),
    ("key", ""),
])
def test_the_clients_query_goes_upstream_without_its_key(raw, sent):
    assert upstream_query(raw) == sent


async def test_the_query_joins_one_already_in_the_channel_url(raw_vendor, upstream):
    await fetch(upstream, f"{raw_vendor.url}/v1/x?api-version=1", query="a=b")
    assert raw_vendor.requests[0].startswith(b"POST /v1/x?api-version=1&a=b HTTP/1.1\r\n")


async def test_tls_is_verified(tls_vendor, upstream):
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # self-signed: not trusted by default
        await fetch(upstream, f"https://127.0.0.1:{tls_vendor.port}/v1/x")
    assert tls_vendor.requests == []


async def test_requests_over_tls_to_a_trusted_vendor(monkeypatch, certificate, tls_vendor, upstream):
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", trusted)  # what aiohttp verifies against
    url = f"https://127.0.0.1:{tls_vendor.port}/v1/x"
    assert await fetch(upstream, url) == (200, b"{}")
    assert await fetch(upstream, url) == (200, b"{}")
    assert tls_vendor.requests[0].startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % tls_vendor.port)
    assert len(set(tls_vendor.peers)) == 1  # one TLS connection, reused


async def test_a_vendor_answering_garbage_is_failed_over(raw_vendor, vendor, gateway_factory):
    raw_vendor.answer = lambda _: b"garbage\r\n\r\n"
    gw = await gateway_factory({"keys": KEYS, "channels": [
        {**channel("bad", vendor, priority=10), "base_url": f"{raw_vendor.url}/v1"},
        channel("good", vendor),
    ]})
    answer = await gw.client().chat.completions.create(model="gpt-4o", messages=[])
    assert answer.choices
    rows = await gw.rows()
    assert rows[-1]["channel"] == "good" and rows[-1]["attempts"] == 2


async def test_a_client_without_a_user_agent_is_named_upstream(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor)]})
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}, skip_auto_headers=["User-Agent"]) as s:
        async with s.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []}) as r:
            assert r.status == 200
    assert vendor.requests[-1].headers["User-Agent"] == "llm-gateway"
    await gw.client().chat.completions.create(model="gpt-4o", messages=[])
    assert vendor.requests[-1].headers["User-Agent"].startswith("AsyncOpenAI/Python")


# An answer with neither Content-Length nor chunked framing ends when the vendor closes the connection
# (HTTP/1.0 servers and some vendor front ends answer so). Its body is everything up to the close.
CLOSE_DELIMITED = {
    "json": (b"application/json", b'{"id":"x","object":"chat.completion","choices":[],'
             b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'),
    "sse": (b"text/event-stream", b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
            b'"delta":{"content":"hi"}}]}\n\ndata: {"id":"x","object":"chat.completion.chunk","choices":[],'
            b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\ndata: [DONE]\n\n'),
    "binary": (b"audio/mpeg", bytes(range(256)) * 64),
}


def close_delimited(kind: str) -> Callable[[bytes], bytes]:
    content_type, body = CLOSE_DELIMITED[kind]
    return lambda _: b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n\r\n" + body


async def test_a_close_delimited_body_is_read_to_the_close(raw_vendor, upstream):
    raw_vendor.answer, raw_vendor.close_after = close_delimited("json"), True
    assert await fetch(upstream, f"{raw_vendor.url}/v1/x") == (200, CLOSE_DELIMITED["json"][1])


@pytest.mark.parametrize("failover", [False, True], ids=["direct", "after-failover"])
@pytest.mark.parametrize("kind", ["json", "sse", "binary"])
async def test_a_close_delimited_answer_reaches_the_client_whole(kind, failover, raw_vendor, vendor, gateway_factory):
    raw_vendor.answer, raw_vendor.close_after = close_delimited(kind), True
    channels = [{**channel("close", vendor), "base_url": f"{raw_vendor.url}/v1"}]
    if failover:
        vendor.faults.append(Fault("status", status=503))
        channels.insert(0, channel("down", vendor, priority=10))
    gw = await gateway_factory({"keys": KEYS, "channels": channels})
    path, body = "/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES, "stream": kind == "sse"}
    if kind == "binary":
        path, body = "/v1/audio/speech", {"model": "gpt-4o", "input": "hello", "voice": "alloy"}
    status, answer, headers = await post(gw, body, path=path)
    content_type, sent = CLOSE_DELIMITED[kind]
    assert status == 200 and headers["Content-Type"].startswith(content_type.decode())
    if kind == "sse":  # the usage chunk the gateway asked for is held back; the rest is as sent
        assert answer.startswith(sent.split(b"\n\n")[0]) and answer.endswith(b"data: [DONE]\n\n")
    else:
        assert answer == sent
    row = (await gw.rows())[-1]
    assert (row["status"], row["channel"], row["attempts"]) == (200, "close", 2 if failover else 1)
    if kind != "binary":
        assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (3, 4, 0)
