"""The Prometheus metrics of one process, and the multiprocess set-up behind `workers: N`.

Counting is done where every request and attempt already ends (`api/pipeline.finish`,
`relay/attempts`), into label children resolved once per label set and kept. A request costs one
dict lookup, one histogram observation (two for a stream: time to first token) and a few integer
additions: its counters (requests, tokens, cost, attempts) are plain numbers on the cached children,
added to the Prometheus counters when scraped (`flush`), or every second with `workers: N`. A
prometheus_client increment costs about as much as all the rest together (~1 us each, measured).
State that is not an event (key cooldowns, queue depths, streams in flight, the config in force) is
read into gauges when scraped (`gateway.ops.status.refresh`).

Labels are bounded: a model is named only when the config names it (channel `models` and
`model_map` keys without glob characters, `models:` facts), anything else is "other"; platforms
likewise. Channels, endpoints and reasons come from the config and the code, never from a client.

With `workers: N` the supervisor creates a directory and sets PROMETHEUS_MULTIPROC_DIR before it
forks (`prepare_multiprocess`); each worker then keeps its values in its own mmap'd files there, and
any one worker's scrape adds up every worker's files (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from config import Config
from gateway.ledger.sink import UsageRow
from gateway.ops.histogram import HistogramCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SWITCH_ENV = "GATEWAY_METRICS"  # "off": no metrics at all (for the bench's comparison)
OTHER = "other"
GLOB_CHARS = frozenset("*?[")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "on").lower() not in ("off", "0", "false", "no")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess(database: str) -> str:
    """In the supervisor, before the first fork: a fresh directory the workers' values go to.

    It sits beside the database (`data/gateway.metrics` for `data/gateway.db`), not in /tmp: a
    supervisor killed outright leaves it behind, and the next start clears it, where a fresh temp
    directory each time would pile up. A database that is not a file gets a temp directory."""
    if "://" in database:
        path = tempfile.mkdtemp(prefix="gateway-metrics-")
    else:
        path = str(Path(database).with_suffix(".metrics"))
        shutil.rmtree(path, ignore_errors=True)  # a killed supervisor's values: stale
        os.makedirs(path, mode=0o700)
    os.environ[MULTIPROC_ENV] = path
    return path


def worker_gone(pid: int) -> None:
    """In the supervisor, when a worker exits: its live gauges no longer count (counters stay)."""
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        Path(path, f"status-{pid}.json").unlink(missing_ok=True)  # nor its /admin/status (gateway.ops.status)


def remove_multiprocess(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(MULTIPROC_ENV) == path:
        del os.environ[MULTIPROC_ENV]


class _Children:
    """The label children one (endpoint, platform, model, channel, status class) moves, and the counts
    not yet added to them."""

    __slots__ = ("cached", "cost", "counters", "latency", "n", "tokens_in", "tokens_out", "ttft")

    def __init__(self, m: Metrics, endpoint: str, platform: str, model: str, channel: str, status: str) -> None:
        self.latency = m.latency.labels(endpoint, model, channel)
        self.ttft = m.ttft.labels(endpoint, model, channel)
        self.counters = (
            m.requests.labels(endpoint, platform, model, channel, status),
            m.tokens.labels(platform, model, channel, "input"),
            m.tokens.labels(platform, model, channel, "output"),
            m.tokens.labels(platform, model, channel, "cached"),
            m.cost.labels(platform, model, channel),
        )
        self.n = self.tokens_in = self.tokens_out = self.cached = 0
        self.cost = 0.0

    def flush(self) -> None:
        requests, tokens_in, tokens_out, cached, cost = self.counters
        for counter, amount in ((requests, self.n), (tokens_in, self.tokens_in), (tokens_out, self.tokens_out),
                                (cached, self.cached), (cost, self.cost)):
            if amount:
                counter.inc(amount)
        self.n = self.tokens_in = self.tokens_out = self.cached = 0
        self.cost = 0.0


class Metrics:
    """One process's metric families, in a registry of its own (an app per test shares a process)."""

    MAX_CHILDREN = 20_000  # label sets cached; past it (a config churning names) the cache starts over

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir()
        if self.multiprocess is not None:
            # prometheus_client picks its value class when imported, which may be before the
            # supervisor set the directory: pick again, before the first metric is made.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series would double a scrape
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests", "Client requests, by how they ended",
                                ("endpoint", "platform", "model", "channel", "status"), registry=r)
        histogram = Histogram if self.multiprocess is not None else _collected_histogram
        self.latency = histogram("gateway_request_duration_seconds", "Time from request to the end of the answer",
                                 ("endpoint", "model", "channel"), buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = histogram("gateway_time_to_first_token_seconds", "Time from request to the first byte of a streamed answer",
                              ("endpoint", "model", "channel"), buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens billed: input (prompt, cached included), output, cached",
                              ("platform", "model", "channel", "kind"), registry=r)
        self.cost = Counter("gateway_cost", "Cost of the requests, in price units (models.*.price)",
                            ("platform", "model", "channel"), registry=r)
        self.attempts = Counter("gateway_upstream_attempts", "Upstream attempts, by outcome",
                                ("channel", "outcome"), registry=r)
        self.failures = Counter("gateway_upstream_failures", "Upstream attempts that failed, by reason",
                                ("channel", "reason"), registry=r)
        self.rate_limited = Counter("gateway_rate_limited", "Requests refused with 429 by a gateway limit",
                                    ("limit",), registry=r)
        self.state_fallbacks = Counter("gateway_state_fallbacks",
                                       "Limit checks and updates, and task cache reads and writes, that could not "
                                       "reach the shared state (Redis): done locally (action=local) or refused with "
                                       "503 (action=refuse)",
                                       ("action", "reason"), registry=r)
        self.reloads = Counter("gateway_config_reloads", "Config reloads (SIGHUP), by outcome", ("outcome",), registry=r)
        self.config_info = Gauge("gateway_config_info", "1 for the sha256 of the config file in force",
                                 ("sha256",), registry=r, multiprocess_mode="liveall")
        self.config_loaded = Gauge("gateway_config_loaded_timestamp_seconds", "When the config in force was loaded",
                                   registry=r, multiprocess_mode="livemax")
        self.key_up = Gauge("gateway_channel_key_up", "1 while a channel key may be used, 0 while it cools down",
                            ("channel", "key_id"), registry=r, multiprocess_mode="livemin")
        self.key_cooldown = Gauge("gateway_channel_key_cooldown_seconds", "Seconds left of a channel key's cooldown",
                                  ("channel", "key_id"), registry=r, multiprocess_mode="livemax")
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests waiting on or reading from an upstream",
                               registry=r, multiprocess_mode="livesum")
        self.streams = Gauge("gateway_streams_in_flight", "Streamed answers being relayed",
                             registry=r, multiprocess_mode="livesum")
        self.rows_queued = Gauge("gateway_usage_rows_queued", "Usage rows waiting for the writer",
                                 registry=r, multiprocess_mode="livesum")
        self.rows_held = Gauge("gateway_usage_rows_held", "Usage rows neither the database nor the spool could take",
                               registry=r, multiprocess_mode="livesum")
        self.spool_bytes = Gauge("gateway_usage_spool_bytes", "Size of the usage spool file",
                                 registry=r, multiprocess_mode="livemax")
        self.rows_written = Counter("gateway_usage_rows_written", "Usage rows written to the database", registry=r)
        self.rows_spooled = Counter("gateway_usage_rows_spooled", "Usage rows written to the spool", registry=r)
        self.rows_dropped = Counter("gateway_usage_rows_dropped", "Usage rows lost", registry=r)
        self._children: dict[tuple[str | None, str | None, str | None, str | None, int], _Children] = {}
        self._attempts: dict[tuple[str, str], int] = {}  # attempts not yet added to the counter
        self._config: Config | None = None
        self._models: frozenset[str] = frozenset()
        self._platforms: frozenset[str] = frozenset()
        self.synced: dict[str, int] = {}  # the last value of each counter read from elsewhere (refresh)
        self.config_sha256: str | None = None  # the one gateway_config_info says is in force

    def learn(self, config: Config) -> None:
        """The names `config` allows as label values."""
        names: set[str] = set(config.models)
        for ch in config.channels:
            names.update(p for p in ch.models.patterns if not GLOB_CHARS.intersection(p))
            names.update(ch.model_map)
        self._models = frozenset(names)
        self._platforms = config.platforms
        self._config = config

    def request(self, row: UsageRow, config: Config) -> None:
        """Count one finished request (from its usage row)."""
        if config is not self._config:
            self.learn(config)
        model, platform = row.model, row.platform
        key = (row.endpoint, platform if platform in self._platforms or platform is None else OTHER,
               model if model in self._models or model is None else OTHER, row.channel, row.status // 100)
        c = self._children.get(key)
        if c is None:
            c = self._resolve(key)
        c.n += 1
        c.latency.observe(row.latency_ms / 1000.0)
        if row.stream and row.ttft_ms is not None:  # a whole answer's first byte is its end
            c.ttft.observe(row.ttft_ms / 1000.0)
        c.tokens_in += row.prompt_tokens
        c.tokens_out += row.completion_tokens
        c.cached += row.cached_tokens
        if row.cost:
            c.cost += row.cost

    def refused(self, endpoint: str | None, latency_ms: float, config: Config) -> None:
        """A 401 past the refused-rows cap: no row, still a request."""
        self.request(UsageRow(request_id="", ts=0.0, endpoint=endpoint, status=401, latency_ms=latency_ms), config)

    def _resolve(self, key: tuple[str | None, str | None, str | None, str | None, int]) -> _Children:
        if len(self._children) >= self.MAX_CHILDREN:
            self.flush()
            self._children.clear()
        endpoint, platform, model, channel, status = key
        status_class = STATUS_CLASSES[status - 1] if 1 <= status <= 5 else OTHER
        c = self._children[key] = _Children(self, endpoint or "", platform or "", model or "", channel or "", status_class)
        return c

    def attempt(self, channel: str, outcome: str, reason: str | None = None) -> None:
        """One upstream attempt ended: ok, failed (with a reason from gateway.relay.health.REASONS), client_error, skipped, abandoned."""
        key = (channel, outcome)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        if reason is not None:
            self.failures.labels(channel, reason).inc()

    def limited(self, limit: str) -> None:
        """A request refused with 429 by a gateway limit: requests | tokens | budget (a key's), channel."""
        self.rate_limited.labels(limit).inc()

    def state_fallback(self, action: str, reason: str) -> None:
        """One call of the limiter (gateway.billing.failover) or the task cache (gateway.tasks.cache) that
        could not reach Redis: local | refuse, and why: connect | timeout | error."""
        self.state_fallbacks.labels(action, reason).inc()

    def flush(self) -> None:
        """Add the counts kept on the side to the Prometheus counters (before a scrape)."""
        for c in self._children.values():
            if c.n:
                c.flush()
        attempts, self._attempts = self._attempts, {}
        for (channel, outcome), n in attempts.items():
            self.attempts.labels(channel, outcome).inc(n)

    def render(self) -> tuple[bytes, str]:
        """The exposition text of this process, or of every worker's in multiprocess mode."""
        self.flush()
        if self.multiprocess is None:
            return generate_latest(self.registry), CONTENT_TYPE
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _collected_histogram(name: str, documentation: str, labelnames: Sequence[str], *, buckets: Sequence[float],
                         registry: CollectorRegistry) -> HistogramCollector:
    """A `HistogramCollector` registered in `registry`, made like prometheus_client's Histogram."""
    histogram = HistogramCollector(name, documentation, labelnames, buckets)
    registry.register(histogram)
    return histogram

