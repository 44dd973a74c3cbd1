"""Errors the gateway answers with, and how each renders in the protocol the client spoke.

    GatewayError                 status, message, type, code; rendered as OpenAI, Anthropic or Gemini JSON
     ├── the client's fault      400 / 401 / 403 / 404 / 405 / 413 / 429: returned as is
     ├── NoChannel               503: nothing enabled serves the model right now
     ├── ShuttingDown            503: the shutdown deadline came before the answer was done
     └── UpstreamFailure         502 / 504 after every attempt failed; names the last upstream error

`upstream_errors()` maps aiohttp's exceptions during one upstream attempt to `AttemptError`, which
carries whether the failure is the channel's (retry elsewhere, count against the key).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from providers import ANTHROPIC, GEMINI
from providers.translate.common import ANTHROPIC_ERROR_TYPES, GEMINI_STATUS

_http_log = structlog.get_logger("gateway.http")

# AI逢源's dialect (/api/...): errors as {"success": false, "message", "code": "UPPER_CASE"}, and a spent
# budget is its 403, not OpenAI's 429.
SERVICE = "service"
SERVICE_CODES = {
    400: "INVALID_PARAMS", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT", 413: "PAYLOAD_TOO_LARGE", 429: "RATE_LIMITED", 502: "UPSTREAM_ERROR",
    503: "SERVICE_UNAVAILABLE", 504: "UPSTREAM_TIMEOUT",
}

_OPENAI_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
}
# Things that look like credentials, masked wherever upstream text is echoed back.
_SECRET_RE = re.compile(r"(sk-|sk_|AIza|Bearer\s+)[A-Za-z0-9_\-\.]{6,}")
# Where a client's key sits in text an HTTP library may log: the value of a credential header (to the
# end of its line or quote), the WebSocket subprotocol that carries it, and a `key=` query parameter.
_CREDENTIAL_RE = re.compile(
    r"(?i)((?:authorization|proxy-authorization|x-api-key|x-goog-api-key|api-key)\s*[:=]\s*)[^\r\n'\"]+"
    r"|(openai-insecure-api-key\.)[^\s,'\"\]\)]+"
    r"|([?&]key=)[^&\s'\"]+"
)


def mask_credentials(text: str) -> str:
    """`text` with every credential-shaped part masked: for log lines whose content the gateway does
    not control (aiohttp's own, a parser's error with the offending header in it)."""
    text = _CREDENTIAL_RE.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)
    return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, protocol: str) -> dict[str, Any]:
        if protocol == SERVICE:
            return {"success": False, "message": self.message, "code": (self.code or SERVICE_CODES.get(self.status, "SERVER_ERROR")).upper()}
        if protocol == ANTHROPIC:
            return {"type": "error", "error": {"type": ANTHROPIC_ERROR_TYPES.get(self.status, "api_error"), "message": self.message}}
        if protocol == GEMINI:
            return {"error": {"code": self.status, "message": self.message, "status": GEMINI_STATUS.get(self.status, "INTERNAL")}}
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, protocol: str) -> web.Response:
        status = self.status
        if protocol == SERVICE and self.code == "insufficient_quota":
            status = 403  # AI逢源 answers 403 once credits run out
        return web.Response(
            status=status,
            body=orjson.dumps(self.body(protocol)),
            content_type="application/json",
            headers=self.headers,
        )

    def sse_event(self, protocol: str) -> bytes:
        """A final stream event telling the client the stream ended in error."""
        payload = orjson.dumps(self.body(protocol))
        if protocol == ANTHROPIC:
            return b"event: error\ndata: " + payload + b"\n\n"
        return b"data: " + payload + b"\n\n"


class NoChannel(GatewayError):
    """`disabled`: (name, reason) of the channels that would serve the model but are off; the reason
    names a setting or a variable ("OPENAI_API_KEY is not set"), never a secret."""

    def __init__(self, model: str, disabled: Iterable[tuple[str, str | None]] = ()) -> None:
        off = [(name, reason or "enabled: false") for name, reason in disabled]
        if len(off) == 1:
            why = f": channel {off[0][0]!r} is disabled ({off[0][1]})."
        elif off:
            why = f": channels {', '.join(f'{name!r} ({reason})' for name, reason in off)} are disabled."
        else:
            why = "; check the channels in gateway.yaml."
        super().__init__(
            503,
            f"No enabled channel serves model {model!r} right now{why}",
            type="service_unavailable",
            code="no_channel",
        )


class ShuttingDown(GatewayError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "The gateway is shutting down and could not finish this request in time; send it again.",
            type="service_unavailable",
            code="shutting_down",
            headers={"Retry-After": "1"},
        )


class UpstreamFailure(GatewayError):
    pass


def sentence(text: str) -> str:
    """End a message with a full stop, unless it already ends as a sentence does."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


