"""Task callbacks against a real receiver on 127.0.0.1: retries, signatures, refused private addresses,
no redirects, timeouts, and the connection pinned to the checked address (plain and TLS)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from gateway.tasks import webhooks
from gateway.tasks.webhooks import (
    DELIVERED,
    MAX_ATTEMPTS,
    REFUSED,
    RETRY,
    CallbackRefused,
    check_destination,
    deliver,
    next_attempt_delay,
    parse_retry_after,
    sign,
    validate_callback_url,
    verify,
)

SECRET = "whsec-test-secret"
BODY = b'{"id":"task_abc","status":"SUCCEEDED"}'


@dataclass
class Receiver:
    """A client's callback endpoint: answers each POST /hook with the next of `statuses` (then 200)."""

    statuses: list[int] = field(default_factory=list)
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    redirect_target_hits: int = 0
    port: int = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": "120"} if status == 503 else {}
        return web.Response(status=status, text="ok" if status < 300 else "nope", headers=headers)

    async def redirect(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        raise web.HTTPFound("/target")

    async def target(self, request: web.Request) -> web.Response:
        self.redirect_target_hits += 1
        return web.Response(text="followed")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_post("/redirect", self.redirect)
        app.router.add_route("*", "/target", self.target)
        app.router.add_post("/slow", self.slow)
        return app

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    server = TestServer(rx.app(), host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    rx.port = server.port
    yield rx
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with webhooks.new_session() as s:
        yield s


async def send(session: aiohttp.ClientSession, url: str, **kw: Any) -> webhooks.Delivery:
    args: dict[str, Any] = {"secret": SECRET, "event": "task.completed", "delivery_id": "dlv_1", "allow_private": True}
    return await deliver(session, url, BODY, **{**args, **kw})


# --- delivery and retries -------------------------------------------------------------------------------


async def test_fails_twice_then_delivered_with_backoff(receiver, session):
    receiver.statuses = [500, 503]
    waits = []
    attempt = 0
    while True:
        attempt += 1
        result = await send(session, receiver.url())
        if result.delivered:
            break
        assert result.outcome == RETRY and not result.permanent
        waits.append(next_attempt_delay(attempt, retry_after=result.retry_after))
    assert attempt == 3
    assert result.status == 200 and result.error is None
    assert waits == [5.0, 120.0]  # the 503's Retry-After: 120 lengthens the second wait
    assert [h["X-Gateway-Delivery"] for h, _ in receiver.seen] == ["dlv_1"] * 3


async def test_failure_outcomes_carry_the_status_and_retry_after(receiver, session):
    receiver.statuses = [500, 503]
    first, second = await send(session, receiver.url()), await send(session, receiver.url())
    assert (first.outcome, first.status, first.retry_after) == (RETRY, 500, None)
    assert first.error == "the receiver answered 500 (not 2xx)"
    assert (second.status, second.retry_after) == (503, 120.0)


async def test_signature_verifies_and_headers_carry_no_keys(receiver, session):
    await send(session, receiver.url(), event="task.failed", delivery_id="dlv_9")
    [(headers, body)] = receiver.seen
    assert body == BODY
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Gateway-Event"] == "task.failed"
    assert headers["X-Gateway-Delivery"] == "dlv_9"
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    header = headers["X-Gateway-Signature"]
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify("another-secret", body, header)
    assert not verify(SECRET, body, header, now=time.time() + 3600)  # a replay an hour later
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert header == f"t={timestamp},v1={sign(SECRET, body, timestamp)}"
    allowed = {"Host", "Content-Type", "Content-Length", "User-Agent", "Accept", "Accept-Encoding", "Connection"}
    assert set(headers) - allowed == {"X-Gateway-Event", "X-Gateway-Delivery", "X-Gateway-Signature"}


async def test_unsigned_without_a_secret(receiver, session):
    result = await send(session, receiver.url(), secret=None)
    assert result.delivered
    [(headers, _)] = receiver.seen
    assert "X-Gateway-Signature" not in headers


def test_verify_accepts_any_of_several_signatures():
    t = int(time.time())
    header = f"t={t},v1={'0' * 64},v1={sign(SECRET, BODY, t)}"
    assert verify(SECRET, BODY, header)
    assert not verify(SECRET, BODY, f"v1={sign(SECRET, BODY, t)}")  # no timestamp
    assert not verify(SECRET, BODY, "garbage")


async def test_redirect_is_not_followed(receiver, session):
    result = await send(session, receiver.url("/redirect"))
    assert (result.outcome, result.status) == (RETRY, 302)
    assert "redirect" in (result.error or "")
    assert len(receiver.seen) == 1
    assert receiver.redirect_target_hits == 0


async def test_timeout_is_a_retry(receiver, session):
    started = time.monotonic()
    result = await send(session, receiver.url("/slow"), timeout_s=0.3)
    assert result.outcome == RETRY and result.status is None
    assert "no answer within 0.3s" in (result.error or "")
    assert time.monotonic() - started < 2


async def test_connection_refused_is_a_retry(session):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await send(session, f"http://127.0.0.1:{port}/hook")
    assert result.outcome == RETRY and result.error and result.error.startswith("cannot connect to 127.0.0.1")


async def test_unresolvable_host_is_a_retry(session):
    result = await send(session, "http://no-such-host.invalid/hook", timeout_s=3)
    assert result.outcome == RETRY


async def test_session_with_default_headers_is_rejected(receiver):
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-vendor"}) as leaky:
        with pytest.raises(ValueError, match="no default headers"):
            await send(leaky, receiver.url())
    assert receiver.seen == []


# --- where callbacks may go -----------------------------------------------------------------------------


REFUSED_URLS = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[ff02::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "http://localhost/hook",
    "http://LocalHost/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number, which getaddrinfo accepts
    "http://0x7f.1/hook",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_private_destinations_are_refused(url):
    with pytest.raises(CallbackRefused, match="public addresses only"):
        await check_destination(url, allow_private=False)


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_private_destinations_pass_when_allowed(url):
    await check_destination(url, allow_private=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_refused_delivery_is_permanent_and_sends_nothing(receiver, session, host):
    result = await send(session, receiver.url(host=host), allow_private=False)
    assert result.outcome == REFUSED and result.permanent
    assert result.error and "public addresses only" in result.error
    assert receiver.seen == []


async def test_refusal_names_the_resolved_address():
    with pytest.raises(CallbackRefused) as caught:
        await check_destination("http://localhost:8080/x", allow_private=False)
    assert "resolves to 127.0.0.1, which is a loopback address" in caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8/hook",
        "http://1.1.1.1:8443/x?y=1",
        "https://[2606:4700:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
    ],
)
async def test_public_addresses_pass(url):
    await check_destination(url, allow_private=False)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::"])
def test_refusal_of_public_addresses_is_none(address):
    assert webhooks.refusal(ipaddress.ip_address(address)) is None


async def test_delivered_to_loopback_when_allowed(receiver, session):
    result = await send(session, receiver.url(host="localhost"))
    assert result.outcome == DELIVERED
    [(headers, _)] = receiver.seen
    assert headers["Host"] == f"localhost:{receiver.port}"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("http:///hook", "no host"),
        ("http://user:pw@example.com/hook", "user name or password"),
        ("http://example.com:0/hook", "port"),
        ("http://exa mple.com/hook", "spaces"),
        ("http://example.com/\nX-Injected: 1", "control"),
        ("http://-bad-.example.com/", "host name"),
        ("http://example.com/" + "a" * 2048, "longer than 2048"),
        ("", "non-empty"),
    ],
)
def test_submit_time_syntax_check(url, why):
    with pytest.raises(CallbackRefused, match=why):
        validate_callback_url(url)


