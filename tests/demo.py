"""`make demo`: a local stand-in vendor plus the real gateway, and a streamed answer through both.

No vendor keys needed. The stand-in speaks the OpenAI chat protocol and streams its answer word by
word; the gateway in front of it is started exactly as `make run` starts it, from a demo config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import openai
import orjson
from aiohttp import web

from tests.procs import GatewayProcess, free_port

ANSWER = (
    "This answer comes from a stand-in vendor on your machine. Each word left it as its own SSE chunk, "
    "went through the gateway's auth, routing and usage pipeline, and reached you as it arrived."
)
DEMO_KEY = "demo-client-key"


async def stand_in_chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    words = ANSWER.split(" ")
    if not body.get("stream"):
        return web.json_response({
            "id": "demo", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": len(words), "total_tokens": 12 + len(words)},
        })
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, word in enumerate(words):
        delta = {"content": word + (" " if i < len(words) - 1 else "")}
        chunk = {"id": "demo", "object": "chat.completion.chunk", "model": body["model"],
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await asyncio.sleep(0.06)
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 12, "completion_tokens": len(words), "total_tokens": 12 + len(words)}
        await resp.write(b"data: " + orjson.dumps({"id": "demo", "choices": [], "usage": usage}) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def main(once: bool) -> int:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stand_in_chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    vendor_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", vendor_port).start()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    gw = GatewayProcess(tmp, {
        "log": {"level": "warning", "format": "console"},
        "keys": [{"name": "demo", "key": DEMO_KEY}],
        "channels": [{"name": "stand-in", "provider": "openai", "platform": "demo",
                      "base_url": f"http://127.0.0.1:{vendor_port}/v1", "api_keys": ["stand-in-vendor-key"],
                      "models": ["demo-*"], "model_map": {"demo-chat": "stand-in-model-v1"}}],
    })
    try:
        await gw.start()
        print(f"stand-in vendor on 127.0.0.1:{vendor_port}; gateway on {gw.url} (config {gw.config_path})\n")
        print(f"> client.chat.completions.create(model='demo-chat', stream=True)  # base_url={gw.url}/v1\n")
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=DEMO_KEY) as client:
            start = time.perf_counter()
            stream = await client.chat.completions.create(
                model="demo-chat", messages=[{"role": "user", "content": "Say something."}], stream=True)
            first = None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter() - start
                    print(chunk.choices[0].delta.content, end="", flush=True)
            print(f"\n\nfirst chunk after {first * 1000:.0f} ms, last after {(time.perf_counter() - start) * 1000:.0f} ms")
        await asyncio.sleep(0.4)  # the usage writer batches rows off the request path
        db = sqlite3.connect(gw.config["database"])
        row = db.execute("SELECT key_name, model, upstream_model, channel, status, prompt_tokens, "
                         "completion_tokens, latency_ms, ttft_ms FROM usage ORDER BY id DESC LIMIT 1").fetchone()
        db.close()
        cols = ("key_name", "model", "upstream_model", "channel", "status", "prompt_tokens",
                "completion_tokens", "latency_ms", "ttft_ms")
        print("usage row:", dict(zip(cols, row, strict=True)) if row else "(not written yet)")
        if not once:
            print(f"\nStill serving. Try:\n  curl -N {gw.url}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' "
                  "-H 'Content-Type: application/json' "
                  "-d '{\"model\": \"demo-chat\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'"
                  "\nCtrl-C to stop.")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    finally:
        try:
            rc = await gw.stop()
            await runner.cleanup()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # the demo's config, database and log go with it
    return rc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stream one answer and exit")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(args.once)))
