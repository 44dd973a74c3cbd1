"""Images and audio end to end: multipart uploads of several MB, a binary speech stream, billing units."""

from __future__ import annotations

import asyncio
import hashlib
import os
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import KEYS
from tests.fakesurface import SPEECH_CHUNK, FakeSurface

MB = 1024 * 1024


@pytest.fixture
async def surface() -> AsyncIterator[FakeSurface]:
    async with FakeSurface().running() as s:
        yield s


def ch(surface: FakeSurface, models: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": "surf", "provider": "openai", "platform": "acme", "base_url": surface.base_url,
            "api_keys": ["vk-surf-secret"], "models": models, **kw}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_image_generation_counts_images(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["dall-e-*", "gpt-image-1"])],
                                "models": {"dall-e-3": {"catalog": "t2i", "price": {"per_image": 0.04}}}})
    client = gw.client()
    out = await client.images.generate(model="dall-e-3", prompt="a cat", n=3, response_format="b64_json")
    assert len(out.data) == 3
    out = await client.images.generate(model="gpt-image-1", prompt="a dog")
    assert len(out.data) == 1
    out = await client.images.generate(prompt="no model given")
    assert surface.requests[-1].json["model"] == "dall-e-2"
    rows = await gw.rows()
    assert [(r["endpoint"], r["model"], r["images"]) for r in rows] == [
        ("images/generations", "dall-e-3", 3), ("images/generations", "gpt-image-1", 1), ("images/generations", "dall-e-2", 1)]
    assert rows[0]["cost"] == pytest.approx(0.12)
    assert (rows[0]["total_tokens"], rows[0]["estimated"]) == (0, 0)
    assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"]) == (50, 272)  # gpt-image reports tokens too


async def test_image_edit_forwards_a_multi_mb_upload_unchanged(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["gpt-image-1"])]})
    image = os.urandom(6 * MB)
    mask = os.urandom(MB)
    out = await gw.client().images.edit(
        model="gpt-image-1", image=("photo.png", image, "image/png"), mask=("mask.png", mask, "image/png"),
        prompt="add a hat", n=2,
    )
    assert len(out.data) == 2
    seen = surface.requests[-1]
    assert seen.form == {"model": "gpt-image-1", "prompt": "add a hat", "n": "2"}
    files = {f.name: f for f in seen.files}
    assert (files["image"].filename, files["image"].size, files["image"].sha256) == ("photo.png", len(image), sha(image))
    assert (files["mask"].size, files["mask"].sha256) == (len(mask), sha(mask))
    assert seen.headers["Authorization"] == "Bearer vk-surf-secret"
    rows = await gw.rows()
    assert [(r["endpoint"], r["images"], r["status"], r["estimated"]) for r in rows] == [("images/edits", 2, 200, 0)]
    assert rows[0]["prompt_tokens"] == 50  # the vendor's numbers, not an estimate from the upload size


async def test_multipart_model_is_renamed_for_the_channel_and_retried_on_another(surface, gateway_factory):
    # The first channel is down, so the same upload is sent twice: the body must replay intact.
    channels = [
        {"name": "down", "base_url": "http://127.0.0.1:9/v1", "provider": "openai", "models": ["whisper-1"], "priority": 10},
        ch(surface, ["whisper-1"], model_map={"whisper-1": "whisper-large-v3"}),
    ]
    gw = await gateway_factory({"keys": KEYS, "channels": channels})
    audio = os.urandom(3 * MB)
    out = await gw.client().audio.transcriptions.create(model="whisper-1", file=("talk.wav", audio, "audio/wav"))
    assert out.text == "the quick brown fox"
    seen = surface.requests[-1]
    assert seen.form["model"] == "whisper-large-v3"
    assert (seen.files[0].size, seen.files[0].sha256) == (len(audio), sha(audio))
    row = (await gw.rows())[0]
    assert (row["attempts"], row["channel"], row["upstream_model"]) == (2, "surf", "whisper-large-v3")
    assert (row["audio_seconds"], row["total_tokens"], row["estimated"]) == (7.0, 0, 0)


async def test_transcription_formats_and_usage(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["whisper-1", "gpt-4o-transcribe"])],
                                "models": {"whisper-1": {"price": {"per_second": 0.0001}}}})
    client = gw.client()
    audio = os.urandom(2 * MB)
    verbose = await client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", audio), response_format="verbose_json")
    assert verbose.duration == 12.5
    text = await client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", audio), response_format="text")
    assert text.strip() == "the quick brown fox"
    stream = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.mp3", audio), stream=True)
    events = [e async for e in stream]
    assert [e.type for e in events] == ["transcript.text.delta", "transcript.text.delta", "transcript.text.done"]
    rows = await gw.rows()
    assert [(r["endpoint"], r["stream"], r["audio_seconds"]) for r in rows] == [
        ("audio/transcriptions", 0, 12.5), ("audio/transcriptions", 0, 0.0), ("audio/transcriptions", 1, 0.0)]
    assert rows[0]["cost"] == pytest.approx(0.00125)
    assert (rows[1]["total_tokens"], rows[1]["estimated"]) == (0, 0)  # plain text: nothing reported, nothing made up
    assert (rows[2]["prompt_tokens"], rows[2]["completion_tokens"]) == (14, 4)


