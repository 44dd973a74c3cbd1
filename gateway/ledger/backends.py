"""Which database `database:` in gateway.yaml names, and the usage sink and reader for it.

A path is SQLite (the default, one machine); a `postgresql://` or `postgres://` URL is PostgreSQL, for
several replicas (asyncpg, the `scale` extra). The task store's twin of this is gateway.tasks.backends.
A URL may carry a password: what goes into a log line or an error is `masked()`, never the URL itself.
"""

from __future__ import annotations

import importlib.util
import re
import urllib.parse

from config import Config
from gateway.ledger.reader import SqliteUsageReader, UsageReader
from gateway.ledger.sink import UsageSink

SCHEMES = ("postgresql://", "postgres://")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def is_postgres(database: str) -> bool:
    return database.startswith(SCHEMES)


def masked(database: str) -> str:
    """`database` as it may be shown: a URL's password (in its user part or a `password=` parameter)
    replaced by ***; a path as it is."""
    if "://" not in database:
        return database
    scheme, _, rest = database.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    auth, at, hosts = netloc.rpartition("@")
    if at and ":" in auth:
        netloc = f"{auth.partition(':')[0]}:***@{hosts}"
    return f"{scheme}://{netloc}" + _QUERY_PASSWORD.sub(r"\1***", tail)


def redact(text: str, database: str) -> str:
    """`text` (an error message, say) with `database`'s URL and its password masked wherever they appear."""
    if "://" not in database:
        return text
    text = text.replace(database, masked(database))
    for secret in _passwords(database):
        text = text.replace(secret, "***")
    return text


def _passwords(database: str) -> list[str]:
    try:
        parsed = urllib.parse.urlsplit(database)
        found = [parsed.password] if parsed.password else []
        found += urllib.parse.parse_qs(parsed.query).get("password", [])
    except ValueError:
        return []
    # Both as written and decoded: a driver may quote either.
    return sorted({p for s in found for p in (s, urllib.parse.unquote(s)) if len(p) >= 3}, key=len, reverse=True)


def require_asyncpg(database: str) -> None:
    """Raise a RuntimeError that says what to install when a PostgreSQL database is configured without asyncpg."""
    if importlib.util.find_spec("asyncpg") is None:
        raise RuntimeError(
            f"database: {masked(database)} is PostgreSQL, which needs the asyncpg package: "
            "pip install 'llm-gateway[scale]' (or asyncpg>=0.29)"
        )


def usage_sink(config: Config) -> UsageSink:
    """The writer of usage rows into the configured database, spooling to `config.spool_path`."""
    if is_postgres(config.database):
        require_asyncpg(config.database)
        from gateway.ledger.pg_usage import PgUsageWriter

        return PgUsageWriter(config.database, spool_path=config.spool_path)
    from gateway.ledger.usage import UsageWriter

    return UsageWriter(config.database, spool_path=config.spool_path)


def usage_reader(database: str, *, pooled: bool = False) -> UsageReader:
    """The reader of the configured database's usage table. `pooled`: keep connections open between
    reads (for the app, closed with it); else each read opens and closes its own (a CLI, a refill)."""
    if is_postgres(database):
        require_asyncpg(database)
        from gateway.ledger.pg_usage import PgUsageReader

        return PgUsageReader(database, pooled=pooled)
    return SqliteUsageReader(database)
