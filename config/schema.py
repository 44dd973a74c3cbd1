"""Typed, immutable view of gateway.yaml (docs/config.md).

Every value object validates nothing itself: `config.loader` builds them only from input it has
already checked, so code holding a `Config` can trust every field.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

_SECRET_HEADER_WORDS = ("key", "auth", "token", "secret")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_mb: float = 32.0
    # A vendor's JSON answer the gateway holds to read its usage; past it the rest streams through.
    max_response_mb: float = 64.0
    # Requests refused for want of a valid key that get a usage row and access line, per second and
    # process; the rest are counted (gateway.ledger.refused).
    refused_rows_per_s: int = 20
    # Client connections (gateway.http.guard): how many one process keeps (0: from its file limit), how
    # long one may wait idle for its next request, and how long a request head or a silence inside a
    # request body may take.
    max_connections: int = 0
    idle_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_response_bytes(self) -> int:
        return int(self.max_response_mb * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class Routing:
    retries: int = 2
    failure_threshold: int = 3
    cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_byte_s: float = 120.0
    idle_s: float = 120.0


class GlobSet:
    """A list of glob patterns compiled once; an empty set matches nothing."""

    __slots__ = ("_regex", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        joined = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
        self._regex = re.compile(joined) if patterns else None

    def match(self, name: str) -> bool:
        return self._regex is not None and self._regex.match(name) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobSet) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    key_sha256: str  # hex digest; the plain key is never kept
    models: GlobSet | None = None  # None: every model
    platforms: frozenset[str] | None = None  # None: every platform
    tags: frozenset[str] | None = None  # None: any channel
    rpm: int | None = None
    tpm: int | None = None
    budget: float | None = None
    budget_period: str = "total"  # total | daily | monthly (calendar, UTC)
    webhook_secret: str | None = field(default=None, repr=False)  # signs this key's task callbacks

    @property
    def limited(self) -> bool:
        """Whether any of rpm, tpm or budget applies to this key."""
        return self.rpm is not None or self.tpm is not None or self.budget is not None


@dataclass(frozen=True, slots=True)
class AdminKey:
    """An operator's key: reaches /metrics and /admin/*, and nothing a client key reaches."""

    name: str
    key_sha256: str  # hex digest; the plain key is never kept


# Headers by which a client would choose whom a vendor bills (an organization, project or workspace of
# the channel's account): never taken from a client unless its channel's `client_headers` allows them.
BILLING_HEADERS = frozenset(
    h.lower() for h in ("OpenAI-Organization", "OpenAI-Project", "X-Goog-User-Project", "X-DashScope-WorkSpace")
)


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    provider: str
    platform: str
    base_url: str  # without a trailing slash
    api_keys: tuple[str, ...] = field(repr=False)  # secrets: never in a repr, so never in a log or traceback
    models: GlobSet
    model_map: dict[str, str] = field(default_factory=dict)
    weight: float = 1.0
    priority: int = 0
    tags: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)
    # Vendor billing headers (OpenAI-Organization, ...) a client may set for itself, lower case;
    # by default a client's are dropped, so only the channel picks whom the vendor bills.
    client_headers: frozenset[str] = frozenset()
    timeouts: Timeouts = Timeouts()
    enabled: bool = True
    # Why `enabled` is False, for the start-up summary and the 503: "enabled: false",
    # "OPENAI_API_KEY is not set". Names a variable, never a secret.
    disabled_reason: str | None = None
    # How /v1/responses reaches this vendor: "native" (its own Responses API) or "chat" (the gateway
    # serves it over /chat/completions, for OpenAI-compatible vendors that have no Responses API).
    responses: str = "native"
    # This vendor account's own quota: routing skips the channel while it is at either.
    rpm: int | None = None
    tpm: int | None = None

    # What must never be echoed back: the vendor keys, and credential-like extra headers; worked out
    # once (every answer is searched for them), as text and as bytes.
    secrets: tuple[str, ...] = field(init=False, repr=False)
    secret_bytes: tuple[bytes, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        creds = tuple(v for k, v in self.headers.items() if any(w in k.lower() for w in _SECRET_HEADER_WORDS))
        secrets = tuple(s for s in self.api_keys + creds if s)
        object.__setattr__(self, "secrets", secrets)
        object.__setattr__(self, "secret_bytes", tuple(s.encode() for s in secrets))

    def serves(self, model: str) -> bool:
        return self.models.match(model)

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)