class AttemptError(Exception):
    """One upstream attempt failed.

    `retryable`: try the next channel. `channel_fault`: count against the channel key's health.
    `cool_now`: the vendor rejected the key itself (401/403): cool it down at once.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool,
        channel_fault: bool,
        cool_now: bool = False,
        timeout: bool = False,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.channel_fault = channel_fault
        self.cool_now = cool_now
        self.timeout = timeout
        self.body = body


def status_error(status: int, body: bytes, secrets: Iterable[str]) -> AttemptError:
    """Classify an upstream error status (docs/api.md: what fails over)."""
    body = mask_bytes(body, secrets)
    detail = _error_text(body)
    message = f"upstream answered {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return AttemptError(message, status=status, retryable=True, channel_fault=True, cool_now=True, body=body)
    if status in (408, 429) or status >= 500:
        return AttemptError(message, status=status, retryable=True, channel_fault=True, body=body)
    return AttemptError(message, status=status, retryable=False, channel_fault=False, body=body)


class upstream_errors:  # lower case: it reads as a function, `with upstream_errors("phase"):`
    """Map aiohttp's exceptions for one attempt to AttemptError; `phase` names what was under way.

    A class, not a generator-based context manager: it wraps every wait of every request, and
    contextlib's machinery showed in profiles.
    """

    __slots__ = ("phase",)

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            return
        phase = self.phase
        if issubclass(exc_type, TimeoutError):
            raise AttemptError(f"upstream timed out ({phase})", retryable=True, channel_fault=True, timeout=True) from exc
        if issubclass(exc_type, aiohttp.ClientConnectorError):
            assert isinstance(exc, aiohttp.ClientConnectorError)
            raise AttemptError(f"cannot connect to upstream: {exc.os_error.strerror or exc}", retryable=True, channel_fault=True) from exc
        if issubclass(exc_type, HttpProcessingError):  # the answer was not HTTP
            raise AttemptError(f"upstream sent a malformed answer ({phase})", retryable=True, channel_fault=True) from exc
        if issubclass(exc_type, (aiohttp.ClientError, OSError)):
            raise AttemptError(f"upstream connection failed ({phase}): {type(exc).__name__}", retryable=True, channel_fault=True) from exc


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)


def mask_known(data: bytes, secrets: Iterable[bytes]) -> bytes:
    """`data` with each of `secrets` (a channel's keys, encoded) masked; for bytes the gateway passes on,
    where a search for anything credential-shaped would cost too much and catch too much."""
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, b"***")
    return data


def mask_bytes(body: bytes, secrets: Iterable[str]) -> bytes:
    secrets = [s for s in secrets if s]
    if not any(s.encode() in body for s in secrets) and not _SECRET_RE.search(body.decode("utf-8", "replace")):
        return body
    return mask(body.decode("utf-8", "replace"), secrets).encode()


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    return ""


class HTTPLayerLog(logging.Logger):
    """The logger aiohttp's HTTP layer is handed (`handler_args`): a request it cannot even parse
    (over-long header, unknown method, broken chunked framing) is the client's fault and becomes one
    structured warning line, not a traceback. Anything else keeps its traceback, as a structured error."""

    def __init__(self) -> None:
        super().__init__("aiohttp.server")

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, web.RequestPayloadError):
            # A body that cannot be decoded (bad gzip, broken chunks): the route already answered 400
            # and wrote its access line; aiohttp then fails again draining the rest. Nothing more to say.
            return
        if isinstance(exc, HttpProcessingError):
            # The parser's message can quote the offending header line, key and all.
            detail = mask_credentials(f"{type(exc).__name__}: {exc.message}")[:200]
            _http_log.warning("bad_http_request", status=exc.code, error=detail)
        else:
            _http_log.error("http_layer_error", message=mask_credentials(str(msg) % args if args else str(msg)), exc_info=exc)
