"""Bad input gets a clear error in the client's protocol: never a 500, never a traceback, always a row."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import orjson
import pytest
import structlog

from tests.conftest import KEYS, channel
from tests.faultkit import post

CHAT = "/v1/chat/completions"
OK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(vendor, gateway_factory):
    return await gateway_factory({"keys": KEYS, "limits": {"max_body_mb": 0.05}, "channels": [channel("a", vendor)]})


def openai_error(status: int, body: bytes) -> dict:
    assert status < 500
    assert b"Traceback" not in body
    err = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"].endswith(".")
    return err


async def raw_http(gw, data: bytes) -> bytes:
    """Bytes no HTTP client library would send, straight onto a socket."""
    reader, writer = await asyncio.open_connection(gw.server.host, gw.server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("data", [b"[1, 2]", b'"a string"', b"42", b"null", b"true", b'[{"model": "gpt-4o"}]'])
async def test_non_object_json(gw, data):
    status, body, headers = await post(gw, data=data, headers={"Content-Type": "application/json"})
    assert status == 400
    assert openai_error(status, body)["code"] == "invalid_json"
    assert headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": 5, "messages": []}, "invalid_type", "model"),
        ({"model": ["gpt-4o"], "messages": []}, "invalid_type", "model"),
        ({"model": {"name": "gpt-4o"}, "messages": []}, "invalid_type", "model"),
        ({"model": None, "messages": []}, "missing_model", "model"),
        ({"model": "gpt-4o", "messages": "hi"}, "invalid_type", "messages"),
        ({"model": "gpt-4o", "messages": {"role": "user"}}, "invalid_type", "messages"),
        ({"model": "gpt-4o", "messages": [], "stream": "yes"}, "invalid_type", "stream"),
        ({"model": "gpt-4o", "messages": [], "stream": 1}, "invalid_type", "stream"),
        ({"model": "gpt-4o"}, "missing_messages", "messages"),
    ],
)
async def test_wrong_field_types(gw, body, code, param):
    status, payload, _ = await post(gw, body)
    assert status == 400
    err = openai_error(status, payload)
    assert (err["code"], err["param"]) == (code, param)


@pytest.mark.parametrize("data", [b"", b"   \n\t ", b"\x00"])
async def test_empty_body(gw, data):
    status, body, _ = await post(gw, data=data)
    assert status == 400
    assert openai_error(status, body)["code"] == "invalid_json"


async def test_missing_content_type_is_read_as_json(gw):
    """Lenient, as OpenAI-compatible servers are: the body decides, not the header."""
    status, _, _ = await post(gw, data=orjson.dumps(OK), headers={"Content-Type": ""})
    assert status == 200
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\nConnection: close\r\n"
    body = orjson.dumps(OK)
    answer = await raw_http(gw, raw + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 200")
    status, payload, _ = await post(gw, data=b"model=gpt-4o", headers={"Content-Type": ""})
    assert status == 400 and openai_error(status, payload)["code"] == "invalid_json"


async def test_huge_header(gw):
    status, body, headers = await post(gw, OK, headers={"X-Huge": "a" * 100_000})
    assert status == 431
    assert openai_error(status, body)["code"] == "headers_too_large"
    assert headers["X-Request-Id"]
    rows = await gw.rows()
    assert rows[-1]["status"] == 431


async def test_header_past_the_parser_limit_is_a_plain_400_and_one_log_line(gw):
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 300_000 + b"\r\n\r\n"
    with structlog.testing.capture_logs() as logs:
        answer = await raw_http(gw, raw)
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    assert b"Traceback" not in answer
    [line] = [e for e in logs if e["event"] == "bad_http_request"]
    assert line["log_level"] == "warning" and "exc_info" not in line


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_unknown_method_on_a_known_route(gw, method):
    status, body, headers = await post(gw, OK, method=method)
    assert status == 405
    err = openai_error(status, body)
    assert err["code"] == "method_not_allowed" and "POST" in err["message"]
    assert headers["Allow"] == "POST"
    rows = await gw.rows()
    assert rows[-1]["status"] == 405


async def test_unparseable_method_gets_an_answer(gw):
    answer = await raw_http(gw, b"FROB /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    # llhttp refuses unknown methods before routing (400); the pure-Python parser routes them (405).
    assert answer.split(b" ", 2)[1] in (b"400", b"405")


@pytest.mark.parametrize("data", [b'{"model": "gpt-4o\xff", "messages": []}', b"\xff\xfe{}", b'{"model": "\xed\xa0\x80"}'])
async def test_invalid_utf8_body(gw, data):
    status, body, _ = await post(gw, data=data, headers={"Content-Type": "application/json"})
    assert status == 400
    assert openai_error(status, body)["code"] == "invalid_json"


async def test_body_over_the_limit(gw):
    big = {**OK, "pad": "x" * 100_000}
    status, body, _ = await post(gw, big)
    assert status == 413 and openai_error(status, body)["code"] == "request_too_large"

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b"x" * 10_000

    status, body, _ = await post(gw, data=chunks())
    assert status == 413 and openai_error(status, body)["code"] == "request_too_large"
    rows = await gw.rows()
    assert [r["status"] for r in rows] == [413, 413]


async def test_model_name_of_10000_characters(gw):
    status, body, _ = await post(gw, {"model": "m" * 10_000, "messages": []})
    assert status == 400
    err = openai_error(status, body)
    assert err["code"] == "invalid_value" and err["param"] == "model"
    assert len(err["message"]) < 200  # it is not echoed back
    assert len(body) < 1000


async def test_odd_model_names(gw):
    for model in ["\n\r\x00gpt-4o", "../../etc/passwd", "\u202egpt-4o", " "]:
        status, body, _ = await post(gw, {"model": model, "messages": []})
        assert status == 404, model
        assert openai_error(status, body)["code"] == "model_not_found"


async def test_undecodable_gzip_body(gw):
    status, body, _ = await post(gw, data=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert openai_error(status, body)["code"] == "invalid_body"
    status, _, _ = await post(gw, data=gzip.compress(orjson.dumps(OK)), headers={"Content-Encoding": "gzip"})
    assert status == 200


async def test_deeply_nested_json(gw):
    status, body, _ = await post(gw, data=b"[" * 5000 + b"]" * 5000)
    assert status == 400 and openai_error(status, body)["code"] == "invalid_json"
    nested = b'{"model": "gpt-4o", "messages": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, body, _ = await post(gw, data=nested)
    assert status == 400 and openai_error(status, body)["code"] == "invalid_json"


async def test_odd_header_bytes_are_not_a_crash(gw, vendor):
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
           b"X-Odd: caf\xe9 \xff\r\nX-Request-Id: " + b"r" * 5000 + b"\r\nConnection: close\r\n")
    body = orjson.dumps(OK)
    answer = await raw_http(gw, raw + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"r" * 200 not in answer  # an absurd request id is replaced, not echoed


async def test_huge_url_is_not_echoed(gw):
    status, body, _ = await post(gw, OK, path="/v1/" + "x" * 50_000)
    assert status == 404
    assert len(openai_error(status, body)["message"]) < 400


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/v1/messages", lambda p: p["type"] == "error" and set(p["error"]) == {"type", "message"}),
        ("/v1beta/models/gpt-4o:generateContent", lambda p: set(p["error"]) == {"code", "message", "status"}),
    ],
)
async def test_errors_on_other_protocol_routes_take_their_shape(gw, path, check):
    status, body, _ = await post(gw, data=b"{not json", path=path, headers={"Authorization": "Bearer wrong"})
    assert 400 <= status < 500
    assert check(orjson.loads(body))


async def test_a_body_that_cannot_be_decoded_is_a_quiet_400(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]})
    headers = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as s:  # one session: a 400 must not break the next request
            for encoding in ("gzip", "deflate", "br", "gzip"):
                async with s.post(gw.url + "/v1/chat/completions", data=b"not compressed at all",
                                  headers={**headers, "Content-Encoding": encoding}) as r:
                    assert r.status == 400
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]  # no tracebacks
    assert len([e for e in logs if e["log_level"] == "warning"]) <= 1  # br: refused by the HTTP layer, one line
    assert vendor.requests == []
