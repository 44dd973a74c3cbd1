"""structlog set-up: JSON lines (or console) on stderr, one access line per request."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

from config import LogConfig


def setup_logging(cfg: LogConfig) -> None:
    level = getattr(logging, cfg.level.upper())
    renderer: structlog.types.Processor
    if cfg.format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory: structlog.types.WrappedLogger = structlog.PrintLoggerFactory(sys.stderr)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
