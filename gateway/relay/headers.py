"""Which headers cross the gateway: client to vendor, and vendor to client."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from urllib.parse import unquote_plus

from multidict import CIMultiDict, CIMultiDictProxy

from config import BILLING_HEADERS, Channel
from gateway.errors import mask

USER_AGENT = "llm-gateway"  # sent upstream for clients that send none

# Never copied from the client to the vendor: credentials, hop-by-hop, and what the gateway sets itself.
_DROP_REQUEST = frozenset(
    h.lower()
    for h in (
        "Host", "Authorization", "X-API-Key", "X-Goog-Api-Key", "Api-Key", "Cookie", "Content-Length",
        "Content-Type", "Accept-Encoding", "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Upgrade",
        "Proxy-Authorization", "Proxy-Connection", "X-Gateway-Tag", "Expect", "Content-Encoding",
        "Sec-WebSocket-Protocol",  # may carry the client's key (see gateway.api.auth)
    )
)
# Never copied from the vendor to the client.
_DROP_RESPONSE = frozenset(
    h.lower()
    for h in (
        "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Date", "Server", "Set-Cookie",
        "Alt-Svc", "Strict-Transport-Security",
    )
)

_NONE_EACH = (None,) * len(_DROP_RESPONSE)  # popall's default, for each name

_DROP_FROM_CLIENTS = _DROP_REQUEST | BILLING_HEADERS


def request_headers(incoming: Mapping[str, str], request_id: str) -> dict[str, str]:
    """The client's headers that may go to any vendor, made once per request (see `attempt_headers`)."""
    out = {k: v for k, v in incoming.items() if k.lower() not in _DROP_FROM_CLIENTS and (v.isascii() or _sendable(v))}
    out["X-Request-Id"] = request_id
    out["Accept-Encoding"] = "identity"  # the gateway reads usage from the body: no compression upstream
    if "User-Agent" not in incoming:  # some vendor front ends refuse requests without one
        out["User-Agent"] = USER_AGENT
    return out


def attempt_headers(
    base: dict[str, str], own: dict[str, str], channel: Channel, incoming: Mapping[str, str]
) -> dict[str, str]:
    """One attempt's headers: the client's (`base`) and the channel's and provider's (`own`), which
    replace a client header of the same name whatever its case, plus the billing headers the channel
    lets its clients set (taken from `incoming`, the client's request)."""
    if not channel.headers and not channel.client_headers:
        # The usual channel: `own` is the provider's auth header, which never comes from a client.
        return {**base, **own}
    replaced = {k.lower() for k in own}
    out = {k: v for k, v in base.items() if k.lower() not in replaced}
    out.update((k, v) for k, v in incoming.items() if (n := k.lower()) in channel.client_headers and n not in replaced)
    out.update(own)
    return out


def _sendable(value: str) -> bool:
    """Header values the client library can write: the server decodes odd bytes as surrogates."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def response_headers(upstream: CIMultiDictProxy[str], request_id: str, secrets: tuple[str, ...] = (), *, limited: bool = False) -> CIMultiDict[str]:
    """The vendor's headers as the client gets them; a channel secret a vendor echoes in one is masked.
    A limited key's answer carries its own x-ratelimit-* headers (the pipeline adds them, or the relay
    to a stream), never the vendor account's: `limited` drops those."""
    out = CIMultiDict(upstream)  # copied whole and pruned: cheaper than filtering item by item
    collections.deque(map(out.popall, _DROP_RESPONSE, _NONE_EACH), maxlen=0)  # a C loop, not a Python one
    if limited and ("x-ratelimit-limit-requests" in out or "x-ratelimit-limit-tokens" in out):
        collections.deque(map(out.popall, _RATE_HEADERS, _NONE_EACH), maxlen=0)
    if secrets:
        values = "\n".join(out.values())  # one search per secret, not one per header
        if any(s in values for s in secrets):
            out = CIMultiDict((k, mask(v, secrets)) for k, v in out.items())
    out["X-Request-Id"] = request_id
    return out


_RATE_HEADERS = tuple(
    f"x-ratelimit-{what}-{unit}" for what in ("limit", "remaining", "reset") for unit in ("requests", "tokens")
)


# Never passed on in the query: `key` carries the client's own key on the Gemini routes, and `alt`
# (Gemini's stream framing) the gateway sets itself.
_DROP_QUERY = frozenset({"key", "alt"})


def upstream_query(raw: str) -> str:
    """A client's raw query string minus `key=` and `alt=` (see _DROP_QUERY)."""
    if "key" not in raw and "alt" not in raw and "%" not in raw:
        return raw
    return "&".join(p for p in raw.split("&") if unquote_plus(p.partition("=")[0]) not in _DROP_QUERY)
