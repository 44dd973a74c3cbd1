"""The usage row, and the small interface every place usage rows go to implements.

Two implementations, both with a JSONL spool: `UsageWriter` (gateway.ledger.usage) on SQLite and
`PgUsageWriter` (gateway.ledger.pg_usage) on PostgreSQL; gateway.ledger.backends picks one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol


@dataclass(slots=True)
class UsageRow:
    request_id: str
    ts: float
    key_name: str | None = None
    platform: str | None = None
    endpoint: str | None = None
    model: str | None = None
    upstream_model: str | None = None
    channel: str | None = None
    stream: int = 0
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    attempts: int = 0
    cost: float | None = None
    error: str | None = None
    estimated: int = 0  # 1 when token counts are estimated, not reported by the vendor
    images: int = 0
    input_chars: int = 0
    audio_seconds: float = 0.0  # seconds of audio or video billed (per_second prices)
    resolution: str | None = None  # of the video billed, for per_second prices by resolution
    task_id: str | None = None  # the async task this row bills (gateway.tasks)


COLUMNS = tuple(f.name for f in fields(UsageRow))


class UsageSink(Protocol):
    dropped: int  # rows lost since start: only when rows kept in memory passed their bound
    written: int  # rows written to the store since start
    spooled: int  # rows written to the fallback since start
    spool_path: Path  # the fallback's file

    @property
    def queued(self) -> int:
        """Rows taken and not yet in a batch."""

    @property
    def held(self) -> int:
        """Rows kept in memory because the store and its fallback could not take them yet."""

    async def start(self) -> None:
        """Open the store (and replay what an earlier run could not write) before the first request."""

    def record(self, row: UsageRow) -> None:
        """Take one row. Never blocks the request and never raises: the row is written later, in a batch."""

    async def flush(self) -> None:
        """Write every row taken so far."""

    async def writable(self) -> bool:
        """Whether the store takes writes now (for /readyz)."""

    async def close(self) -> None:
        """Write every row taken, then close. No row taken is lost."""