async def test_translation(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["whisper-1"])]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # this client marks translations deprecated; vendors serve it
        out = await gw.client(platform="acme").audio.translations.create(model="whisper-1", file=("fr.wav", os.urandom(MB)))
    assert out.text == "translated text"
    assert surface.requests[-1].path == "/v1/audio/translations"
    row = (await gw.rows())[0]
    assert (row["endpoint"], row["platform"], row["audio_seconds"]) == ("audio/translations", "acme", 7.0)


async def test_speech_streams_binary_as_it_arrives(surface, gateway_factory):
    # The vendor holds the audio after its first chunk until the client has that chunk: a gateway that
    # buffered the body would hang here (bounded by the wait_for).
    surface.speech_delay = 0
    surface.speech_gate = gate = asyncio.Event()
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["tts-1"])],
                                "models": {"tts-1": {"price": {"per_1k_chars": 0.015}}}})
    text = "Hello there, this is spoken text. " * 30
    received = bytearray()

    async def listen() -> None:
        async with gw.client().audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=text) as resp:
            assert resp.headers["content-type"] == "audio/mpeg"
            assert resp.headers["x-request-id"]
            async for chunk in resp.iter_bytes():
                received.extend(chunk)
                gate.set()

    await asyncio.wait_for(listen(), 10)
    assert bytes(received) == b"".join(bytes([i]) * SPEECH_CHUNK for i in range(surface.speech_chunks))
    row = (await gw.rows())[0]
    assert (row["endpoint"], row["input_chars"], row["stream"], row["total_tokens"], row["estimated"]) == (
        "audio/speech", len(text), 0, 0, 0)
    assert row["cost"] == pytest.approx(len(text) / 1000 * 0.015)
    assert row["ttft_ms"] <= row["latency_ms"]


async def test_speech_wav_keeps_vendor_content_type(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["tts-1"])]})
    surface.speech_delay = 0
    resp = await gw.client().audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="wav")
    assert resp.response.headers["content-type"] == "audio/wav"
    assert len(resp.content) == SPEECH_CHUNK * surface.speech_chunks


async def test_multipart_errors(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["whisper-1"])], "limits": {"max_body_mb": 1}})
    client = gw.client()
    with pytest.raises(openai.APIStatusError) as exc:
        await client.audio.transcriptions.create(model="whisper-1", file=("big.wav", os.urandom(2 * MB)))
    assert exc.value.status_code == 413
    url = f"{gw.url}/v1/audio/transcriptions"
    headers = {"Authorization": "Bearer test-key"}
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", b"abc", filename="a.wav")
        async with http.post(url, data=form, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "model"
        async with http.post(url, json={"model": "whisper-1"}, headers=headers) as r:
            assert r.status == 400 and "multipart/form-data" in (await r.json())["error"]["message"]
        broken = {**headers, "Content-Type": "multipart/form-data; boundary=xyz"}
        async with http.post(url, data=b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1", headers=broken) as r:
            body = await r.json()
            assert r.status == 400 and body["error"]["code"] == "invalid_multipart"
    assert surface.requests == []


async def test_a_second_model_field_cannot_slip_past_the_keys_models(surface, gateway_factory):
    # The key may use gpt-4o* only. A vendor reading the last `model` part would have run whisper-1.
    keys = [{"name": "app1", "key": "test-key", "models": ["gpt-4o*"]}]
    gw = await gateway_factory({"keys": keys, "channels": [ch(surface, ["gpt-4o-transcribe", "whisper-1"])]})
    form = aiohttp.FormData()
    form.add_field("model", "gpt-4o-transcribe")
    form.add_field("model", "whisper-1")
    form.add_field("file", b"abc", filename="a.wav")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/audio/transcriptions", data=form, headers={"Authorization": "Bearer test-key"}) as r:
            answer = await r.json()
    assert r.status == 400 and answer["error"]["code"] == "invalid_multipart"
    assert "'model' appears 2 times" in answer["error"]["message"]
    assert surface.requests == []


async def test_chunked_upload_without_content_length(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, ["whisper-1"], model_map={"whisper-1": "w-large"})]})
    audio = os.urandom(4 * MB + 123)
    head = b'--bnd\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    head += b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    tail = b"\r\n--bnd--\r\n"

    async def chunks():
        yield head
        for i in range(0, len(audio), 100_000):
            yield audio[i : i + 100_000]
        yield tail

    headers = {"Authorization": "Bearer test-key", "Content-Type": "multipart/form-data; boundary=bnd"}
    async with aiohttp.ClientSession() as http, http.post(f"{gw.url}/v1/audio/transcriptions", data=chunks(), headers=headers) as r:
        assert r.status == 200 and (await r.json())["text"] == "the quick brown fox"
    seen = surface.requests[-1]
    assert seen.form == {"model": "w-large"}
    assert (seen.files[0].size, seen.files[0].sha256) == (len(audio), sha(audio))
    assert seen.size == len(head) + len(audio) + len(tail) - len("whisper-1") + len("w-large")
