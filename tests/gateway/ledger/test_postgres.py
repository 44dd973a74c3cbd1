"""The usage table on a real PostgreSQL server: rows written and read back as from SQLite, idempotent
replays, the server going away and coming back (a TCP proxy cut, never the machine's server stopped),
two replicas on one database, schema upgrades, and the real app (chat, an async task, the key holder's
views, `gateway usage` and `gateway keys`) with `database: postgresql://...`.

Each test runs in a schema of its own (tests/pgstate.py); without a server they skip, saying why."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
import yaml

from gateway.billing import startup
from gateway.ledger import pg_schema
from gateway.ledger.reader import RowQuery, SqliteUsageReader
from gateway.ledger.sink import UsageRow
from gateway.ledger.usage import UsageWriter
from gateway.state import SERVICES
from gateway.tasks.model import Task
from tests.conftest import channel, make_config
from tests.faketasks import FakeTasks
from tests.faultkit import post
from tests.gateway.test_cli import run
from tests.pgstate import Pg, PgProxy, fresh_schema  # skips the module without asyncpg

pg_usage = pytest.importorskip("gateway.ledger.pg_usage")
PgUsageReader, PgUsageWriter, insert_rows = pg_usage.PgUsageReader, pg_usage.PgUsageWriter, pg_usage.insert_rows
PgTaskStore = pytest.importorskip("gateway.tasks.pg_store").PgTaskStore

DAY = 86400


def day(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d"))


@pytest.fixture
async def pg() -> AsyncIterator[Pg]:
    async with fresh_schema() as pg:
        yield pg


def spool_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def made_from_a_url(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith("postgres")]


def sample_rows() -> list[UsageRow]:
    """Rows over three UTC days, two keys and none, several models and endpoints; costs exact in binary."""
    rows = []
    for i in range(60):
        rows.append(UsageRow(
            request_id=f"r{i}", ts=day("2025-03-01") + i * 3600.5, key_name=("app1", "app2", None)[i % 3],
            platform="openai", endpoint=("chat/completions", "embeddings", "usage", None)[i % 4],
            model=("gpt-4o", "Zeta", "alpha", None)[i % 4], upstream_model="gpt-4o-2024", channel="main",
            stream=i % 2, status=(200, 200, 429, 502)[i % 4], prompt_tokens=i, completion_tokens=2 * i,
            total_tokens=3 * i, cached_tokens=i // 2, latency_ms=10.0 + i, ttft_ms=None if i % 5 else 1.5,
            attempts=1 + i % 2, cost=None if i % 7 == 0 else i / 4, error="boom" if i % 4 == 3 else None,
            images=i % 3, audio_seconds=i / 2, resolution="720P" if i % 6 == 0 else None,
        ))  # fmt: skip
    return rows


async def write_pg(url: str, rows: list[UsageRow], spool: Path, **kw: Any) -> PgUsageWriter:
    writer = PgUsageWriter(url, spool_path=str(spool), **kw)
    await writer.start()
    for r in rows:
        writer.record(r)
    await writer.close()
    return writer


async def count(pg: Pg, where: str = "true") -> int:
    return int((await pg.fetch(f"SELECT count(*) FROM usage WHERE {where}"))[0][0])


async def test_rows_read_back_as_from_sqlite(pg: Pg, tmp_path: Path):
    rows = sample_rows()
    await write_pg(pg.url, rows, tmp_path / "pg.spool.jsonl")
    sqlite_writer = UsageWriter(str(tmp_path / "u.db"))
    await sqlite_writer.start()
    for r in rows:
        sqlite_writer.record(r)
    await sqlite_writer.close()
    assert not (tmp_path / "pg.spool.jsonl").exists()

    lite = SqliteUsageReader(str(tmp_path / "u.db"))
    pgr = PgUsageReader(pg.url, pooled=True)
    plain = PgUsageReader(pg.url)  # a connection per read
    try:
        since = {"app1": None, "app2": day("2025-03-02") + 0.5, "nobody": None}
        assert await pgr.spent_by_key(since) == await lite.spent_by_key(since) == await plain.spent_by_key(since)
        assert (await pgr.spent_by_key(since))["nobody"] == 0.0 and await pgr.spent_by_key({}) == {}
        for key, start, end in [("app1", None, None), (None, None, None), ("app2", day("2025-03-02"), day("2025-03-03"))]:
            assert await pgr.spent(key, start, end) == await lite.spent(key, start, end)
        queries = [
            RowQuery("app1"),
            RowQuery(None),
            RowQuery("app2", start=day("2025-03-01") + 7200, end=day("2025-03-02") + 3600, model="alpha"),
            RowQuery("app1", skip_endpoints=("usage", "embeddings")),
            RowQuery("nobody"),
        ]
        for q in queries:
            for offset, limit in [(0, 5), (3, 4), (0, 1000), (500, 5), (0, 0)]:
                got = await pgr.rows(q, offset=offset, limit=limit)
                assert got == await lite.rows(q, offset=offset, limit=limit), (q, offset, limit)
        assert (await pgr.rows(RowQuery("app1"), offset=0, limit=100)).total == 20
        for key, start, end in [("app1", None, None), (None, day("2025-03-02"), None), ("app2", None, day("2025-03-03"))]:
            got_days = await pgr.daily_costs(key, start, end)
            assert got_days == await lite.daily_costs(key, start, end)
        assert [d.model for d in await pgr.daily_costs("app1", None, day("2025-03-01") + DAY)][:2] == ["Zeta", "alpha"]
    finally:
        await pgr.close()


async def test_reads_before_the_table_exists_are_empty(pg: Pg):
    reader = PgUsageReader(pg.url, pooled=True)
    try:
        assert await reader.spent_by_key({"app1": None}) == {"app1": 0.0}
        assert await reader.spent("app1", None) == 0.0
        assert (await reader.rows(RowQuery("app1"), offset=0, limit=10)).total == 0
        assert await reader.daily_costs("app1", None, None) == []
    finally:
        await reader.close()


async def test_the_same_rows_twice_go_in_once(pg: Pg, tmp_path: Path):
    rows = sample_rows()[:20]
    spool = tmp_path / "s.jsonl"
    await write_pg(pg.url, rows, spool)
    await write_pg(pg.url, rows, spool)  # a batch written again (its commit was cut off, say)
    assert await count(pg) == 20
    # A spool holding rows already in the table (a replay cut short) and new ones, some twice.
    extra = [UsageRow(request_id=f"x{i}", ts=5.0 + i, status=200) for i in range(5)]
    spool.write_bytes(b"".join(orjson.dumps(dataclasses.asdict(r)) + b"\n" for r in [*rows, *extra, *extra]))
    with structlog.testing.capture_logs() as logs:
        await write_pg(pg.url, [], spool)
    assert await count(pg) == 25 and not spool.exists()
    assert [e["rows"] for e in logs if e["event"] == "usage_spool_replayed"] == [30]
    # The same request id at another time is another request; a task's row is kept apart from its request's.
    conn = pg.admin
    assert await insert_rows(conn, [UsageRow(request_id="r0", ts=1.25)]) == 1
    task_row = dataclasses.replace(rows[0], task_id="task_1")
    assert await insert_rows(conn, [task_row]) == 1  # same request_id and ts as r0's row, but a task's
    assert await insert_rows(conn, [dataclasses.replace(task_row, ts=9.0, cost=99.0)]) == 0  # one row per task
    assert await count(pg, "task_id = 'task_1'") == 1


async def test_batches_of_any_size_in_order(pg: Pg, tmp_path: Path):
    expected = []
    writer = PgUsageWriter(pg.url, spool_path=str(tmp_path / "s.jsonl"), batch_size=700)
    await writer.start()
    for size in (1, 3, 700, 1023, 6):
        for i in range(size):
            row = UsageRow(request_id=f"{size}-{i}", ts=1.0 + i, status=200, prompt_tokens=i, cost=i / 7,
                           error=None if i % 2 else "e")  # fmt: skip
            writer.record(row)
            expected.append((row.request_id, row.ts, row.prompt_tokens, row.cost, row.error))
        await writer.flush()
    await writer.close()
    assert await pg.fetch("SELECT request_id, ts, prompt_tokens, cost, error FROM usage ORDER BY id") == expected
    assert writer.written == len(expected) and writer.spooled == 0


async def test_rows_without_the_batch_table_go_in_by_statements(pg: Pg, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pg_usage, "MAX_ROWS_PER_INSERT", 7)  # several statements, in one transaction
    await pg_schema.migrate(pg.admin)
    rows = [UsageRow(request_id=f"r{i}", ts=float(i), model="m\x00" if i == 20 else "m") for i in range(23)]
    assert await insert_rows(pg.admin, rows) == 23
    assert await insert_rows(pg.admin, [*rows, UsageRow(request_id="new", ts=1.0)]) == 1
    assert await pg.fetch("SELECT count(*), count(*) FILTER (WHERE model = 'm\ufffd') FROM usage") == [(24, 1)]


async def test_values_postgres_refuses_are_cleaned_not_spooled(pg: Pg, tmp_path: Path):
    odd = UsageRow(request_id="odd", ts=1.0, model="gpt\x00-4o", error="bad \ud800 half", prompt_tokens=1 << 70)
    fine = UsageRow(request_id="fine", ts=2.0, model="gpt-4o", prompt_tokens=5)
    writer = await write_pg(pg.url, [fine, odd], tmp_path / "s.jsonl")
    assert writer.spooled == 0 and not (tmp_path / "s.jsonl").exists()
    assert await pg.fetch("SELECT request_id, model, error, prompt_tokens FROM usage ORDER BY id") == [
        ("fine", "gpt-4o", None, 5),
        ("odd", "gpt\ufffd-4o", "bad ? half", (1 << 63) - 1),
    ]


async def test_postgres_down_rows_spooled_then_replayed_none_lost_none_twice(pg: Pg, tmp_path: Path):
    proxy = await PgProxy().start()
    spool = tmp_path / "s.jsonl"
    password = "pw-never-logged-7f3a"
    url = pg.via(proxy.port, password)  # trust auth: the password is carried, never asked for
    writer = PgUsageWriter(url, spool_path=str(spool), flush_interval_s=0.01, retry_s=0.05, max_retry_s=0.2)
    with structlog.testing.capture_logs() as logs:
        await writer.start()
        assert await writer.writable()
        for i in range(50):
            writer.record(UsageRow(request_id=f"before-{i}", ts=1000.0 + i, status=200))
        await writer.flush()
        await proxy.cut()  # the server goes away
        for i in range(50):
            writer.record(UsageRow(request_id=f"during-{i}", ts=2000.0 + i, status=200))
        await writer.flush()
        assert len(spool_lines(spool)) == 50 and not await writer.writable()
        for i in range(30):  # rows keep coming while it is down: each batch goes straight to the spool
            writer.record(UsageRow(request_id=f"still-{i}", ts=3000.0 + i, status=200))
        await writer.flush()
        assert len(spool_lines(spool)) == 80
        await proxy.restore()
        for _ in range(200):
            if await writer.writable():
                break
            await asyncio.sleep(0.02)
        assert await writer.writable()
        writer.record(UsageRow(request_id="after", ts=4000.0, status=200))
        await writer.close()
    await proxy.cut()
    ids = [r[0] for r in await pg.fetch("SELECT request_id FROM usage ORDER BY ts")]
    assert ids == [*(f"before-{i}" for i in range(50)), *(f"during-{i}" for i in range(50)),
                   *(f"still-{i}" for i in range(30)), "after"]  # fmt: skip
    assert not spool.exists() and writer.dropped == 0
    events = list(dict.fromkeys(e["event"] for e in logs if e["event"].startswith("usage_")))
    assert events == ["usage_db_write_failed", "usage_rows_spooled", "usage_db_recovered", "usage_spool_replayed"]
    assert password not in str(logs) and f"{pg.via(proxy.port, '***')}" in str(logs)  # masked, never the secret


async def test_unreachable_at_start_then_replayed(pg: Pg, tmp_path: Path):
    proxy = await PgProxy().start()
    await proxy.cut()  # nothing listens on the port yet
    spool = tmp_path / "s.jsonl"
    writer = PgUsageWriter(pg.via(proxy.port), spool_path=str(spool), flush_interval_s=0.01, retry_s=0.05)
    await writer.start()  # the gateway still starts: rows go to the spool
    for i in range(10):
        writer.record(UsageRow(request_id=f"r{i}", ts=float(i)))
    await writer.flush()
    assert not await writer.writable() and len(spool_lines(spool)) == 10
    await writer.close()
    await proxy.restore()
    await write_pg(pg.via(proxy.port), [], spool)  # the next start replays
    await proxy.cut()
    assert await count(pg) == 10 and not spool.exists()


async def test_the_password_never_reaches_a_log_line(tmp_path: Path):
    url = "postgresql://gw:hunter2-secret@127.0.0.1:1/gateway?sslmode=disable"  # nothing listens on port 1
    writer = PgUsageWriter(url, spool_path=str(tmp_path / "s.jsonl"), flush_interval_s=0.01)
    with structlog.testing.capture_logs() as logs:
        await writer.start()
        writer.record(UsageRow(request_id="r", ts=1.0))
        await writer.close()
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["usage_db_open_failed"]
    assert "hunter2" not in str(logs) and "gw:***@127.0.0.1:1" in str(logs)
    assert len(spool_lines(tmp_path / "s.jsonl")) == 1


async def test_two_replicas_on_one_database(pg: Pg, tmp_path: Path):
    # Both start at once on an empty schema (one creates the tables, the other waits on the lock), then
    # write side by side, each with its own spool.
    writers = [PgUsageWriter(pg.url, spool_path=str(tmp_path / f"s{n}.jsonl"), batch_size=64) for n in range(2)]
    stores = [PgTaskStore(pg.url) for _ in range(2)]
    await asyncio.gather(*(w.start() for w in writers), *(s.start() for s in stores))

    async def feed(n: int) -> None:
        for i in range(1000):
            writers[n].record(UsageRow(request_id=f"w{n}-{i}", ts=float(i), status=200))
            if i % 100 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(feed(0), feed(1))
    await asyncio.gather(*(w.close() for w in writers), *(s.close() for s in stores))
    assert await count(pg) == 2000
    assert await pg.fetch("SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, pg_schema.VERSION + 1)
    ]


async def test_upgrades_an_older_schema_and_refuses_a_newer_one(pg: Pg, tmp_path: Path):
    # Version 1 by hand: the usage table alone, with a row in it.
    await pg.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
    for statement in pg_schema.STEPS[0][1]:
        await pg.execute(statement)
    await pg.execute("INSERT INTO schema_version (version, name) VALUES (1, 'usage table')")
    await pg.execute("INSERT INTO usage (request_id, ts, cost) VALUES ('old', 1.0, 2.5)")
    assert (await pg.fetch("SELECT to_regclass('tasks')")) == [(None,)]

    with structlog.testing.capture_logs() as logs:
        store = PgTaskStore(pg.url)
        await store.start()
        await store.close()
    assert [(e["from_version"], e["to_version"]) for e in logs if e["event"] == "pg_schema_upgraded"] == [(1, pg_schema.VERSION)]
    assert [v for (v,) in await pg.fetch("SELECT version FROM schema_version ORDER BY version")] == list(range(1, pg_schema.VERSION + 1))
    assert await pg.fetch("SELECT request_id, cost FROM usage") == [("old", 2.5)]
    assert (await pg.fetch("SELECT count(*) FROM tasks")) == [(0,)]

    await pg.execute("INSERT INTO schema_version (version, name) VALUES ($1, 'from the future')", pg_schema.VERSION + 1)
    with pytest.raises(pg_schema.SchemaTooNew, match="newer"):
        await PgTaskStore(pg.url).start()
    writer = PgUsageWriter(pg.url, spool_path=str(tmp_path / "s.jsonl"))
    await writer.start()  # the writer does not write into a schema it does not know: rows are spooled
    writer.record(UsageRow(request_id="r", ts=1.0))
    await writer.close()
    assert len(spool_lines(tmp_path / "s.jsonl")) == 1


_PG_TYPE = {"int": "bigint", "float": "double precision", "str": "text", "dict": "text"}


def _expected(fields: tuple[dataclasses.Field[Any], ...]) -> dict[str, str]:
    return {f.name: _PG_TYPE[str(f.type).split("|")[0].split("[")[0].strip()] for f in fields}


async def test_the_tables_have_a_column_for_every_field(pg: Pg, tmp_path: Path):
    """A field added to UsageRow or Task needs a new step in gateway/ledger/pg_schema.py."""
    store = PgTaskStore(pg.url)
    await store.start()
    await store.close()
    sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2"
    usage = dict(await pg.fetch(sql, pg.schema, "usage"))
    assert usage == {"id": "bigint", **_expected(dataclasses.fields(UsageRow))}
    assert dict(await pg.fetch(sql, pg.schema, "tasks")) == _expected(dataclasses.fields(Task))


# -- the real app ----------------------------------------------------------------------------------

VENDOR_KEY = "vendor-key"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTasks]:
    async with FakeTasks(api_key=VENDOR_KEY, file_size=4096) as fake:
        yield fake


def app_config(pg: Pg, tmp_path: Path, vendor: Any, fake: FakeTasks) -> dict[str, Any]:
    return {
        "database": pg.url,
        "spool": str(tmp_path / "data" / "rows.jsonl"),  # the gateway's own files go beside it
        "keys": [{"name": "app1", "key": "test-key", "budget": 100}, {"name": "app2", "key": "key-two"}],
        "channels": [channel("main", vendor),
                     {"name": "wan", "provider": "dashscope", "base_url": fake.base_url("dashscope"),
                      "api_keys": [VENDOR_KEY], "models": ["wan2.6-t2v"]}],
        "models": {"gpt-4o": {"price": {"input": 1000000, "output": 1000000}},
                   "wan2.6-t2v": {"catalog": "t2v", "price": {"per_second": 0.5}}},
        "tasks": {"poll_interval_s": 0.05},
    }  # fmt: skip


async def test_the_app_on_postgres(pg: Pg, tmp_path: Path, gateway_factory, vendor, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path derived from the URL would show up here
    raw = app_config(pg, tmp_path, vendor, fake)
    gw = await gateway_factory(raw)
    services = gw.server.app[SERVICES]
    assert type(services.usage).__name__ == "PgUsageWriter" and type(services.reader).__name__ == "PgUsageReader"

    chat = await gw.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    chat_id = chat.headers["x-request-id"]
    status, created, headers = await post(gw, {"model": "wan2.6-t2v", "prompt": "a cat", "duration": 4},
                                          path="/v1/video/generations")  # fmt: skip
    assert status == 200, created
    task_id = orjson.loads(created)["id"]
    for _ in range(200):
        status, body, _ = await post(gw, None, path=f"/v1/tasks/{task_id}", method="GET")
        if orjson.loads(body)["status"] in ("SUCCEEDED", "FAILED"):
            break
        await asyncio.sleep(0.05)
    assert orjson.loads(body)["status"] == "SUCCEEDED"
    await services.usage.flush()

    rows = await pg.fetch("SELECT request_id, key_name, model, status, cost, task_id FROM usage WHERE task_id IS NOT NULL OR endpoint = 'chat/completions' ORDER BY id")
    assert rows[0][:4] == (chat_id, "app1", "gpt-4o", 200) and rows[0][4] > 0 and rows[0][5] is None
    assert rows[1][1:4] == ("app1", "wan2.6-t2v", 200) and rows[1][5] == task_id and rows[1][4] > 0
    assert rows[1][0] == headers["X-Request-Id"]  # the task's row carries its submitting request's id
    assert len(rows) == 2
    assert await pg.fetch("SELECT status, billing FROM tasks WHERE id = $1", task_id) == [("SUCCEEDED", "billed")]
    spent = rows[0][4] + rows[1][4]

    # The key holder's views read PostgreSQL.
    status, body, _ = await post(gw, None, path="/v1/usage?pagerows=50", method="GET")
    page = orjson.loads(body)
    assert status == 200 and {chat_id, headers["X-Request-Id"]} <= {r["request_id"] for r in page["data"]}
    assert any(r["task_id"] == task_id for r in page["data"])
    status, body, _ = await post(gw, None, path="/v1/balance", method="GET")
    assert orjson.loads(body)["spent"] == pytest.approx(spent)
    status, body, _ = await post(gw, None, path="/v1/usage", method="GET", headers={"Authorization": "Bearer key-two"})
    assert orjson.loads(body)["total"] == 0  # another key's rows stay its own
    status, _, _ = await post(gw, None, path="/readyz", method="GET")
    assert status == 200
    await gw.server.close()

    # Nothing was made from the URL (one process keeps its counters in memory; a counters file for
    # `workers: N` would go in data/, the spool's folder).
    assert not made_from_a_url(tmp_path)
    assert not (tmp_path / "gateway.counters").exists()

    # A replica starting afresh rebuilds each budget's spend from PostgreSQL.
    config = make_config(raw, tmp_path)
    limiter = await startup.open_limiter(config, fresh=True)
    try:
        assert (await limiter.balance(config.keys[0])).spent == pytest.approx(spent)
    finally:
        await limiter.aclose()

    # The operator's commands read it too.
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proc = run("usage", "--config", str(cfg), "--by", "key,model", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = {(r["key"], r["model"]): r for r in orjson.loads(proc.stdout)}
    assert report["app1", "gpt-4o"]["requests"] == 1 and report["app1", "wan2.6-t2v"]["cost"] == pytest.approx(rows[1][4])
    proc = run("keys", "--config", str(cfg), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert {k["name"]: k["spend"] for k in orjson.loads(proc.stdout)}["app1"] == pytest.approx(spent)


@pytest.mark.slow  # a dozen `gateway usage` processes
async def test_usage_cli_on_postgres(pg: Pg, tmp_path: Path):
    rows = [
        UsageRow("a", day("2025-03-01") + 10, "app1", model="gpt-4o", status=200, total_tokens=12, cost=0.25, latency_ms=5.0),
        UsageRow("b", day("2025-03-02") + 10, "app1", model="claude-x", status=500, total_tokens=3, cost=1.0, latency_ms=7.0),
        UsageRow("c", day("2025-03-02") + 86399, "app2", model="gpt-4o", status=200, cost=9.0, latency_ms=1.0),
        UsageRow("d", day("2025-03-03") + 1, None, model="gpt-4o", status=200, latency_ms=2.0),
    ]
    await write_pg(pg.url, rows, tmp_path / "s.jsonl")
    sqlite_db = tmp_path / "u.db"
    lite = UsageWriter(str(sqlite_db))
    await lite.start()
    for r in rows:
        lite.record(r)
    await lite.close()
    pg_cfg, lite_cfg = tmp_path / "pg.yaml", tmp_path / "lite.yaml"
    pg_cfg.write_text(yaml.safe_dump({"database": pg.url, "spool": str(tmp_path / "s.jsonl")}))
    lite_cfg.write_text(yaml.safe_dump({"database": str(sqlite_db)}))
    for args in (["--by", "key,day", "--format", "table"], ["--by", "day", "--key", "app1", "--format", "csv"],
                 ["--by", "status", "--since", "2025-03-02"], ["--by", "model,day", "--until", "2025-03-02"],
                 ["--by", "model"], ["--by", "channel,platform"]):  # fmt: skip
        args = ["--format", "json", *args]  # the last --format wins
        got = run("usage", "--config", str(pg_cfg), *args)
        assert got.returncode == 0, got.stderr
        assert got.stdout == run("usage", "--config", str(lite_cfg), *args).stdout, args
        assert got.stdout.count("\n") >= 2, got.stdout  # something was reported

    # --replay-log puts logged rows back, once.
    log_file = tmp_path / "gw.log"
    log_file.write_bytes(b"".join(orjson.dumps({"event": "usage_row_unsaved", "row": dataclasses.asdict(r)}) + b"\n"
                                  for r in [rows[0], UsageRow("e", 5.0, "app1")]))  # fmt: skip
    proc = run("usage", "--config", str(pg_cfg), "--replay-log", str(log_file))
    assert proc.returncode == 0 and proc.stdout.strip() == "1 row(s) inserted, 1 already there, 0 line(s) unreadable"
    assert await count(pg) == 5

    # No table yet, or no server: said so (never the password), exit 1.
    async with fresh_schema() as empty:
        cfg = tmp_path / "empty.yaml"
        cfg.write_text(yaml.safe_dump({"database": empty.url}))
        proc = run("usage", "--config", str(cfg))
        assert proc.returncode == 1 and "no usage table yet" in proc.stderr
    cfg = tmp_path / "down.yaml"
    cfg.write_text(yaml.safe_dump({"database": "postgresql://gw:s3cret-pw@127.0.0.1:1/x"}))
    proc = run("usage", "--config", str(cfg))
    assert proc.returncode == 1 and "gw:***@127.0.0.1:1" in proc.stderr and "s3cret" not in proc.stderr + proc.stdout
    proc = run("keys", "--config", str(cfg), "--format", "json")
    assert proc.returncode == 0 and "s3cret" not in proc.stderr + proc.stdout


async def test_a_replica_starting_after_a_redis_flush_refills_spend_from_postgres(pg: Pg, tmp_path: Path, gateway_factory, vendor):
    redisstate = pytest.importorskip("tests.redisstate")  # skips without the redis package or a server
    async with redisstate.shared_redis() as shared:
        raw = {
            "database": pg.url, "spool": str(tmp_path / "data" / "rows.jsonl"),
            "keys": [{"name": "app1", "key": "test-key", "budget": 10.0}], "channels": [channel("main", vendor)],
            "models": {"gpt-4o": {"price": {"input": 1000.0, "output": 2000.0}}}, "state": shared.state(),
        }  # fmt: skip
        first = await gateway_factory(raw)
        for _ in range(3):
            status, _, _ = await post(first, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
            assert status == 200
        await first.server.app[SERVICES].usage.flush()
        [(spent,)] = await pg.fetch("SELECT sum(cost) FROM usage WHERE key_name = 'app1'")
        assert spent > 0
        await first.server.close()
        await shared.flush()  # Redis loses everything
        replica = await gateway_factory(raw)
        limiter = replica.server.app[SERVICES].limiter
        assert limiter is not None
        assert (await limiter.balance(replica.runtime.config.keys[0])).spent == pytest.approx(spent)


@pytest.mark.slow  # a real gateway with two workers
async def test_a_gateway_process_with_workers_on_postgres(pg: Pg, tmp_path: Path, vendor):
    from tests.procs import GatewayProcess

    password = "pw-of-the-process-5e1b"
    proxy = await PgProxy().start()  # only so the URL can carry a password the server never asks for
    config = {
        "database": pg.via(proxy.port, password), "spool": str(tmp_path / "data" / "rows.jsonl"), "workers": 2,
        "keys": [{"name": "app1", "key": "k-1", "budget": 50}], "channels": [channel("main", vendor)],
    }  # fmt: skip
    gw = await GatewayProcess(tmp_path, config).start()
    try:
        for _ in range(200):  # both workers up (a SIGTERM before a worker's handlers are set kills it)
            if gw.logs().count('"event":"listening"') == 2:
                break
            await asyncio.sleep(0.05)
        for i in range(6):
            status, _, _ = await post(gw, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},  # type: ignore[arg-type]
                                      headers={"Authorization": "Bearer k-1", "X-Request-Id": f"p-{i}"})  # fmt: skip
            assert status == 200
        assert await gw.stop() == 0
    finally:
        gw.kill()
        await proxy.cut()
    assert [r for (r,) in await pg.fetch("SELECT request_id FROM usage ORDER BY request_id")] == [f"p-{i}" for i in range(6)]
    assert password not in gw.logs() and "usage_db" not in gw.logs()  # no outage, and never the password
    assert (tmp_path / "data" / "gateway.counters").exists()
