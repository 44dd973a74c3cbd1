"""Typed application state: the live config (swapped whole on reload) and the long-lived resources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from config import Config, ConfigError, load_config
from gateway.http.answer import AnswerFactory, public_answer
from gateway.http.drain import Drain
from gateway.http.upstream import Upstream
from gateway.ledger.usage import UsageWriter
from gateway.relay.health import Health
from providers import PROVIDERS

log = structlog.get_logger("gateway")


class Runtime:
    """Holds the config in force. A request reads `runtime.config` once and keeps that object,
    so a reload swaps one reference and requests in flight finish on the config they started with."""

    def __init__(self, config: Config, path: str | None = None) -> None:
        self.config = config
        self.path = path
        self.health = Health()
        self.generation = 1
        self.on_reload: list[Callable[[Config], None]] = []

    def reload(self) -> bool:
        if self.path is None:
            return False
        try:
            loaded = load_config(self.path, providers=PROVIDERS)
        except ConfigError as exc:
            log.error("config_reload_failed", path=self.path, problems=exc.problems)
            return False
        for warning in loaded.warnings:
            log.warning("config_warning", detail=warning)
        if loaded.config.listen != self.config.listen or loaded.config.database != self.config.database:
            log.warning("config_reload_restart_needed", detail="listen and database changes apply after a restart")
        self.config = loaded.config
        self.generation += 1
        for hook in self.on_reload:
            hook(self.config)
        log.info("config_reloaded", path=self.path, generation=self.generation, channels=len(self.config.channels))
        return True


@dataclass(slots=True, eq=False)
class Services:
    """The process's long-lived resources. Every request reaches them through its context
    (`ctx.services`), not through app lookups: those are a few property calls deep each."""

    runtime: Runtime
    usage: UsageWriter
    drain: Drain
    client: Upstream | None = None  # opened when the app starts (gateway.http.paths)
    answer: AnswerFactory = public_answer  # the answer writer chosen with it

    @property
    def upstream(self) -> Upstream:
        assert self.client is not None, "the upstream session opens when the app starts"
        return self.client


SERVICES = web.AppKey("services", Services)
