"""Which database `database:` names, where the gateway's own files go for each, and a URL's password
never shown (no server needed: the PostgreSQL side runs in test_postgres.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from config import ConfigError, parse_config
from gateway.ledger.backends import is_postgres, masked, redact, usage_reader, usage_sink
from gateway.ledger.reader import SqliteUsageReader
from gateway.ledger.usage import UsageWriter
from gateway.tasks.backends import task_store
from gateway.tasks.store import SqliteTaskStore
from providers import CHANNEL_PROVIDERS


def config(**raw: object):
    return parse_config(yaml.safe_dump(raw), env={}, providers=CHANNEL_PROVIDERS).config


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://gw:pa55@db:5432/gateway", "postgresql://gw:***@db:5432/gateway"),
        ("postgres://gw:p%40ss%2Fw@db/gateway?sslmode=require", "postgres://gw:***@db/gateway?sslmode=require"),
        ("postgresql://gw@db/gateway", "postgresql://gw@db/gateway"),
        ("postgresql://db1:5432,db2:5433/gateway", "postgresql://db1:5432,db2:5433/gateway"),
        ("postgresql:///gateway?host=/run/pg&password=topsecret&user=gw", "postgresql:///gateway?host=/run/pg&password=***&user=gw"),
        ("postgresql://gw:pa55@db", "postgresql://gw:***@db"),
        ("data/gateway.db", "data/gateway.db"),
    ],
)
def test_masked(url: str, shown: str):
    assert masked(url) == shown


def test_redact_masks_the_password_wherever_it_appears():
    url = "postgresql://gw:s3cr%2Ft@db/gateway"
    text = f"could not connect to {url}: password 's3cr/t' rejected, raw s3cr%2Ft"
    out = redact(text, url)
    assert "s3cr" not in out and "postgresql://gw:***@db/gateway" in out
    assert redact("nothing to hide", "data/gateway.db") == "nothing to hide"


def test_config_never_shows_the_url_and_refuses_other_schemes():
    c = config(database="postgresql://gw:hunter2@db/gateway")
    assert "hunter2" not in repr(c)
    with pytest.raises(ConfigError) as err:
        config(database="mysql://gw:hunter2@db/gateway")
    assert "database: must be a SQLite file path or a PostgreSQL URL" in str(err.value.problems)
    assert "hunter2" not in str(err.value.problems)


def test_where_the_gateways_own_files_go(tmp_path: Path):
    lite = config(database="data/gateway.db")
    assert (lite.database_is_url, lite.data_dir, lite.spool_path) == (False, "data", "data/gateway.spool.jsonl")
    assert lite.local_file(".counters") == "data/gateway.counters"
    pg = config(database="postgresql://gw:pw@db/gateway")
    assert (pg.database_is_url, pg.data_dir, pg.spool_path) == (True, "data", "data/gateway.spool.jsonl")
    assert pg.local_file(".counters") == "data/gateway.counters"
    placed = config(database="postgres://db/gateway", spool="/var/spool/gw/rows.jsonl")
    assert (placed.data_dir, placed.spool_path, placed.local_file(".counters")) == (
        "/var/spool/gw", "/var/spool/gw/rows.jsonl", "/var/spool/gw/gateway.counters"
    )


def test_sqlite_for_a_path(tmp_path: Path):
    c = config(database=str(tmp_path / "u.db"))
    assert not is_postgres(c.database) and is_postgres("postgres://x/y") and is_postgres("postgresql://x/y")
    assert isinstance(usage_sink(c), UsageWriter) and isinstance(usage_reader(c.database), SqliteUsageReader)
    assert isinstance(task_store(c.database), SqliteTaskStore)


def test_postgres_without_asyncpg_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if it were not installed
    c = config(database="postgresql://gw:hunter2@db/gateway")
    for make in (lambda: usage_sink(c), lambda: usage_reader(c.database), lambda: task_store(c.database)):
        with pytest.raises(RuntimeError, match=r"needs the asyncpg package: pip install 'llm-gateway\[scale\]'") as err:
            make()
        assert "hunter2" not in str(err.value) and "gw:***@db" in str(err.value)
