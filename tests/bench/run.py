"""The orchestrator behind `make bench`: start every target, measure them in turns, print ratios.

Targets, all in front of one mock vendor process (`tests.bench.mock`):

    direct     the mock itself
    floor      a bare aiohttp forwarder (`tests.bench.floor`)
    gateway    `python -m gateway serve`: auth, routing, usage rows, access log at info (to a file)
    quiet      the same gateway with log level warning, to price the access line
    2 workers  the same gateway with `workers: 2`
    no metrics the same gateway with GATEWAY_METRICS=off, to price the metrics
    limited    the gateway itself, called with a second key that has rpm, tpm and a budget (never reached):
               prices the limits, in the same process as the key without them
    10k tasks  the same gateway polling 10,000 pending async tasks (on the mock, which answers RUNNING)
    redis+pg   the limited gateway with `state.redis` and `database: postgresql://...` (tests.bench.scale):
               every admission is a Redis round trip, the usage rows go to PostgreSQL
    2 replicas two such gateways (workers: 1 each) on the same Redis prefix and schema, the load
               generator spreading its connections over both ports (no balancer in between)

The last two need the Redis and PostgreSQL servers the tests use; without them they are skipped, saying why.

Each measurement runs in rounds, the targets taking turns inside a round, and the rounds are pooled:
a neighbour's burst of CPU then lands on every target alike rather than on whichever ran at the time.
Requests/s, the measure that moves most with the machine, runs in more and shorter rounds, each in
another order of targets, and its ratios are the median of each round's ratio: two targets measured
seconds apart share the machine's state of the moment, and no target always follows the same one.
The targets that price one small thing against the gateway (no metrics, limited, 10k tasks: targets of
0.9-0.95x) are left out of those rounds and measured in pairs of short turns with the gateway instead
(the load generator's "pairs": connections kept open, 100 pairs of 0.1 s at 32 connections and 30 of
0.4 s at 256, in alternating order): a round of all targets spreads two of them over ~20 s, and their ratio over six
rounds moved by more than what they price. The limits are priced within one process, so that what
differs between two processes of the same config (~2-3% here) does not count as their cost.
The load generator (`tests.bench.load`) is its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.bench.procs import cpu_seconds, free_port, raise_nofile, rss_mb, tree_rss_mb, use_uvloop, wait_port
from tests.bench.scale import Shared, shared_state, unreachable

ROOT = Path(__file__).resolve().parents[2]
BENCH_KEY = "sk-bench-client-key"
PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"


@dataclass
class Scale:
    latency_n: int  # sequential requests per round
    stream_n: int
    rps_seconds: float
    rps_rounds: int
    concurrency: tuple[int, int]
    open_streams: int
    writer_rows: int
    rounds: int
    settle_s: float  # pause before the idle RSS sample and after the streams close
    # Requests/s of each target priced against the gateway (PAIRED), at each concurrency: pairs of turns,
    # and a turn's measured time (after a quarter of it to warm up): longer at 256 connections, where a
    # request takes ~50 ms.
    pair_rounds: tuple[int, int]
    pair_seconds: tuple[float, float]


FULL = Scale(latency_n=1000, stream_n=200, rps_seconds=2.0, rps_rounds=6, concurrency=(32, 256), open_streams=1000,
             writer_rows=200_000, rounds=3, settle_s=2.0,
             pair_rounds=(100, 30), pair_seconds=(0.1, 0.4))
QUICK = Scale(latency_n=30, stream_n=10, rps_seconds=0.3, rps_rounds=2, concurrency=(4, 16), open_streams=20,
              writer_rows=2_000, rounds=1, settle_s=0.1,
              pair_rounds=(2, 2), pair_seconds=(0.1, 0.1))


@dataclass
class Target:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    headers: dict[str, str] = field(default_factory=dict)
    db: Path | None = None
    shared: Shared | None = None  # Redis and PostgreSQL: the usage rows are counted there
    replicas: list[tuple[int, asyncio.subprocess.Process]] = field(default_factory=list)  # beyond the first
    host: Target | None = None  # the target whose process serves this one (called with another key)
    sent: int = 0  # responses the load generator got, to check one usage row each
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        spec = {"port": self.port, "path": PATH, "headers": self.headers}
        return {**spec, "ports": self.ports} if self.replicas else spec

    @property
    def ports(self) -> list[int]:
        return [self.port, *(port for port, _ in self.replicas)]

    @property
    def procs(self) -> list[asyncio.subprocess.Process]:
        return [self.proc, *(proc for _, proc in self.replicas)]

    def pids(self) -> list[int]:
        from tests.bench.procs import children

        return [pid for p in self.procs for pid in (p.pid, *children(p.pid))]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def rss(self) -> float:
        return sum(tree_rss_mb(p.pid) for p in self.procs)


class LoadGen:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died")
        result: dict[str, Any] = orjson.loads(line)
        if "error" in result:
            raise RuntimeError(f"load generator: {result['error']}")
        return result


async def spawn(*args: str, log: Path | None = None, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    stderr = log.open("ab") if log is not None else None
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=stderr or asyncio.subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
    finally:
        if stderr is not None:
            stderr.close()


@contextlib.asynccontextmanager
async def mock_and_load() -> AsyncIterator[tuple[int, LoadGen]]:
    """The mock vendor (its port) and a load generator, for tools that measure one target at a time."""
    mock_port = free_port()
    mock = await spawn("-m", "tests.bench.mock", "--port", str(mock_port))
    gen = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.load", cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.to_thread(wait_port, mock_port)
        yield mock_port, LoadGen(gen)
    finally:
        assert gen.stdin is not None
        gen.stdin.write(b'{"op":"quit"}\n')
        await gen.wait()
        await stop(mock)


TASKS = 10_000
# Targets that price one thing against the gateway (ratio targets of a few percent): their requests/s
# are measured in pairs of runs with the gateway, back to back, not in the rounds of all targets.
PAIRED = ("no metrics", "limited", "10k tasks")
LIMITS = {"rpm": 100_000_000, "tpm": 10_000_000_000, "budget": 1_000_000_000.0, "budget_period": "monthly"}
# Every gateway of the bench also has this key, with LIMITS: the "limited" target calls with it.
LIMITED_KEY = "sk-bench-limited-key"


def gateway_config(
    tmp: Path, name: str, port: int, mock_port: int, *, level: str, workers: int, key: dict[str, Any] | None = None,
    shared: Shared | None = None,
) -> Path:
    raw: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "database": str(tmp / f"{name}.db"),
        "log": {"level": level, "format": "json"},
        "workers": workers,
        "shutdown_grace_s": 10,
        "keys": [{"name": "bench", "key": BENCH_KEY, **(key or {})}, {"name": "bench-limited", "key": LIMITED_KEY, **LIMITS}],
        "channels": [{"name": "mock", "provider": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1",
                      "api_keys": ["sk-vendor-bench"], "models": ["gpt-*"]},
                     {"name": "tasks", "provider": "dashscope", "base_url": f"http://127.0.0.1:{mock_port}",
                      "api_keys": ["sk-vendor-bench"], "models": ["wan-bench"]}],
        "models": {"gpt-4o-mini": {"price": {"input": 0.15, "output": 0.6}}},
    }
    if shared is not None:
        # Each replica's own files (spool, counters file) in a folder of its own, as on its own machine.
        raw.update(database=shared.database, state=shared.state(), spool=str(tmp / name / "gateway.spool.jsonl"))
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def start_gateway(
    tmp: Path, name: str, mock_port: int, *, level: str = "info", workers: int = 1, env: dict[str, str] | None = None,
    key: dict[str, Any] | None = None, tasks: int = 0, shared: Shared | None = None, replicas: int = 1,
) -> Target:
    stem = name.replace(" ", "-").replace("+", "-")
    if tasks:
        await pending_tasks(tmp / f"{stem}.db", tasks)
    started: list[tuple[int, asyncio.subprocess.Process]] = []
    for i in range(replicas):
        port, file = free_port(), stem if replicas == 1 else f"{stem}-{i + 1}"
        cfg = gateway_config(tmp, file, port, mock_port, level=level, workers=workers, key=key, shared=shared)
        # An operator's gateway logs to a file or a pipe, not to nowhere: the access line's cost is real.
        proc = await spawn("-m", "gateway", "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{port}",
                           log=tmp / f"{file}.log", env=env)
        started.append((port, proc))
    (port, proc), *more = started
    return Target(name, port, proc, headers={"Authorization": f"Bearer {BENCH_KEY}"},
                  db=None if shared else tmp / f"{stem}.db", shared=shared, replicas=more)


async def pending_tasks(db: Path, n: int) -> None:
    """`n` async tasks running at the mock's DashScope, all due for a poll now."""
    from gateway.tasks.model import Task
    from gateway.tasks.store import SqliteTaskStore

    store = SqliteTaskStore(str(db))
    await store.start()
    now = time.time()
    try:
        for i in range(n):
            await store.create(Task(
                id=f"task_bench{i:06d}", key_name="bench", catalog="t2v", model="wan-bench", upstream_model="wan-bench",
                channel="tasks", vendor="dashscope", dialect="task", vendor_key_id=vendor_key_id("sk-vendor-bench"),
                vendor_task_id=f"bench-{i}", status="RUNNING", next_poll_at=now, created_at=now, updated_at=now,
            ))  # fmt: skip
    finally:
        await store.close()


