"""Task callbacks: POST a finished task to the client's `callback_url`, signed, to public addresses only.

    CallbackRefused      the URL may not be called (bad syntax, or the host is or resolves to a private
                         address): permanent, never retried
    Delivery             what one attempt came to: delivered | retry | refused

Where a callback may go. `validate_callback_url` checks the syntax when the task is submitted, so the
client gets a 400 at once. `check_destination` (and `deliver`, before every attempt) resolves the host
and refuses loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud metadata
address, fe80::/10), multicast, unspecified, reserved, shared (CGNAT 100.64/10) and every other
non-global address, also inside IPv4-mapped, 6to4 and NAT64 IPv6 addresses, unless the operator set
`tasks.allow_private_callbacks`. A host with any such address is refused as a whole.

DNS rebinding. A check made apart from the connection can be fooled by a host that resolves to a public
address for the check and to 127.0.0.1 a moment later. So `deliver` connects to the very address it
checked: the request goes to `scheme://<checked IP>:<port>/path` (an IP literal never reaches the
connector's resolver), with `Host:` set to the URL's host and, for https, `server_hostname=<host>` so
TLS sends the host's name as SNI and verifies the certificate against that name, not the address. Both
are arguments of aiohttp's public `ClientSession.request`. Redirects are never followed: one to a
private address would bypass the check. Use `new_session()`, whose connector does not pool connections:
aiohttp before 3.14.x pooled TLS connections by address alone, so one made for host A could have
carried a request for host B at the same address.

Signatures. With a `webhook_secret` for the key, each attempt carries

    X-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, b"<t>." + raw body)>

A receiver recomputes the HMAC over the raw body bytes as received, compares it in constant time with
each `v1=` value, and rejects a `t` more than a few minutes from its clock (replays); `verify` does all
of it. `X-Gateway-Delivery` is the same on every retry of one callback, so a receiver can drop
duplicates; `X-Gateway-Event` is `task.completed` or `task.failed`. Without a secret the callback is
sent unsigned (no signature header): the receiver can only trust it as far as its URL is secret.
No gateway, client or vendor key is ever sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import re
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from gateway import __version__
from gateway.tasks.model import CALLBACK_DELIVERED, CALLBACK_REFUSED

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

EVENTS: Final = ("task.completed", "task.failed")
MAX_URL_LENGTH: Final = 2048
# Seconds to wait after the n-th failed attempt (n = 1, 2, ...); after the last one, give up.
SCHEDULE_S: Final = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3600.0)
MAX_ATTEMPTS: Final = len(SCHEDULE_S) + 1  # 8 attempts over about 2.5 hours
# A receiver's Retry-After is honoured up to this; a longer one is taken as this.
MAX_RETRY_AFTER_S: Final = 3600.0
DEFAULT_TOLERANCE_S: Final = 300.0
# Addresses of one host tried in turn when the connection itself fails.
MAX_ADDRESSES: Final = 3

RETRY: Final = "retry"
DELIVERED: Final = CALLBACK_DELIVERED
REFUSED: Final = CALLBACK_REFUSED

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_USER_AGENT = f"llm-gateway/{__version__} (task callbacks)"


class CallbackRefused(Exception):
    """The callback URL may not be called; `message` says why and is safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt's outcome. `error` (no secrets, no URL) says why it was not delivered."""

    outcome: str  # DELIVERED | RETRY | REFUSED
    status: int | None = None  # the receiver's HTTP status, when it answered
    error: str | None = None
    retry_after: float | None = None  # the receiver's Retry-After in seconds, when it sent a usable one

    @property
    def delivered(self) -> bool:
        return self.outcome == DELIVERED

    @property
    def permanent(self) -> bool:
        """Retrying cannot help: the destination is refused."""
        return self.outcome == REFUSED


