"""AI逢源's answer envelope, for the routes that speak its dialect (`/api/user/info`, `/api/service/...`).

As its API documentation publishes it (aivip.link, "错误处理"): an answer is `{"success": true, "data": ...}`;
an error `{"success": false, "message": ..., "code": "ERROR_CODE"}`, an upper-case code, with the HTTP
status saying the kind (400, 401, 403, 404, 429, 500).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.errors import SERVICE, GatewayError


def ok(data: Any, *, headers: dict[str, str] | None = None) -> web.Response:
    return _json(200, {"success": True, "data": data}, headers)


def from_error(err: GatewayError) -> web.Response:
    """A GatewayError in the envelope, its headers (Retry-After, ...) kept (gateway.errors renders it)."""
    return err.response(SERVICE)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)