@dataclass(frozen=True, slots=True)
class Price:
    """Token prices are per 1M tokens; the rest per unit. `per_second` is one price, or one per resolution
    (keys as the vendor names them: 480P, 720P, 1080P), for video and audio seconds."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None
    per_image: float | None = None
    per_second: float | None = None
    per_second_by_resolution: dict[str, float] | None = None
    per_request: float | None = None
    per_1k_chars: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The price as gateway.yaml spells it, without the fields it does not set."""
        out: dict[str, object] = {}
        for name in ("input", "output", "cached_input", "cache_write", "per_image", "per_request", "per_1k_chars"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        per_second = self.per_second_by_resolution or self.per_second
        if per_second is not None:
            out["per_second"] = per_second
        return out


TASK_TIMEOUTS = {"t2v": 7200.0, "i2v": 7200.0, "ref2v": 7200.0, "t2i": 1800.0, "i2i": 1800.0}


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """`tasks:`: async generation (gateway.tasks)."""

    poll_interval_s: float = 5.0
    timeout_s: dict[str, float] = field(default_factory=lambda: dict(TASK_TIMEOUTS))
    store_results: bool = False  # copy finished files under data/ so they outlive the vendor's URL
    allow_private_callbacks: bool = False

    def timeout_for(self, catalog: str) -> float:
        return self.timeout_s.get(catalog, TASK_TIMEOUTS.get(catalog, 7200.0))


STATE_SCHEMES = ("redis://", "rediss://", "unix://")
ON_REDIS_ERROR = ("local", "refuse")


@dataclass(frozen=True, slots=True)
class StateSettings:
    """`state:`: what several replicas share (gateway.billing.redis_counters, gateway.relay.shared_health).

    Without `redis` nothing is shared: limits live in the counters file of one machine. `on_redis_error`
    says what a request does while Redis cannot be reached: `local` counts on this machine's counters
    alone, `refuse` answers 503. A reservation of a request in flight lapses after `reservation_ttl_s`
    (longer than any request), so a replica that dies holding some frees them on its own.
    `lease` is the share of a limit one replica may take ahead of time (gateway.billing.lease).
    """

    redis: str | None = field(default=None, repr=False)  # the URL may carry a password
    on_redis_error: str = "local"
    prefix: str = "gw"  # of every key the gateway writes, so gateways can share one Redis
    reservation_ttl_s: float = 600.0
    # The share of a key's limit a replica may take from Redis ahead of time, to admit from without asking
    # (gateway.billing.lease); 0: every admission of a limited key asks Redis.
    lease: float = 0.02


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of `services:`, the catalog behind /api/service/list and /api/service/invoke."""

    service_code: str
    name: str
    model: str
    category: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    catalog: str | None = None
    price: Price | None = None


DATABASE_SCHEMES = ("postgresql://", "postgres://")  # `database:` as a URL: PostgreSQL; else a SQLite path


@dataclass(frozen=True)
class Config:
    listen: Listen
    database: str = field(repr=False)  # a SQLite path, or a PostgreSQL URL that may carry a password
    spool: str | None = None  # where rows the database cannot take wait; default: beside the database
    log: LogConfig = LogConfig()
    limits: Limits = Limits()
    workers: int = 1
    shutdown_grace_s: float = 30.0
    routing: Routing = Routing()
    keys: tuple[ClientKey, ...] = ()
    channels: tuple[Channel, ...] = ()
    models: dict[str, ModelInfo] = field(default_factory=dict)
    admin_keys: tuple[AdminKey, ...] = ()
    metrics_listen: Listen | None = None  # /metrics without auth on its own address
    tasks: TaskSettings = TaskSettings()
    services: tuple[Service, ...] = ()
    state: StateSettings = StateSettings()
    source: str = ""  # the file it was read from, for messages
    sha256: str | None = None  # of the file's bytes as they were parsed; None when not read from a file

    @property
    def database_is_url(self) -> bool:
        """`database` names a PostgreSQL server, not a SQLite file."""
        return self.database.startswith(DATABASE_SCHEMES)

    @property
    def data_dir(self) -> str:
        """Where the gateway keeps files of its own (the counters, stored task results): the SQLite
        database's folder; with PostgreSQL, the spool's folder when `spool` is set, else ./data."""
        if not self.database_is_url:
            return str(Path(self.database).parent)
        return str(Path(self.spool).parent) if self.spool else "data"

    def local_file(self, suffix: str) -> str:
        """A file of the gateway's own named after the database: data/gateway.counters beside
        data/gateway.db; <data_dir>/gateway<suffix> with PostgreSQL."""
        if not self.database_is_url:
            return str(Path(self.database).with_suffix(suffix))
        return str(Path(self.data_dir) / f"gateway{suffix}")

    @property
    def spool_path(self) -> str:
        return self.spool or self.local_file(".spool.jsonl")

    @cached_property
    def platforms(self) -> frozenset[str]:
        return frozenset(c.platform for c in self.channels)

    @cached_property
    def keys_by_hash(self) -> dict[str, ClientKey]:
        return {k.key_sha256: k for k in self.keys}

    @cached_property
    def admin_keys_by_hash(self) -> dict[str, AdminKey]:
        return {k.key_sha256: k for k in self.admin_keys}