def validate_callback_url(url: str) -> None:
    """Submit-time check of the syntax alone (http/https, a host, no credentials, length); raises
    CallbackRefused. Addresses are checked when the callback is sent (`check_destination`)."""
    _parse(url)


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Raise CallbackRefused unless `url` is well formed and every address its host resolves to is
    public (or `allow_private`). A host that does not resolve raises OSError: that may pass, retry."""
    await _destination(url, allow_private=allow_private)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `b"<timestamp>." + body` under `secret`: the `v1` of X-Gateway-Signature."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={sign(secret, body, timestamp)}"


def verify(
    secret: str, body: bytes, header: str, tolerance_s: float = DEFAULT_TOLERANCE_S, *, now: float | None = None
) -> bool:
    """For receivers (and tests): does X-Gateway-Signature `header` sign `body` (the raw bytes received)
    under `secret`, with a timestamp within `tolerance_s` of `now`? Several `v1=` values (a secret being
    rotated) pass when any one matches."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def next_attempt_delay(attempt: int, *, retry_after: float | None = None) -> float | None:
    """Seconds to wait after `attempt` attempts have failed (1 after the first), or None: give up.

    5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 1 h, then no 9th attempt. A receiver's Retry-After (seconds,
    from `Delivery.retry_after`) lengthens the wait, up to an hour; it never shortens it.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, not {attempt}")
    if attempt >= MAX_ATTEMPTS:
        return None
    delay = SCHEDULE_S[attempt - 1]
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date); None when absent or unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is read as such
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def new_session(*, ssl_context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """The session to deliver with: no pooled connections (see the module docstring), no cookies (a
    receiver cannot plant one for the next), no proxy from the environment, no default headers.
    `ssl_context`: the certificates to trust, when not the system's (tests)."""
    connector = aiohttp.TCPConnector(force_close=True, ssl=ssl_context if ssl_context is not None else True)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    secret: str | None,
    event: str,
    delivery_id: str,
    allow_private: bool,
    timeout_s: float = 10,
) -> Delivery:
    """One attempt to POST `body` (the task's JSON) to `url`; never raises for the receiver's failings.

    2xx: DELIVERED. Any other status (redirects included: not followed), a connection error or no
    answer within `timeout_s` (resolving included): RETRY, with the receiver's Retry-After if any. A
    refused destination: REFUSED. `delivery_id` stays the same across the retries of one callback.
    """
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, not {event!r}")
    if session.headers or session.auth is not None:
        raise ValueError("the webhook session must carry no default headers or auth: every receiver would get them")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            target, addresses = await _destination(url, allow_private=allow_private)
    except CallbackRefused as exc:
        return Delivery(REFUSED, error=exc.message)
    except TimeoutError:
        return Delivery(RETRY, error=f"resolving the callback host took over {timeout_s:g}s")
    except OSError as exc:
        return Delivery(RETRY, error=f"cannot resolve the callback host: {exc.strerror or type(exc).__name__}")

    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "Host": target.host_port_subcomponent or "",
        "X-Gateway-Event": event,
        "X-Gateway-Delivery": delivery_id,
    }
    if secret:
        headers["X-Gateway-Signature"] = signature_header(secret, body, timestamp)
    server_hostname = None if _ip_literal(target.raw_host or "") else target.raw_host
    error = "no address to connect to"
    for address in addresses[:MAX_ADDRESSES]:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Delivery(RETRY, error=f"no answer within {timeout_s:g}s")
        try:
            async with session.post(
                target.with_host(str(address)),
                data=body,
                headers=headers,
                allow_redirects=False,
                server_hostname=server_hostname if target.scheme == "https" else None,
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:  # nothing was sent: the next address may answer
            # Not exc.os_error: aiohttp < 3.12.x leaves it unset on a certificate error.
            cause = getattr(exc, "_os_error", None) or getattr(exc, "certificate_error", None) or exc
            error = f"cannot connect to {address}: {getattr(cause, 'strerror', None) or type(cause).__name__}"
            continue
        except TimeoutError:
            return Delivery(RETRY, error=f"no answer within {timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return Delivery(RETRY, error=f"the connection failed: {type(exc).__name__}")
        if 200 <= status < 300:
            return Delivery(DELIVERED, status=status)
        what = "a redirect, which is not followed" if 300 <= status < 400 else "not 2xx"
        return Delivery(RETRY, status=status, error=f"the receiver answered {status} ({what})", retry_after=retry_after)
    return Delivery(RETRY, error=error)


def _parse(url: str) -> URL:
    if not isinstance(url, str) or not url:
        raise CallbackRefused("callback_url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise CallbackRefused("callback_url must not contain spaces or control characters")
    try:
        parsed = URL(url)
        port = parsed.port
        # The port as written: some yarl versions read ":0" as no port (the scheme's default).
        written = urlsplit(url).port
    except (ValueError, TypeError):
        raise CallbackRefused("callback_url is not a valid URL") from None
    if written == 0:
        port = 0
    if parsed.scheme not in ("http", "https"):
        raise CallbackRefused("callback_url must be an http or https URL")
    host = parsed.raw_host
    if not host:
        raise CallbackRefused("callback_url has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise CallbackRefused("callback_url must not carry a user name or password")
    if port is None or not 0 < port < 65536:
        raise CallbackRefused("callback_url has an invalid port")
    if _ip_literal(host) is None and not _hostname(host):
        raise CallbackRefused("callback_url has an invalid host name")
    return parsed


def _hostname(host: str) -> bool:
    name = host.removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _destination(url: str, *, allow_private: bool) -> tuple[URL, list[IPAddress]]:
    """The parsed URL and the addresses to connect to, every one of them checked."""
    target = _parse(url)
    host = target.raw_host or ""
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, target.port, type=socket.SOCK_STREAM)
        addresses = []
        for _family, _type, _proto, _canonname, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OSError(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                where = "is" if literal is not None else f"resolves to {address}, which is"
                raise CallbackRefused(f"callback_url's host {where} {why}; callbacks go to public addresses only")
    return target, addresses


def refusal(address: IPAddress) -> str | None:
    """Why a callback may not go to `address` (e.g. "a loopback address"), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            why = refusal(inner)
            return None if why is None else f"{why} (inside an IPv6 address)"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (CGNAT) address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None