def vendor_key_id(key: str) -> str:
    from gateway.tasks.engine import key_id

    return key_id(key)


async def stop(proc: asyncio.subprocess.Process, within_s: float = 30.0) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), within_s)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.asynccontextmanager
async def sampler(target: Target, every: float = 0.02) -> AsyncIterator[list[float]]:
    """Sample the target's RSS until the block ends; the samples land in the yielded list."""
    samples: list[float] = []

    async def run() -> None:
        while True:
            samples.append(target.rss())
            await asyncio.sleep(every)

    task = asyncio.create_task(run())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        samples.append(target.rss())


async def measure(targets: list[Target], load: LoadGen, scale: Scale, say: Any) -> None:
    lat_targets = [t for t in targets if t.name not in ("2 workers", "2 replicas")]
    for t in targets:  # warm every path: connections, pools, caches (of each replica)
        for port in t.ports:
            r = await load.call(op="latency", target={**t.spec, "port": port}, n=100)
            t.sent += 120
            if r["errors"]:
                raise RuntimeError(f"{t.name}: {r['errors']} errors while warming up")
    say("latency")
    for _ in range(scale.rounds):
        for t in lat_targets:
            r = await load.call(op="latency", target=t.spec, n=scale.latency_n)
            t.sent += scale.latency_n + 20
            t.results.setdefault("lat", []).extend(r["ms"])
            t.results["errors"] = t.results.get("errors", 0) + r["errors"]
    say("streams")
    gw = next(t for t in lat_targets if t.name == "gateway")
    for _ in range(scale.rounds):
        for t in lat_targets:
            r = await load.call(op="stream", target=t.spec, n=scale.stream_n)
            t.sent += scale.stream_n + 10
            t.results.setdefault("first", []).extend(r["first_ms"])
            t.results.setdefault("last", []).extend(r["last_ms"])
            t.results["errors"] = t.results.get("errors", 0) + r["errors"]
        # In the same round, the same stream to an Anthropic client: the chat body is a valid Messages
        # request too, and every event is translated (chat chunks -> Anthropic events).
        r = await load.call(op="stream", target={**gw.spec, "path": MESSAGES_PATH}, n=scale.stream_n)
        gw.sent += scale.stream_n + 10
        gw.results.setdefault("last_translated", []).extend(r["last_ms"])
        gw.results["errors"] = gw.results.get("errors", 0) + r["errors"]
    rounds = [t for t in targets if t.name not in PAIRED]
    for conns in scale.concurrency:
        say(f"requests/s at {conns} connections")
        for n in range(scale.rps_rounds):
            # Each round starts elsewhere, and every other round goes the other way: no target always
            # follows the same one (the one before leaves the machine warm or busy; ~0.08 on a ratio).
            order = rounds[n % len(rounds) :] + rounds[: n % len(rounds)]
            for t in order if n % 2 == 0 else order[::-1]:
                await rps_run(t, load, conns, scale.rps_seconds)
    # Two identical gateways measured in the rounds above differ by up to 0.2x in a round, and a median of
    # six rounds by several percent: more than what PAIRED targets price. Short turns back to back on
    # connections kept open, whose order alternates, share the machine's state of the moment: 100 pairs
    # of 0.1 s held within ~2% (one standard deviation) for two identical gateways, where ten pairs of
    # 1 s runs, each connecting anew, scattered by ~9% (docs/performance.md).
    for t in (t for t in targets if t.name in PAIRED):
        say(f"requests/s, {t.name} and the gateway in pairs")
        for conns, n, seconds in zip(scale.concurrency, scale.pair_rounds, scale.pair_seconds, strict=True):
            await pairs_run(gw, t, load, conns, n, seconds)
    await open_streams(targets, load, scale, say)


