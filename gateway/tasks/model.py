"""The task row: one async generation, from submission to its one billed (or refunded) end."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from providers.tasks.base import CREATED, FINAL

# Billing states. A task's budget reservation is held while `reserved`; it ends `billed` (one usage row
# with the cost) or `refunded` (one usage row with no cost), each in the same transaction as the final status.
RESERVED = "reserved"
BILLED = "billed"
REFUNDED = "refunded"

# Callback delivery states.
CALLBACK_PENDING = "pending"  # due once the task is final
CALLBACK_DELIVERED = "delivered"
CALLBACK_FAILED = "failed"  # retries spent
CALLBACK_REFUSED = "refused"  # the address is not allowed (private, loopback)


def new_task_id() -> str:
    """A public task id: never the vendor's, unguessable (ids are looked up per key, but still)."""
    return "task_" + secrets.token_hex(12)


@dataclass(slots=True)
class Task:
    id: str
    key_name: str
    catalog: str  # t2v | i2v | ref2v | t2i | i2i
    model: str  # public name
    upstream_model: str
    channel: str
    vendor: str  # the channel's provider: openai | dashscope | ark | vidu
    dialect: str  # the client shape it was created in (gateway.tasks.dialects), for its own answers
    request_id: str = ""  # X-Request-Id of the submitting request: the billing usage row carries it
    platform: str | None = None
    vendor_key_id: str | None = None  # fingerprint of the vendor key that created it (polls use the same); never the key
    vendor_task_id: str | None = None
    status: str = CREATED
    vendor_status: str | None = None
    progress: int = 0
    reason: str | None = None  # why FAILED: vendor_failed | cancelled | expired | timeout
    error: str | None = None  # the vendor's message, when FAILED
    request: dict[str, Any] = field(default_factory=dict)  # TaskRequest.describe(): no bytes, no secrets
    results: dict[str, Any] = field(default_factory=dict)  # {"videos": [...], "images": [...], "thumbnail": ...}
    results_expire_at: float | None = None
    stored: dict[str, str] = field(default_factory=dict)  # variant/index -> local path (tasks.store_results)
    usage: dict[str, Any] | None = None  # TaskUsage.as_dict()
    price: dict[str, Any] | None = None  # the model's price when it was submitted (Price.as_dict())
    reserved: float = 0.0  # held against the key's budget while billing is `reserved`
    cost: float | None = None
    billing: str = RESERVED
    next_poll_at: float = 0.0
    poll_failures: int = 0
    callback_url: str | None = None
    callback_state: str | None = None
    callback_attempts: int = 0
    callback_next_at: float | None = None
    origin: str | None = None  # the gateway's scheme://host as the client reached it, for links in callbacks
    deleted_at: float | None = None  # DELETE /v1/videos/{id}: hidden from its key from then on
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    version: int = 0  # bumped by every write: each status change is a compare-and-swap on it

    @property
    def final(self) -> bool:
        return self.status in FINAL
