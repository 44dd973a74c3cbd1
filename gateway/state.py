"""Typed application state: the live config (swapped whole on reload) and the long-lived resources."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from config import Channel, ClientKey, Config, ConfigError, Loaded, load_config
from gateway.billing.limiter import Limiter
from gateway.http.answer import AnswerFactory, public_answer
from gateway.http.drain import Drain
from gateway.http.guard import ConnectionGuard
from gateway.http.upstream import Upstream
from gateway.ledger.reader import UsageReader
from gateway.ledger.refused import RefusedCap
from gateway.ledger.sink import UsageSink
from gateway.ops.metrics import Metrics
from gateway.relay.health import Health
from providers import CHANNEL_PROVIDERS

if TYPE_CHECKING:  # the task layer builds on these services
    from gateway.tasks.engine import TaskEngine
    from gateway.tasks.poller import Poller

log = structlog.get_logger("gateway")


class Lookups:
    """What requests work out from one config and reuse: the channels each (key, model, platform, tags)
    may use, and the client key each known secret belongs to. Kept beside that config by the runtime, so
    they live and die with it; bounded, since model names and secrets come from clients."""

    __slots__ = ("config", "routes", "secrets")

    MAX_ROUTES = 4096

    def __init__(self, config: Config) -> None:
        self.config = config
        self.routes: dict[tuple[int, str, str | None, frozenset[str] | None, bool], tuple[Channel, ...]] = {}
        # Only good secrets are kept, so this is no bigger than `keys:`: a flood of bad keys cannot grow it.
        self.secrets: dict[str, ClientKey] = {}


class Runtime:
    """Holds the config in force. A request reads `runtime.config` once and keeps that object,
    so a reload swaps one reference and requests in flight finish on the config they started with."""

    def __init__(self, config: Config, path: str | None = None) -> None:
        self.config = config
        self._lookups = Lookups(config)
        self.path = path
        self.health = Health()
        self.generation = 1
        self.on_reload: list[Callable[[Config], None]] = []
        # For /admin/status, /metrics and /readyz: which file is in force, since when, and whether
        # the last SIGHUP failed (then the old config serves, and /readyz says why it is not ready).
        self.loaded_at = time.time()
        self.last_reload_error: str | None = None
        self.reloads = {"ok": 0, "failed": 0}

    @property
    def config_sha256(self) -> str | None:
        """The sha256 of the config file in force, as the loader read it."""
        return self.config.sha256

    def lookups(self, config: Config) -> Lookups:
        """The lookups of `config`: the config in force, or (rarely) one a reload has since replaced."""
        lookups = self._lookups
        return lookups if lookups.config is config else Lookups(config)

    def reload(self) -> bool:
        if self.path is None:
            return False
        try:
            loaded = load_config(self.path, providers=CHANNEL_PROVIDERS)
        except ConfigError as exc:
            log.error("config_reload_failed", path=self.path, problems=exc.problems)
            self.last_reload_error = "; ".join(exc.problems)[:2000]
            self.reloads["failed"] += 1
            return False
        new, old = loaded.config, self.config
        if (new.listen, new.database, new.spool_path) != (old.listen, old.database, old.spool_path):
            log.warning("config_reload_restart_needed", detail="listen, database and spool changes apply after a restart")
        self.config = loaded.config
        self._lookups = Lookups(self.config)
        self.generation += 1
        self.loaded_at, self.last_reload_error = time.time(), None
        self.reloads["ok"] += 1
        for hook in self.on_reload:
            hook(self.config)
        log.info("config_reloaded", path=self.path, generation=self.generation, channels=len(self.config.channels))
        log_loaded(loaded)
        return True


def log_loaded(loaded: Loaded) -> None:
    """A config just put in force: its warnings, then a line per channel (whose line says why it is
    disabled, so that warning is not said twice)."""
    for warning in loaded.warnings:
        if warning not in loaded.disabled:
            log.warning("config_warning", detail=warning)
    log_channels(loaded.config)


def log_channels(config: Config) -> None:
    """One line per channel, at start-up and after each reload: enabled, or disabled and why
    ("OPENAI_API_KEY is not set", "enabled: false"). No line holds a secret."""
    for c in config.channels:
        if c.enabled:
            log.info("channel_enabled", channel=c.name, provider=c.provider, platform=c.platform,
                     models=list(c.models.patterns), api_keys=len(c.api_keys), priority=c.priority, weight=c.weight)
        else:
            log.warning("channel_disabled", channel=c.name, provider=c.provider, platform=c.platform,
                        models=list(c.models.patterns), reason=c.disabled_reason or "enabled: false")


@dataclass(slots=True, eq=False)
class Services:
    """The process's long-lived resources. Every request reaches them through its context
    (`ctx.services`), not through app lookups: those are a few property calls deep each."""

    runtime: Runtime
    usage: UsageSink
    drain: Drain
    refused: RefusedCap = field(default_factory=RefusedCap)  # how many 401s get a row (gateway.ledger.refused)
    guard: ConnectionGuard | None = None  # the client connections' bounds, when serving (gateway.server)
    client: Upstream | None = None  # opened when the app starts (gateway.http.paths)
    answer: AnswerFactory = public_answer  # the answer writer chosen with it
    metrics: Metrics | None = None  # None when metrics are off (GATEWAY_METRICS=off)
    limiter: Limiter | None = None  # opened when the app starts (gateway.billing.startup)
    reader: UsageReader | None = None  # the usage table read back (gateway.api.account), opened with `usage`
    tasks: TaskEngine | None = None  # async generation (gateway.tasks), opened when the app starts
    poller: Poller | None = None  # in one process only (worker 0): polls tasks and delivers callbacks
    streams: int = 0  # streamed answers being relayed now (gateway.relay.pump)

    @property
    def upstream(self) -> Upstream:
        assert self.client is not None, "the upstream session opens when the app starts"
        return self.client


SERVICES = web.AppKey("services", Services)