@pytest.mark.parametrize(
    "url", ["https://example.com/hook", "http://exämple.com:8080/a?b=c", "http://127.0.0.1/", "https://[::1]:9/"]
)
def test_submit_time_syntax_check_passes(url):
    validate_callback_url(url)  # addresses are checked at delivery, with the operator's allow_private


# --- the connection goes to the checked address ----------------------------------------------------------


class NoResolver(AbstractResolver):
    """A connector resolver that refuses every name: a request that reaches it would fail."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        raise OSError(f"resolver must not be asked for {host}")

    async def close(self) -> None:
        pass


async def test_connects_to_the_checked_address_not_a_fresh_lookup(receiver):
    # A rebinding host would answer a second lookup differently; here a second lookup would fail
    # outright, so the delivery succeeding shows there is none.
    resolver = NoResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as pinned:
        result = await send(pinned, receiver.url(host="localhost"))
    assert result.delivered, result.error
    assert resolver.asked == []
    [(headers, _)] = receiver.seen
    assert headers["Host"] == f"localhost:{receiver.port}"


@dataclass
class Pki:
    ca_pem: bytes
    files: dict[str, tuple[str, str]]  # host name on the certificate -> (cert file, key file)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def server_context(self, name: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*self.files[name])
        return ctx


@pytest.fixture
def pki(tmp_path) -> Iterator[Pki]:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name | None, issuer_key: Any, san: str | None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=san is None, path_length=None), critical=True)
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        else:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256()), key

    ca, ca_key = build("test ca", None, None, None)
    files = {}
    for host in ("localhost", "other.test"):
        cert, key = build(host, ca.subject, ca_key, host)
        cert_file, key_file = tmp_path / f"{host}.crt", tmp_path / f"{host}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        files[host] = (str(cert_file), str(key_file))
    yield Pki(ca.public_bytes(serialization.Encoding.PEM), files)


async def tls_receiver(receiver: Receiver, pki: Pki, name: str) -> web.AppRunner:
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(name))
    await site.start()
    receiver.port = runner.addresses[0][1]
    return runner


async def test_tls_verifies_the_host_name_while_connecting_by_address(pki):
    # Connected to 127.0.0.1, the certificate (for "localhost" only) still verifies: SNI and the
    # hostname check use the URL's name.
    rx = Receiver()
    runner = await tls_receiver(rx, pki, "localhost")
    try:
        async with webhooks.new_session(ssl_context=pki.client_context()) as tls:
            result = await send(tls, rx.url(host="localhost", scheme="https"))
    finally:
        await runner.cleanup()
    assert result.delivered, result.error
    [(headers, body)] = rx.seen
    assert verify(SECRET, body, headers["X-Gateway-Signature"])


async def test_tls_certificate_for_another_name_is_not_accepted(pki):
    rx = Receiver()
    runner = await tls_receiver(rx, pki, "other.test")
    try:
        async with webhooks.new_session(ssl_context=pki.client_context()) as tls:
            result = await send(tls, rx.url(host="localhost", scheme="https"))
    finally:
        await runner.cleanup()
    assert result.outcome == RETRY
    assert rx.seen == []


# --- schedule ---------------------------------------------------------------------------------------------


def test_backoff_schedule_then_give_up():
    delays = [next_attempt_delay(n) for n in range(1, MAX_ATTEMPTS + 2)]
    assert delays == [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3600.0, None, None]
    with pytest.raises(ValueError):
        next_attempt_delay(0)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 30.0), (10.0, 30.0), (300.0, 300.0), (86400.0, 3600.0), (-5.0, 30.0), (float("nan"), 30.0)],
)
def test_retry_after_lengthens_within_reason(retry_after, expected):
    assert next_attempt_delay(2, retry_after=retry_after) == expected


def test_parse_retry_after():
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:20 GMT", now=now) == 120.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0  # in the past
    for junk in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(junk) is None
