"""The load generator: a minimal HTTP/1.1 keep-alive client on asyncio, in its own process.

A general client (aiohttp, httpx) costs about as much per request as the server it measures; this
one writes canned request bytes and parses just enough of the answer (status, Content-Length or
chunked framing) to time it, so on a 2-core machine it stays a small share of the CPU.

It takes one JSON command per line on stdin and answers one JSON line on stdout:

    {"op": "latency", "target": T, "n": 1000}          sequential requests on one connection
    {"op": "stream", "target": T, "n": 200}            sequential 40-chunk streams: first / last byte
    {"op": "rps", "target": T, "conns": 32, "seconds": 3}
    {"op": "pairs", "targets": [T, U], "pids": [[...], [...]], "conns": 32, "n": 24, "seconds": 0.5}
                                                       requests/s of T and U in turns on connections kept open
    {"op": "open", "target": T, "conns": 1000}         open held streams, answer once all have a first chunk,
    {"op": "finish"}                                   ... then wait for them to end
    {"op": "quit"}

where T is {"port": 9001, "path": "/v1/chat/completions", "headers": {"Authorization": "Bearer ..."}}, and
optionally "ports": [9001, 9002]: then "rps" and "open" spread their connections over those ports in turn
(replicas balanced by the client, so no balancer's own cost is measured); "latency" and "stream" use "port".
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import Any

import orjson

from tests.bench.procs import cpu_seconds, raise_nofile, use_uvloop

PROMPT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
          "max_tokens": 32}

_now = time.perf_counter


def build_request(target: dict[str, Any], *, stream: bool = False, hold: bool = False) -> bytes:
    body: dict[str, Any] = dict(PROMPT)
    if stream:
        body["stream"] = True
    if hold:
        body["bench_hold"] = True
    raw = orjson.dumps(body)
    lines = [
        f"POST {target['path']} HTTP/1.1",
        f"Host: 127.0.0.1:{target['port']}",
        "Content-Type: application/json",
        "Accept: application/json",
        f"Content-Length: {len(raw)}",
        *(f"{k}: {v}" for k, v in target.get("headers", {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


class Conn(asyncio.Protocol):
    """One keep-alive connection; `request()` sends and waits for the whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: asyncio.Future[int] | None = None
        self.first: asyncio.Future[float] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.chunked = False
        self.left = 0  # body bytes (or chunk bytes + CRLF) still to come
        self.final = False  # saw the 0-size chunk; waiting for its CRLF
        self.t_first = 0.0
        self.t_end = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        err = ConnectionError(f"server closed the connection ({exc})")
        if self.first is not None and not self.first.done():
            self.first.set_exception(err)
            self.first.exception()
        if self.done is not None and not self.done.done():
            self.done.set_exception(err)

    def send(self, data: bytes) -> asyncio.Future[int]:
        if self.transport is None:
            raise ConnectionError("connection is closed")
        loop = asyncio.get_running_loop()
        self._reset()
        self.done = loop.create_future()
        self.first = loop.create_future()
        self.transport.write(data)
        return self.done

    async def request(self, data: bytes) -> int:
        return await self.send(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self.status = int(head[9:12])
            if b"\r\ntransfer-encoding: chunked" in head:
                self.chunked = True
            else:
                i = head.find(b"\r\ncontent-length:")
                if i >= 0:
                    j = head.find(b"\r\n", i + 2)
                    self.left = int(head[i + 17 : j if j >= 0 else len(head)])
                if self.left == 0:
                    self._finish()
                    return
        if self.chunked:
            self._chunks(buf)
        else:
            if buf and not self.t_first:
                self._first()
            take = min(len(buf), self.left)
            del buf[:take]
            self.left -= take
            if self.left == 0:
                self._finish()

    def _chunks(self, buf: bytearray) -> None:
        while True:
            if self.final:
                if len(buf) < 2:
                    return
                del buf[:2]
                self._finish()
                return
            if self.left:
                take = min(len(buf), self.left)
                del buf[:take]
                self.left -= take
                if self.left:
                    return
            end = buf.find(b"\r\n")
            if end < 0:
                return
            size = int(bytes(buf[:end]).split(b";")[0], 16)
            del buf[: end + 2]
            if size == 0:
                self.final = True
            else:
                if not self.t_first:
                    self._first()
                self.left = size + 2

    def _first(self) -> None:
        self.t_first = _now()
        if self.first is not None and not self.first.done():
            self.first.set_result(self.t_first)

    def _finish(self) -> None:
        self.t_end = _now()
        if self.first is not None and not self.first.done():
            self.first.set_result(self.t_end)
        if self.done is not None and not self.done.done():
            self.done.set_result(self.status)


async def connect(port: int) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Conn, "127.0.0.1", port)
    return conn


async def latency(target: dict[str, Any], n: int, warmup: int = 20) -> dict[str, Any]:
    conn = await connect(target["port"])
    req = build_request(target)
    out: list[float] = []
    errors = 0
    try:
        for i in range(n + warmup):
            t0 = _now()
            status = await conn.request(req)
            if i >= warmup:
                out.append((conn.t_end - t0) * 1000.0)
            errors += status != 200
    finally:
        conn.close()
    return {"ms": out, "errors": errors}


async def stream(target: dict[str, Any], n: int, warmup: int = 10) -> dict[str, Any]:
    conn = await connect(target["port"])
    req = build_request(target, stream=True)
    first: list[float] = []
    last: list[float] = []
    errors = 0
    try:
        for i in range(n + warmup):
            t0 = _now()
            status = await conn.request(req)
            if i >= warmup:
                first.append((conn.t_first - t0) * 1000.0)
                last.append((conn.t_end - t0) * 1000.0)
            errors += status != 200
    finally:
        conn.close()
    return {"first_ms": first, "last_ms": last, "errors": errors}