async def rps_run(t: Target, load: LoadGen, conns: int, seconds: float) -> None:
    """One run of requests/s against `t`, kept in its results (with its CPU per request)."""
    redis0 = await t.shared.redis_load() if t.shared is not None else (0.0, 0)
    cpu0 = t.cpu()
    # A quarter of the measured time to warm up (0.5 s in the rounds of 2 s): the CPU a request counts it
    # too, alike for every target.
    r = await load.call(op="rps", target=t.spec, conns=conns, seconds=seconds, warmup=seconds / 4)
    cpu = t.cpu() - cpu0
    if t.shared is not None:  # what Redis spent on them (warm-up included)
        redis1 = await t.shared.redis_load()
        t.results.setdefault("redis_cpu_us", []).append((redis1[0] - redis0[0]) / max(r["answered"], 1) * 1e6)
        t.results.setdefault("redis_cmds", []).append((redis1[1] - redis0[1]) / max(r["answered"], 1))
    t.results.setdefault(f"rps{conns}", []).append(r["rps"])
    t.results.setdefault(f"cpu_us{conns}", []).append(cpu / max(r["ok"], 1) * 1e6)
    t.results["errors"] = t.results.get("errors", 0) + r["errors"]
    t.sent += r["answered"]


async def pairs_run(gw: Target, t: Target, load: LoadGen, conns: int, n: int, seconds: float) -> None:
    """`n` pairs of turns of the gateway and `t` (the load generator's "pairs"): each turn's requests/s
    goes in their results, the gateway's under `rps{conns}:{t.name}`, and each one's CPU a request over
    all its turns."""
    r = await load.call(op="pairs", targets=[gw.spec, t.spec], pids=[gw.pids(), t.pids()], conns=conns,
                        n=n, seconds=seconds, warmup=seconds / 4)
    for side, (u, suffix) in enumerate(((gw, f":{t.name}"), (t, ""))):
        u.results.setdefault(f"rps{conns}{suffix}", []).extend(r["rps"][side])
        u.results.setdefault(f"cpu_us{conns}{suffix}", []).append(sum(r["cpu_s"][side]) / max(sum(r["ok"][side]), 1) * 1e6)
        u.results["errors"] = u.results.get("errors", 0) + r["errors"][side]
        u.sent += r["answered"][side]


