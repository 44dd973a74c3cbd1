"""The task store `database:` names: `SqliteTaskStore` for a path, `PgTaskStore` for a postgresql:// URL
(gateway.ledger.backends chooses the usage writer and reader the same way)."""

from __future__ import annotations

from gateway.ledger.backends import is_postgres, require_asyncpg
from gateway.tasks.store import SqliteTaskStore, TaskStore


def task_store(database: str) -> TaskStore:
    if is_postgres(database):
        require_asyncpg(database)
        from gateway.tasks.pg_store import PgTaskStore

        return PgTaskStore(database)
    return SqliteTaskStore(database)
