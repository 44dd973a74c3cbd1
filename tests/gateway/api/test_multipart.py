"""gateway/multipart.py: parse offsets, splice a field, and never copy the file doing either."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.api.multipart import MultipartError, boundary_of, parse_form
from gateway.http.lean_client import LeanUpstream
from gateway.http.upstream import SessionUpstream

CT = "multipart/form-data; boundary=XyZ"


def body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b"preamble ignored\r\n"
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += b"--XyZ\r\nContent-Disposition: " + disp.encode() + b"\r\n"
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + b"--XyZ--\r\n"


def test_boundary_of():
    assert boundary_of('multipart/form-data; boundary="a b;c"') == b"a b;c"
    assert boundary_of("Multipart/Form-Data;boundary=abc") == b"abc"
    assert boundary_of("application/json") is None
    assert boundary_of("multipart/form-data") is None


def test_parse_finds_fields_and_files_by_offset():
    data = os.urandom(1000) + b"\r\n--XyZ-not-a-boundary"
    raw = body(("model", None, b"whisper-1"), ("file", "a.wav", data), ("stream", None, b"true"))
    form = parse_form(bytearray(raw), CT)
    assert [(p.name, p.filename) for p in form.parts] == [("model", None), ("file", "a.wav"), ("stream", None)]
    assert form.value("model") == "whisper-1" and form.value("stream") == "true" and form.value("absent") is None
    part = form.parts[1]
    assert raw[part.start : part.end] == data


def test_payload_splices_replaces_and_inserts():
    raw = body(("file", "a.wav", b"AUDIO"), ("model", None, b"whisper-1"))
    form = parse_form(bytearray(raw), CT)
    assert form.payload(CT).decode("latin-1") == raw.decode("latin-1")
    renamed = form.payload(CT, {"model": "whisper-large-v3"}).decode()
    assert renamed == raw.decode().replace("whisper-1", "whisper-large-v3")
    again = parse_form(renamed.encode(), CT)
    assert again.value("model") == "whisper-large-v3"
    added = parse_form(form.payload(CT, {"language": "en"}).decode().encode(), CT)
    assert added.value("language") == "en" and added.value("model") == "whisper-1"
    assert form.payload(CT, {"model": "m2"}).size == len(raw) - len("whisper-1") + 2


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"no boundary here", "never appears"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue", "before the closing boundary"),
        (b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--", "no Content-Disposition name"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"", "no end of headers"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(raw, problem):
    with pytest.raises(MultipartError, match=problem):
        parse_form(raw, CT)


def test_parsing_and_splicing_do_not_copy_the_file():
    big = bytearray(body(("model", None, b"m"), ("file", "big.bin", os.urandom(8 * 1024 * 1024))))
    tracemalloc.start()
    try:
        form = parse_form(big, CT)
        assert form.value("model") == "m"
        payload = form.payload(CT, {"model": "a-much-longer-upstream-name"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert payload.size == len(big) + len("a-much-longer-upstream-name") - 1
    assert peak < 256 * 1024  # offsets and views only; the 8 MB file would show


@pytest.mark.parametrize("client", [LeanUpstream, SessionUpstream], ids=["lean", "public"])
async def test_payload_sends_in_bounded_writes_with_content_length(client):
    seen: dict[str, object] = {}

    async def receive(request: web.Request) -> web.Response:
        seen["length"] = request.content_length
        seen["chunked"] = "chunked" in request.headers.get("Transfer-Encoding", "")
        seen["body"] = await request.read()
        return web.Response(text="ok")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    raw = body(("model", None, b"m"), ("file", "big.bin", os.urandom(3 * 1024 * 1024)))
    payload = parse_form(bytearray(raw), CT).payload(CT, {"model": "model-2"})
    upstream = client()
    try:
        response = await upstream.request("POST", str(server.make_url("/")), {"Content-Type": CT}, payload, "", 5.0)
        assert response.status == 200
        response.release()
    finally:
        await upstream.close()
        await server.close()
    expected = raw.replace(b"\r\n\r\nm\r\n", b"\r\n\r\nmodel-2\r\n", 1)
    assert seen == {"length": len(expected), "chunked": False, "body": expected}


def test_a_field_the_gateway_checks_must_come_once_and_as_text():
    twice = parse_form(bytearray(body(("model", None, b"gpt-4o-transcribe"), ("model", None, b"whisper-1"))), CT)
    with pytest.raises(MultipartError, match="'model' appears 2 times"):
        twice.value("model")
    as_file = parse_form(bytearray(body(("model", "m.txt", b"whisper-1"))), CT)
    with pytest.raises(MultipartError, match="'model' must be a text field"):
        as_file.value("model")
