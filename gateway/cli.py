"""`python -m gateway serve|check|usage` (SPEC section 1)."""

from __future__ import annotations

import argparse
import os
import sys

from config import Config, ConfigError, Loaded, load_config, parse_listen
from gateway.logs import setup_logging
from providers import PROVIDERS


def default_config_path() -> str:
    return os.environ.get("GATEWAY_CONFIG") or "gateway.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="Lightweight LLM API gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the gateway")
    p_serve.add_argument("--config", help="path to gateway.yaml (default: $GATEWAY_CONFIG, then ./gateway.yaml)")
    p_serve.add_argument("--listen", help="HOST:PORT, overriding the config's listen")
    p_check = sub.add_parser("check", help="validate the config and print every problem")
    p_check.add_argument("--config")
    p_usage = sub.add_parser("usage", help="usage report from the database")
    p_usage.add_argument("--config")
    from gateway.ledger.report import add_arguments

    add_arguments(p_usage)
    args = parser.parse_args(argv)
    path = args.config or default_config_path()
    if args.command == "check":
        return check(path)
    loaded = _load_or_exit(path)
    if args.command == "usage":
        from gateway.ledger.report import report

        return report(loaded.config, args)
    return serve(loaded, path, args.listen)


def check(path: str) -> int:
    try:
        loaded = load_config(path, providers=PROVIDERS)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    cfg = loaded.config
    enabled = sum(c.enabled for c in cfg.channels)
    print(f"{path}: OK ({enabled}/{len(cfg.channels)} channels enabled, {len(cfg.keys)} keys, listen {cfg.listen})")
    return 0


def serve(loaded: Loaded, path: str, listen_arg: str | None) -> int:
    from gateway.server import run

    config: Config = loaded.config
    setup_logging(config.log)
    listen = config.listen
    if listen_arg:
        parsed = parse_listen(listen_arg, lambda msg: _exit(f"--listen: {msg}"))
        assert parsed is not None
        listen = parsed
    if not listen.is_loopback and not config.keys:
        _exit(f"listen: refusing to serve on {listen} with no keys defined: add keys: to {path} or listen on 127.0.0.1")
    import structlog

    log = structlog.get_logger("gateway")
    for warning in loaded.warnings:
        log.warning("config_warning", detail=warning)
    return run(config, path, listen)


def _load_or_exit(path: str) -> Loaded:
    try:
        return load_config(path, providers=PROVIDERS)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from exc


def _exit(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(1)
