"""Who is calling: the client key from the request headers, matched by its sha256."""

from __future__ import annotations

from aiohttp import web

from config import ClientKey, Config, sha256_hex
from gateway.errors import GatewayError
from providers import ANTHROPIC, GEMINI

# Browsers cannot set headers on a WebSocket; OpenAI's realtime API takes the key as a subprotocol instead.
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."


def presented_key(request: web.Request, protocol: str) -> str | None:
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("X-API-Key")  # case-insensitive: also Anthropic's x-api-key
    if key:
        return key.strip()
    # Only a WebSocket upgrade may carry the key as a subprotocol; elsewhere the header means nothing.
    offers = request.headers.get("Sec-WebSocket-Protocol", "") if request.headers.get("Upgrade", "").lower() == "websocket" else ""
    for offered in offers.split(","):
        offered = offered.strip()
        if offered.startswith(INSECURE_KEY_PROTOCOL) and len(offered) > len(INSECURE_KEY_PROTOCOL):
            return offered.removeprefix(INSECURE_KEY_PROTOCOL)
    if protocol in (ANTHROPIC, GEMINI):
        key = request.headers.get("X-Goog-Api-Key") or request.query.get("key")
        if key:
            return key.strip()
    return None


def authenticate(request: web.Request, config: Config, protocol: str, known: dict[str, ClientKey]) -> ClientKey | None:
    """The caller's key, or None when the config defines no keys (loopback only: see config).
    `known` maps secrets already seen to their key (`Lookups.secrets`), so they are not hashed again."""
    if not config.keys:
        return None
    secret = presented_key(request, protocol)
    if secret is None:
        raise GatewayError(
            401,
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
            code="missing_api_key",
        )
    key = known.get(secret)
    if key is None:
        key = config.keys_by_hash.get(sha256_hex(secret))
        if key is not None:
            known[secret] = key
    if key is None:
        raise GatewayError(401, "Invalid API key: check the key you were given for this gateway.", code="invalid_api_key")
    return key