async def open_streams(targets: list[Target], load: LoadGen, scale: Scale, say: Any) -> None:
    """RSS with `scale.open_streams` held streams open at once, and after they close."""
    say(f"{scale.open_streams} streams open at once")
    for t in targets:
        if t.name in ("direct", "quiet", "no metrics", "2 replicas") or t.host is not None:
            continue
        await asyncio.sleep(scale.settle_s)
        t.results["rss_idle"] = t.rss()
        async with sampler(t) as samples:
            r = await load.call(op="open", target=t.spec, conns=scale.open_streams)
            t.results["rss_open"] = t.rss()
            t.results["opened"] = r["opened"]
            if r["failed"]:
                say(f"  {t.name}: {r['failed']} streams failed to open: {r['first_error']}")
            await release(targets[0].port)
            fin = await load.call(op="finish")
        t.results["rss_peak"] = max(samples)
        t.results["stream_statuses"] = fin["statuses"]
        await asyncio.sleep(scale.settle_s)
        t.results["rss_after"] = t.rss()


async def release(mock_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", mock_port)
    writer.write(b"POST /bench/release HTTP/1.1\r\nHost: mock\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"{}")
    writer.close()


async def writer_rate(tmp: Path, rows: int) -> float:
    """Rows per second the usage writer commits when fed as fast as a process can record them."""
    from gateway.ledger.usage import UsageRow, UsageWriter

    writer = UsageWriter(str(tmp / "writer.db"))
    await writer.start()
    t0 = time.perf_counter()
    base = time.time()
    for i in range(rows):
        writer.record(UsageRow(request_id=f"req-{i:08d}", ts=base, key_name="bench", platform="openai",
                               endpoint="chat/completions", model="gpt-4o-mini", upstream_model="gpt-4o-mini",
                               channel="mock", status=200, prompt_tokens=12, completion_tokens=9, total_tokens=21,
                               latency_ms=1.234, ttft_ms=1.0, attempts=1, cost=0.0000072))
        if i % 1000 == 999:
            await asyncio.sleep(0)  # a server records between requests; let the writer run
    await writer.close()
    elapsed = time.perf_counter() - t0
    assert writer.written == rows, (writer.written, rows)
    return rows / elapsed


def count_rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        n: int = con.execute("SELECT count(*) FROM usage").fetchone()[0]
        return n
    finally:
        con.close()


def report(
    targets: list[Target], scale: Scale, writer_rps: float, rows: dict[str, tuple[int, int]], scale_skipped: str | None
) -> dict[str, Any]:
    lo, hi = scale.concurrency
    summary: dict[str, Any] = {"targets": {}, "ratios": {}, "writer_rows_per_s": writer_rps, "rows": rows,
                               "scale_skipped": scale_skipped}
    lines = []
    head = f"{'target':<10} {'p50 ms':>7} {'p99 ms':>7} {'rps@' + str(lo):>9} {'rps@' + str(hi):>9} " \
           f"{'cpu us/req':>10} {'ttfb ms':>8} {'last ms':>8} {'idle MB':>8} {'peak MB':>8} {'after MB':>8}"
    lines.append(head)
    lines.append("-" * len(head))

    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else format("-", ">" + fmt.split(".")[0])

    for t in targets:
        r = t.results
        row = {
            "p50_ms": pct(r.get("lat", []), 0.50) if "lat" in r else None,
            "p99_ms": pct(r.get("lat", []), 0.99) if "lat" in r else None,
            f"rps{lo}": statistics.median(r[f"rps{lo}"]),
            f"rps{hi}": statistics.median(r[f"rps{hi}"]),
            "cpu_us_per_req": statistics.median(r[f"cpu_us{lo}"] + r[f"cpu_us{hi}"]),
            "ttfb_ms": pct(r["first"], 0.5) if "first" in r else None,
            "last_ms": pct(r["last"], 0.5) if "last" in r else None,
            "last_translated_ms": pct(r["last_translated"], 0.5) if "last_translated" in r else None,
            "rss_idle_mb": r.get("rss_idle"),
            "rss_peak_mb": r.get("rss_peak"),
            "rss_after_mb": r.get("rss_after"),
            "errors": r.get("errors", 0),
        }
        if "redis_cpu_us" in r:
            row["redis_cpu_us_per_req"] = statistics.median(r["redis_cpu_us"])
            row["redis_commands_per_req"] = statistics.median(r["redis_cmds"])
        summary["targets"][t.name] = row
        cpu = row["cpu_us_per_req"] if t.name != "direct" else None
        lines.append(
            f"{t.name:<10} {f(row['p50_ms'], '7.3f')} {f(row['p99_ms'], '7.3f')} {row[f'rps{lo}']:9.0f} "
            f"{row[f'rps{hi}']:9.0f} {f(cpu, '10.0f')} {f(row['ttfb_ms'], '8.3f')} {f(row['last_ms'], '8.3f')} "
            f"{f(row['rss_idle_mb'], '8.1f')} {f(row['rss_peak_mb'], '8.1f')} {f(row['rss_after_mb'], '8.1f')}"
        )
    s = summary["targets"]
    d, fl, gw = s["direct"], s["floor"], s["gateway"]

    def added(t: dict[str, Any], key: str) -> float:
        return float(t[key] - d[key])

    by_name = {t.name: t.results for t in targets}

    def paired(a: str, b: str, key: str) -> list[float]:
        """a/b in each round (or pair, for PAIRED targets against the gateway): the two ran seconds apart,
        on the machine as it was then."""
        a_key = f"{key}:{b}" if a == "gateway" and b in PAIRED else key
        b_key = f"{key}:{a}" if b == "gateway" and a in PAIRED else key
        return [x / y for x, y in zip(by_name[a][a_key], by_name[b][b_key], strict=True)]

    rounds = {f"rps{c}": paired("gateway", "floor", f"rps{c}") for c in (lo, hi)}
    ratios = {
        "added_p50": added(gw, "p50_ms") / added(fl, "p50_ms"),
        f"rps{lo}": statistics.median(rounds[f"rps{lo}"]),
        f"rps{hi}": statistics.median(rounds[f"rps{hi}"]),
        "added_last_byte": added(gw, "last_ms") / added(fl, "last_ms"),
        "cpu_per_req": gw["cpu_us_per_req"] / fl["cpu_us_per_req"],
    }
    summary["ratios"] = ratios
    lines.append("")
    lines.append("added by each hop (target minus direct, p50):")
    for name in ("floor", "gateway", "quiet", "limited", "redis+pg"):
        if name in s and s[name]["p50_ms"] is not None:
            t = s[name]
            lines.append(f"  {name:<8} latency +{added(t, 'p50_ms'):.3f} ms   first byte +{added(t, 'ttfb_ms'):.3f} ms"
                         f"   last byte of 40-chunk stream +{added(t, 'last_ms'):.3f} ms")
    lines.append("")
    lines.append("gateway / floor (targets in brackets):")
    lines.append(f"  added p50 latency      {ratios['added_p50']:5.2f}x  [<= 1.5x]  {_ok(ratios['added_p50'] <= 1.5)}")
    for c in (lo, hi):
        each = rounds[f"rps{c}"]
        lines.append(f"  requests/s at {c:<3}      {ratios[f'rps{c}']:5.2f}x  [>= 0.8x]  {_ok(ratios[f'rps{c}'] >= 0.8)}"
                     f"   median of {len(each)} rounds, {min(each):.2f}-{max(each):.2f}x")
    lines.append(f"  added last byte        {ratios['added_last_byte']:5.2f}x  [<= 1.5x]  {_ok(ratios['added_last_byte'] <= 1.5)}")
    lines.append(f"  CPU per request        {ratios['cpu_per_req']:5.2f}x")
    if gw.get("last_translated_ms") is not None:
        translated = (gw["last_translated_ms"] - d["last_ms"]) / added(gw, "last_ms")
        ratios["translated_vs_passthrough"] = translated
        lines.append(f"  Anthropic client on the chat mock: last byte +{gw['last_translated_ms'] - d['last_ms']:.3f} ms, "
                     f"{translated:.2f}x what passthrough adds [<= 1.5x] {_ok(translated <= 1.5)}")
    if gw.get("rss_peak_mb") is not None:
        grow = gw["rss_after_mb"] - gw["rss_idle_mb"]
        lines.append(f"  gateway RSS, {scale.open_streams} open   {gw['rss_peak_mb']:5.1f} MB [< 150 MB] {_ok(gw['rss_peak_mb'] < 150)}"
                     f"   after close {grow:+.1f} MB vs idle [< 20 MB] {_ok(grow < 20)}")
        summary["ratios"]["rss_after_minus_idle_mb"] = grow
    lines.append("")
    lines.append("gateway / direct:")
    lines.append(f"  requests/s at {lo}: {gw[f'rps{lo}'] / d[f'rps{lo}']:.2f}x, at {hi}: {gw[f'rps{hi}'] / d[f'rps{hi}']:.2f}x")
    if "quiet" in s:
        q = s["quiet"]
        lines.append("")
        lines.append("access log (info vs warning): "
                     f"added p50 {added(gw, 'p50_ms'):.3f} vs {added(q, 'p50_ms'):.3f} ms, "
                     f"rps@{lo} {gw[f'rps{lo}']:.0f} vs {q[f'rps{lo}']:.0f}, "
                     f"CPU/request {gw['cpu_us_per_req']:.0f} vs {q['cpu_us_per_req']:.0f} us")
    def gw_cpu(name: str) -> float:
        """The gateway's CPU a request in its runs paired with `name` (PAIRED): its like for like."""
        return float(statistics.median(by_name["gateway"][f"cpu_us{lo}:{name}"] + by_name["gateway"][f"cpu_us{hi}:{name}"]))

    if "no metrics" in s:
        each_lo, each_hi = paired("gateway", "no metrics", f"rps{lo}"), paired("gateway", "no metrics", f"rps{hi}")
        m_lo, m_hi = statistics.median(each_lo), statistics.median(each_hi)
        summary["ratios"]["metrics_rps_lo"], summary["ratios"]["metrics_rps_hi"] = m_lo, m_hi
        lines.append(f"metrics on / off: requests/s at {lo}: {m_lo:.2f}x, at {hi}: {m_hi:.2f}x [>= 0.95x] "
                     f"{_ok(min(m_lo, m_hi) >= 0.95)}; CPU/request {gw_cpu('no metrics'):.0f} vs "
                     f"{s['no metrics']['cpu_us_per_req']:.0f} us; quartiles {quartiles(each_lo)} and {quartiles(each_hi)}")
    for name, label in (("limited", "rpm, tpm and budget on the key / none"), ("10k tasks", "10,000 tasks polled / none")):
        if name in s:
            each_lo, each_hi = paired(name, "gateway", f"rps{lo}"), paired(name, "gateway", f"rps{hi}")
            r_lo, r_hi = statistics.median(each_lo), statistics.median(each_hi)
            want = 0.95 if name == "limited" else 0.9
            summary["ratios"][f"{name.replace(' ', '_')}_rps_lo"], summary["ratios"][f"{name.replace(' ', '_')}_rps_hi"] = r_lo, r_hi
            lines.append(f"{label}: requests/s at {lo}: {r_lo:.2f}x, at {hi}: {r_hi:.2f}x [>= {want}x] "
                         f"{_ok(min(r_lo, r_hi) >= want)}; CPU/request {s[name]['cpu_us_per_req']:.0f} vs "
                         f"{gw_cpu(name):.0f} us; medians of {len(each_lo)} and {len(each_hi)} pairs, "
                         f"quartiles {quartiles(each_lo)} and {quartiles(each_hi)}")
    for name, base, label, want in (("redis+pg", "gateway", "Redis and PostgreSQL / embedded (SQLite)", 0.8),
                                    ("2 replicas", "redis+pg", "2 replicas / 1 on Redis and PostgreSQL", 1.0)):
        if name in s:
            r_lo = statistics.median(paired(name, base, f"rps{lo}"))
            r_hi = statistics.median(paired(name, base, f"rps{hi}"))
            key = "redis_pg" if name == "redis+pg" else "replicas2"
            summary["ratios"][f"{key}_rps_lo"], summary["ratios"][f"{key}_rps_hi"] = r_lo, r_hi
            good = min(r_lo, r_hi) >= want if name == "redis+pg" else min(r_lo, r_hi) > want
            lines.append(f"{label}: requests/s at {lo}: {r_lo:.2f}x, at {hi}: {r_hi:.2f}x "
                         f"[{'>=' if name == 'redis+pg' else '>'} {want}x] {_ok(good)}; CPU/request "
                         f"{s[name]['cpu_us_per_req']:.0f} vs {s[base]['cpu_us_per_req']:.0f} us")
    for name in ("redis+pg", "2 replicas"):
        if name in s and "redis_cpu_us_per_req" in s[name]:
            lines.append(f"  Redis for {name}: {s[name]['redis_cpu_us_per_req']:.0f} us of its CPU and "
                         f"{s[name]['redis_commands_per_req']:.1f} commands (those the scripts run included) a request")
    if scale_skipped:
        lines.append(f"redis+pg, 2 replicas: skipped ({scale_skipped})")
    if "2 workers" in s:
        w_lo = statistics.median(paired("2 workers", "gateway", f"rps{lo}"))
        w_hi = statistics.median(paired("2 workers", "gateway", f"rps{hi}"))
        summary["ratios"]["workers2_rps_lo"], summary["ratios"]["workers2_rps_hi"] = w_lo, w_hi
        lines.append(f"2 workers / 1: requests/s at {lo}: {w_lo:.2f}x, at {hi}: {w_hi:.2f}x "
                     "(the load generator and mock share the same 2 cores)")
    lines.append("")
    lines.append(f"usage writer: {writer_rps:,.0f} rows/s committed (batched aiosqlite, WAL)")
    for name, (have, want) in rows.items():
        lines.append(f"usage rows, {name}: {have} rows for {want} answered requests {_ok(have == want)}")
    errors = {t.name: t.results.get("errors", 0) for t in targets if t.results.get("errors")}
    if errors:
        lines.append(f"non-200 answers: {errors}")
    print("\n".join(lines), flush=True)
    return summary


def quartiles(values: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{q1:.2f}-{q3:.2f}x"


def _ok(good: bool) -> str:
    return "ok" if good else "MISSED"


async def bench(
    scale: Scale, *, workers: bool, quiet: bool, metrics_off: bool = False, limited: bool = True, tasks: bool = True,
    shared: bool = True,
) -> dict[str, Any]:
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    scale_skipped = await unreachable() if shared else "--no-scale"
    if scale_skipped and shared:
        say(f"redis+pg and 2 replicas skipped: {scale_skipped}")
    async with contextlib.AsyncExitStack() as state:  # Redis prefixes and schemas: removed once the gateways stop
        tmp = Path(state.enter_context(tempfile.TemporaryDirectory(prefix="gateway-bench-")))
        mock_port, floor_port = free_port(), free_port()
        procs: list[asyncio.subprocess.Process] = []
        targets: list[Target] = []
        load_proc: asyncio.subprocess.Process | None = None
        try:
            mock = await spawn("-m", "tests.bench.mock", "--port", str(mock_port))
            procs.append(mock)
            floor = await spawn("-m", "tests.bench.floor", "--port", str(floor_port),
                                "--upstream", f"http://127.0.0.1:{mock_port}")
            procs.append(floor)
            targets = [Target("direct", mock_port, mock), Target("floor", floor_port, floor)]
            targets.append(await start_gateway(tmp, "gateway", mock_port))
            if quiet:
                targets.append(await start_gateway(tmp, "quiet", mock_port, level="warning"))
            if metrics_off:
                targets.append(await start_gateway(tmp, "no metrics", mock_port, env={"GATEWAY_METRICS": "off"}))
            if workers:
                targets.append(await start_gateway(tmp, "2 workers", mock_port, workers=2))
            if limited:
                gw = targets[2]
                targets.append(Target("limited", gw.port, gw.proc, headers={"Authorization": f"Bearer {LIMITED_KEY}"}, host=gw))
            if tasks:
                targets.append(await start_gateway(tmp, "10k tasks", mock_port, tasks=TASKS))
            if not scale_skipped:
                # The limits make every admission a Redis round trip; the key without them asks Redis nothing.
                one = await state.enter_async_context(shared_state("redispg"))
                targets.append(await start_gateway(tmp, "redis+pg", mock_port, key=LIMITS, shared=one))
                two = await state.enter_async_context(shared_state("replicas"))
                targets.append(await start_gateway(tmp, "2 replicas", mock_port, key=LIMITS, shared=two, replicas=2))
            procs.extend(p for t in targets[2:] if t.host is None for p in t.procs)
            for t in targets:
                for port in t.ports:
                    await asyncio.to_thread(wait_port, port)
            load_proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.bench.load", cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            load = LoadGen(load_proc)
            say("targets up: " + ", ".join(f"{t.name} pid {t.proc.pid} rss {rss_mb(t.proc.pid):.0f} MB" for t in targets))
            await measure(targets, load, scale, say)
            assert load_proc.stdin is not None
            load_proc.stdin.write(b'{"op": "quit"}\n')
            await load_proc.wait()
            say("usage writer")
            rows: dict[str, tuple[int, int]] = {}
            for t in targets[2:]:
                if t.host is not None:
                    continue  # its rows are its host's
                for p in t.procs:
                    code = await stop(p)
                    if code != 0:
                        say(f"  {t.name} (pid {p.pid}) exited with {code}")
                # every answered request has its row, those of the targets it hosts included
                want = sum(u.sent + u.results.get("opened", 0) for u in targets if u is t or u.host is t)
                if t.shared is not None:
                    rows[t.name] = (await t.shared.rows(), want)
                else:
                    assert t.db is not None
                    rows[t.name] = (count_rows(t.db), want)
            writer_rps = await writer_rate(tmp, scale.writer_rows)
        finally:
            if load_proc is not None and load_proc.returncode is None:
                load_proc.kill()
                await load_proc.wait()
            for p in procs:
                await stop(p)
        say("done")
        return report(targets, scale, writer_rps, rows, scale_skipped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the bench runs, measures nothing")
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker gateway")
    parser.add_argument("--no-quiet", action="store_true", help="skip the gateway with the access log off")
    parser.add_argument("--no-metrics-off", action="store_true", help="skip the gateway with metrics off")
    parser.add_argument("--no-limited", action="store_true", help="skip the gateway with limits on the bench key")
    parser.add_argument("--no-tasks", action="store_true", help="skip the gateway polling 10,000 tasks")
    parser.add_argument("--no-scale", action="store_true",
                        help="skip the gateways on Redis and PostgreSQL (redis+pg, 2 replicas)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    raise_nofile()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    summary = use_uvloop(bench(QUICK if args.quick else FULL, workers=not args.no_workers, quiet=not args.no_quiet,
                                 metrics_off=not args.no_metrics_off, limited=not args.no_limited,
                                 tasks=not args.no_tasks, shared=not args.no_scale))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return 0