async def drive(clients: list[Conn], req: bytes, start: float, stop: float) -> tuple[int, int, int]:
    """Send `req` on every connection, again as each answer comes, until `stop` (loop time): the 200s
    and other answers that came between `start` and `stop`, and every answer (in that span or not:
    the gateway writes a usage row for each)."""
    loop = asyncio.get_running_loop()
    ok = errors = answered = 0

    async def run(conn: Conn) -> None:
        nonlocal ok, errors, answered
        while True:
            status = await conn.request(req)
            answered += 1
            now = loop.time()
            if now >= stop:
                return
            if now >= start:
                if status == 200:
                    ok += 1
                else:
                    errors += 1

    await asyncio.gather(*(run(c) for c in clients))
    return ok, errors, answered


async def rps(target: dict[str, Any], conns: int, seconds: float, warmup: float = 0.5) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ports = target.get("ports") or [target["port"]]
    clients = await asyncio.gather(*(connect(ports[i % len(ports)]) for i in range(conns)))
    start = loop.time() + warmup
    try:
        ok, errors, answered = await drive(clients, build_request(target), start, start + seconds)
    finally:
        for c in clients:
            c.close()
    return {"rps": ok / seconds, "ok": ok, "errors": errors, "answered": answered}


async def pairs(
    targets: list[dict[str, Any]], pids: list[list[int]], conns: int, n: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Requests/s of two targets in `n` pairs of turns, the order alternating (AB BA AB ...): each turn
    sends on `conns` connections of its target's, opened once for all turns and idle in the other's, so
    a turn begins without connecting. A turn counts what is answered in `seconds` after `warmup` (while
    the connections' first requests arrive at once), and its target's CPU time (its `pids`) over the
    same span."""
    loop = asyncio.get_running_loop()
    reqs = [build_request(t) for t in targets]
    groups = [await asyncio.gather(*(connect(t["port"]) for _ in range(conns))) for t in targets]
    out: dict[str, Any] = {"rps": [[], []], "ok": [[], []], "cpu_s": [[], []], "answered": [0, 0], "errors": [0, 0]}

    def cpu(side: int) -> float:
        return sum(cpu_seconds(p) for p in pids[side])

    async def turn(side: int) -> None:
        start = loop.time() + warmup
        cpu_at: list[float] = []
        loop.call_at(start, lambda: cpu_at.append(cpu(side)))
        loop.call_at(start + seconds, lambda: cpu_at.append(cpu(side)))
        ok, errors, answered = await drive(groups[side], reqs[side], start, start + seconds)
        if len(cpu_at) < 2:  # (a loop whose clock is not the turn's may end it before the timer runs)
            cpu_at.append(cpu(side))
        out["rps"][side].append(ok / seconds)
        out["ok"][side].append(ok)
        out["cpu_s"][side].append(cpu_at[1] - cpu_at[0])
        out["errors"][side] += errors
        out["answered"][side] += answered

    try:
        for i in range(n):
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                await turn(side)
    finally:
        for c in (c for g in groups for c in g):
            c.close()
    return out


class Opened:
    def __init__(self) -> None:
        self.conns: list[Conn] = []
        self.waits: list[asyncio.Future[int]] = []


async def open_streams(target: dict[str, Any], conns: int, opened: Opened, within_s: float = 60.0) -> dict[str, Any]:
    req = build_request(target, stream=True, hold=True)
    ports = target.get("ports") or [target["port"]]
    t0 = _now()
    sem = asyncio.Semaphore(64)  # do not SYN-flood the listen backlog

    async def one(port: int) -> None:
        async with sem:
            conn = await connect(port)
        opened.conns.append(conn)
        opened.waits.append(conn.send(req))
        assert conn.first is not None
        await conn.first

    results = await asyncio.wait_for(asyncio.gather(*(one(ports[i % len(ports)]) for i in range(conns)), return_exceptions=True), within_s)
    failed = [r for r in results if isinstance(r, BaseException)]
    return {"opened": conns - len(failed), "failed": len(failed), "seconds": _now() - t0,
            "first_error": repr(failed[0]) if failed else None}


async def finish_streams(opened: Opened, within_s: float = 60.0) -> dict[str, Any]:
    results = await asyncio.wait_for(asyncio.gather(*opened.waits, return_exceptions=True), within_s)
    statuses = Counter(str(r) if isinstance(r, int) else type(r).__name__ for r in results)
    for c in opened.conns:
        c.close()
    opened.conns.clear()
    opened.waits.clear()
    await asyncio.sleep(0.1)
    return {"statuses": dict(statuses)}


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    opened = Opened()
    while line := await reader.readline():
        cmd = orjson.loads(line)
        op = cmd["op"]
        try:
            if op == "latency":
                result = await latency(cmd["target"], cmd["n"], cmd.get("warmup", 20))
            elif op == "stream":
                result = await stream(cmd["target"], cmd["n"], cmd.get("warmup", 10))
            elif op == "rps":
                result = await rps(cmd["target"], cmd["conns"], cmd["seconds"], cmd.get("warmup", 0.5))
            elif op == "pairs":
                result = await pairs(cmd["targets"], cmd["pids"], cmd["conns"], cmd["n"], cmd["seconds"], cmd.get("warmup", 0.1))
            elif op == "open":
                result = await open_streams(cmd["target"], cmd["conns"], opened)
            elif op == "finish":
                result = await finish_streams(opened)
            elif op == "quit":
                return
            else:
                result = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # report, do not die: the orchestrator decides
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
        sys.stdout.flush()


if __name__ == "__main__":
    raise_nofile()
    use_uvloop(main())
