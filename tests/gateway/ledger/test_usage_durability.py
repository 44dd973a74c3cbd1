"""Usage rows survive a database that cannot be written: spooled to JSONL, replayed, never dropped."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.ledger import spool
from gateway.ledger import usage as usage_module
from gateway.ledger.usage import UsageRow, UsageWriter
from gateway.state import SERVICES, Runtime
from tests.conftest import KEYS, Gateway, channel, make_config
from tests.faultkit import eventually, post
from tests.procs import GatewayProcess

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def start(tmp_path):
    """Gateways whose usage writer waits only briefly on a locked database."""
    started: list[Gateway] = []

    async def make(raw, **writer_kw):
        config = make_config(raw, tmp_path)
        runtime = Runtime(config)
        writer = UsageWriter(config.database, **{"busy_timeout_s": 0.05, "flush_interval_s": 0.05, "retry_s": 0.0, **writer_kw})
        server = TestServer(create_app(runtime, usage=writer), host="127.0.0.1")
        await server.start_server()
        gw = Gateway(server, runtime, Path(config.database), [])
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.server.close()


def db_rows(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT request_id, status FROM usage ORDER BY id").fetchall()
    finally:
        db.close()


def spool_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def test_locked_database_spools_then_replays_when_it_recovers(vendor, start, tmp_path):
    gw = await start({"keys": KEYS, "channels": [channel("a", vendor)]})
    writer_spool = tmp_path / "usage.spool.jsonl"
    locker = sqlite3.connect(gw.db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with structlog.testing.capture_logs() as logs:
        ids = []
        for i in range(5):
            status, _, headers = await post(gw, BODY, headers={"X-Request-Id": f"req-{i}"})
            assert status == 200
            ids.append(headers["X-Request-Id"])
        await gw.server.app[SERVICES].usage.flush()
        assert [r["request_id"] for r in spool_lines(writer_spool)] == ids
        locker.execute("ROLLBACK")
        status, _, _ = await post(gw, BODY, headers={"X-Request-Id": "req-after"})
        rows = await gw.rows()
    locker.close()
    assert [r["request_id"] for r in rows] == [*ids, "req-after"]  # nothing lost, nothing twice, in order
    assert not writer_spool.exists()
    events = list(dict.fromkeys(e["event"] for e in logs if e["event"].startswith("usage_")))
    assert events == ["usage_db_write_failed", "usage_rows_spooled", "usage_db_recovered", "usage_spool_replayed"]


async def test_unwritable_database_at_start_then_replayed_on_next_start(vendor, start, tmp_path):
    db_path = tmp_path / "usage.db"
    db_path.mkdir()  # not a file: sqlite cannot open it, as with a missing mount or a bad path
    raw = {"keys": KEYS, "channels": [channel("a", vendor)]}
    gw = await start(raw)  # the gateway still serves
    for i in range(3):
        status, _, _ = await post(gw, BODY, headers={"X-Request-Id": f"req-{i}"})
        assert status == 200
    status, body, _ = await post(gw, None, path="/readyz", method="GET")
    assert status == 503 and b"not writable" in body
    await gw.server.close()  # shutdown flushes: into the spool
    assert [r["request_id"] for r in spool_lines(tmp_path / "usage.spool.jsonl")] == ["req-0", "req-1", "req-2"]

    db_path.rmdir()  # the operator fixes it
    gw2 = await start(raw)
    assert [r["request_id"] for r in await gw2.rows()] == ["req-0", "req-1", "req-2"]
    assert not (tmp_path / "usage.spool.jsonl").exists()


async def test_when_even_the_spool_fails_rows_go_to_the_log(vendor, start, tmp_path):
    (tmp_path / "usage.db").mkdir()
    (tmp_path / "usage.spool.jsonl").mkdir()
    gw = await start({"keys": KEYS, "channels": [channel("a", vendor)]})
    with structlog.testing.capture_logs() as logs:
        status, _, _ = await post(gw, BODY, headers={"X-Request-Id": "last-resort"})
        assert status == 200
        await gw.server.close()
    [unsaved] = [e for e in logs if e["event"] == "usage_row_unsaved"]
    assert unsaved["log_level"] == "critical"
    assert unsaved["row"]["request_id"] == "last-resort" and unsaved["row"]["status"] == 200


async def test_batches_of_any_size_are_written_whole_and_in_order(tmp_path):
    # Batches go in as multi-row INSERTs of a power of two rows each: every size must add up.
    db_path = tmp_path / "usage.db"
    writer = UsageWriter(str(db_path), batch_size=700)
    await writer.start()
    expected = []
    for size in (1, 3, 700, 1023, 6):
        for i in range(size):
            row = UsageRow(request_id=f"{size}-{i}", ts=1.0 + i, status=200, prompt_tokens=i, cost=i / 7, error=None if i % 2 else "e")
            writer.record(row)
            expected.append((row.request_id, row.ts, row.prompt_tokens, row.cost, row.error))
        await writer.flush()
    await writer.close()
    db = sqlite3.connect(db_path)
    try:
        got = db.execute("SELECT request_id, ts, prompt_tokens, cost, error FROM usage ORDER BY id").fetchall()
    finally:
        db.close()
    assert got == expected


async def test_replay_skips_rows_already_in_the_table_and_logs_bad_lines(tmp_path):
    db_path = tmp_path / "usage.db"
    first = UsageWriter(str(db_path))
    await first.start()
    first.record(UsageRow(request_id="a", ts=1.5, status=200))
    await first.close()
    lines = [
        orjson.dumps({"request_id": "a", "ts": 1.5, "status": 200}),  # written before a replay was cut short
        b"{not json",
        orjson.dumps({"request_id": "b", "ts": 2.25, "status": 502, "error": "x", "unknown_column": 1}),
    ]
    (tmp_path / "usage.spool.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    writer = UsageWriter(str(db_path))
    with structlog.testing.capture_logs() as logs:
        await writer.start()
    await writer.close()
    assert db_rows(db_path) == [("a", 200), ("b", 502)]
    [bad] = [e for e in logs if e["event"] == "usage_spool_bad_line"]
    assert bad["text"] == "{not json" and bad["line"] == 2


def test_spool_appends_racing_a_replay_lose_nothing(tmp_path):
    path = tmp_path / "g.spool.jsonl"
    n = 400
    appended = threading.Event()

    def appender() -> None:
        for i in range(n):
            spool.append(path, b"%d\n" % i)
        appended.set()

    seen: list[int] = []
    t = threading.Thread(target=appender)
    t.start()
    while True:
        finished = appended.is_set()
        for claimed_path in spool.claim(path):
            claim = spool.Claim(claimed_path)
            data = claim.read()
            if data is not None:
                seen.extend(int(x) for x in data.split())
                claim.release(True)
        if finished:
            break
    t.join()
    assert sorted(seen) == list(range(n))


async def test_real_process_spools_on_sigterm_and_replays_on_restart(vendor, tmp_path):
    db_path = tmp_path / "usage.db"
    db_path.mkdir()
    config = {"keys": [{"name": "app1", "key": "k-123"}], "channels": [channel("a", vendor)]}
    gw = await GatewayProcess(tmp_path, config).start(probe="/healthz")
    try:
        for i in range(4):
            status, _, _ = await post(gw, BODY, headers={"Authorization": "Bearer k-123", "X-Request-Id": f"p-{i}"})
            assert status == 200
        assert await gw.stop() == 0
        assert len(spool_lines(tmp_path / "usage.spool.jsonl")) == 4
        shutil.rmtree(db_path)
        gw = await GatewayProcess(tmp_path, config).start()
        assert await gw.stop() == 0
    finally:
        gw.kill()
    assert db_rows(db_path) == [(f"p-{i}", 200) for i in range(4)]


async def test_while_locked_rows_are_spooled_as_fast_as_they_come(vendor, start, tmp_path):
    # A one-second busy timeout and batches of 20: a writer that waited out the timeout for every batch
    # would spool 20 rows a second and keep the rest in memory, where a crash loses them.
    gw = await start({"keys": KEYS, "channels": [channel("a", vendor)]}, busy_timeout_s=1.0, batch_size=20, retry_s=5.0)
    locker = sqlite3.connect(gw.db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        await asyncio.gather(*(post(gw, BODY) for _ in range(200)))
        spool = tmp_path / "usage.spool.jsonl"
        await eventually(lambda: len(spool_lines(spool)) == 200, timeout=3.0, what="all 200 rows in the spool")
    finally:
        locker.execute("ROLLBACK")
        locker.close()


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr to make the database read-only for root too")
async def test_a_database_read_only_at_start_recovers_without_a_restart(vendor, start, tmp_path):
    db_path = tmp_path / "usage.db"
    sqlite3.connect(db_path).close()
    gw0 = await start({"keys": KEYS, "channels": [channel("a", vendor)]})  # creates the table, in WAL mode
    await gw0.server.close()
    if (await asyncio.to_thread(subprocess.run, ["chattr", "+i", str(db_path)], capture_output=True)).returncode:
        pytest.skip("chattr +i is not permitted here")
    try:
        gw = await start({"keys": KEYS, "channels": [channel("a", vendor)]})
        status, _, _ = await post(gw, BODY, headers={"X-Request-Id": "while-read-only"})
        assert status == 200
        status, _, _ = await post(gw, None, path="/readyz", method="GET")
        assert status == 503  # readiness tells the truth: rows cannot go into the table
        await gw.server.app[SERVICES].usage.flush()
        assert [r["request_id"] for r in spool_lines(tmp_path / "usage.spool.jsonl")] == ["while-read-only"]
    finally:
        await asyncio.to_thread(subprocess.run, ["chattr", "-i", str(db_path)], check=True)  # the operator fixes it
    status, _, _ = await post(gw, None, path="/readyz", method="GET")
    assert status == 200  # no restart
    assert [r for r, _ in db_rows(db_path)] == ["while-read-only"]
    assert not (tmp_path / "usage.spool.jsonl").exists()


async def test_rows_wait_in_memory_while_the_disk_is_full_and_go_out_when_it_frees(vendor, start, tmp_path, monkeypatch):
    # Neither the database nor the spool can be written (both stand in for a full disk as directories).
    monkeypatch.setattr(usage_module, "MAX_HELD", 4)
    (tmp_path / "usage.db").mkdir()
    (tmp_path / "usage.spool.jsonl").mkdir()
    gw = await start({"keys": KEYS, "channels": [channel("a", vendor)]})
    with structlog.testing.capture_logs() as logs:
        for i in range(6):
            status, _, _ = await post(gw, BODY, headers={"X-Request-Id": f"req-{i}"})
            assert status == 200
        await gw.server.app[SERVICES].usage.flush()
        status, body, _ = await post(gw, None, path="/readyz", method="GET")
    ready = orjson.loads(body)
    assert status == 503 and (ready["usage_rows_held"], ready["usage_rows_dropped"]) == (4, 2)  # the bound, then counted
    lost = [e["row"]["request_id"] for e in logs if e["event"] == "usage_row_unsaved"]
    assert lost == ["req-4", "req-5"]  # each dropped row is still in the log, for --replay-log

    (tmp_path / "usage.spool.jsonl").rmdir()  # room on the disk again
    status, _, _ = await post(gw, None, path="/readyz", method="GET")
    assert [r["request_id"] for r in spool_lines(tmp_path / "usage.spool.jsonl")] == [f"req-{i}" for i in range(4)]
    (tmp_path / "usage.db").rmdir()
    status, _, _ = await post(gw, None, path="/readyz", method="GET")
    assert status == 200
    assert [r for r, _ in db_rows(tmp_path / "usage.db")][:4] == [f"req-{i}" for i in range(4)]


async def test_the_spool_can_live_on_another_disk(vendor, gateway_factory, tmp_path):
    (tmp_path / "usage.db").mkdir()  # the database's disk is out
    elsewhere = tmp_path / "other-disk" / "rows.jsonl"
    elsewhere.parent.mkdir()
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)], "spool": str(elsewhere)})
    status, _, _ = await post(gw, BODY, headers={"X-Request-Id": "kept-elsewhere"})
    assert status == 200
    await gw.server.app[SERVICES].usage.flush()
    assert [r["request_id"] for r in spool_lines(elsewhere)] == ["kept-elsewhere"]
    assert not (tmp_path / "usage.spool.jsonl").exists()


async def test_a_full_batch_is_written_at_once_not_after_the_flush_interval(tmp_path):
    # What a SIGKILL can lose is what waits in memory: a batch's worth never waits out the interval.
    writer = UsageWriter(str(tmp_path / "usage.db"), batch_size=5, flush_interval_s=30.0)
    await writer.start()
    try:
        writer.record(UsageRow("r0", 1.0))
        await asyncio.sleep(0.05)  # the writer is now waiting out its interval for more
        for i in range(1, 5):
            writer.record(UsageRow(f"r{i}", 1.0))
        await eventually(lambda: len(db_rows(tmp_path / "usage.db")) == 5, timeout=5.0, what="the batch committed")
    finally:
        await writer.close()
