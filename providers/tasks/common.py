"""Small readers and writers every task vendor's adaptor shares: JSON answers, numbers that may come as
strings, result URL expiry, extra fields without callbacks, and error texts without secrets."""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from providers.tasks.base import VendorError

DAY = 86400.0  # the usual life of a vendor's result URL, where it says nothing more precise

# Extra fields that would make a vendor call someone back: the gateway delivers callbacks itself, so a
# client's callback address must never reach a vendor (tasks.md, "known failures").
_CALLBACK_WORDS = ("callback", "webhook", "notify")
_SECRET = re.compile(r"\b(sk|ak|key|token)-[A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)


def load_object(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or VendorError naming what was expected."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise VendorError(f"{what}: not JSON") from exc
    if not isinstance(data, dict):
        raise VendorError(f"{what}: not a JSON object")
    return data


def obj(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: vendors send null for absent objects."""
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float | None:
    """A finite number from an int, a float or a numeric string ("5", " 5.0 "); None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def integer(value: Any) -> int | None:
    out = number(value)
    return int(out) if out is not None else None


def first_number(data: Mapping[str, Any], *names: str) -> float | None:
    """The first of `names` in `data` that holds a number: vendors name one count differently by model."""
    for name in names:
        if (out := number(data.get(name))) is not None:
            return out
    return None


def whole_seconds(seconds: float | None) -> int | None:
    """Video length as the whole seconds every vendor here wants; a fraction is the client's mistake."""
    if seconds is None:
        return None
    if not float(seconds).is_integer() or seconds <= 0:
        raise VendorError(f"seconds must be a whole positive number, got {seconds}")
    return int(seconds)


def size_wh(size: str | None) -> tuple[int, int] | None:
    """(width, height) from "1280x720" or "1280*720"."""
    if not size:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX*\u00d7]\s*(\d+)\s*", size)
    if match is None:
        raise VendorError(f"size must be WIDTHxHEIGHT, got {size!r}")
    return int(match.group(1)), int(match.group(2))


def resolution_label(value: Any) -> str | None:
    """A resolution as prices name it ("720P") from 720, "720", "720p" or a size ("1280*720")."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if (match := re.fullmatch(r"(\d+)\s*[xX*\u00d7]\s*(\d+)", text)) is not None:
        return f"{min(int(match.group(1)), int(match.group(2)))}P"
    if re.fullmatch(r"\d+(\.0+)?", text):
        return f"{int(float(text))}P"
    if re.fullmatch(r"\d+[pP]|\d+[kK]", text):
        return text.upper()
    return None


def clean_extra(extra: Mapping[str, Any], reserved: Iterable[str] = ()) -> dict[str, Any]:
    """A client's extra fields fit for a vendor body: no callback or webhook keys at any depth, and none
    of the `reserved` names the adaptor sets itself."""
    taken = set(reserved)
    return {k: _no_callbacks(v) for k, v in extra.items() if k not in taken and not _is_callback(k)}


def _is_callback(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _CALLBACK_WORDS)


def _no_callbacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_callbacks(v) for k, v in value.items() if not _is_callback(str(k))}
    if isinstance(value, list):
        return [_no_callbacks(v) for v in value]
    return value


def url_expiry(url: str | None) -> float | None:
    """When a signed result URL stops working, from its own query string: OSS `Expires` (unix seconds),
    or S3 / TOS `X-Amz-Date` + `X-Amz-Expires` / `X-Tos-Date` + `X-Tos-Expires`. None when unsigned."""
    if not url:
        return None
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    if (expires := number(query.get("expires"))) is not None and expires > 1e9:
        return expires
    for vendor in ("x-amz", "x-tos"):
        start, life = query.get(f"{vendor}-date"), number(query.get(f"{vendor}-expires"))
        if start and life is not None:
            try:
                return calendar.timegm(time.strptime(start, "%Y%m%dT%H%M%SZ")) + life
            except ValueError:
                return None
    return None


def masked(text: str) -> str:
    """Vendor error texts sometimes echo the key they refused: never pass one on."""
    return _SECRET.sub(lambda m: f"{m.group(1)}-***", text)


def error_text(status: int, body: bytes, message: str | None, code: Any = None) -> str:
    """`code: message` from a vendor's error shape, else the start of the body, else the status."""
    if message:
        text = f"{code}: {message}" if code not in (None, "") else message
    else:
        raw = body.decode("utf-8", "replace").strip()
        text = raw[:300] if raw else f"HTTP {status}"
    return masked(text)
