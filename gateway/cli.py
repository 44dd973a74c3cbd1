"""`gateway serve|check|usage|keys|version`; `python -m gateway` is the same program."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from config import Config, ConfigError, Listen, Loaded, load_config, parse_listen
from config.loader import unpriced
from gateway import __version__
from gateway.logs import setup_logging
from providers import CHANNEL_PROVIDERS

CONFIG_HELP = "path to gateway.yaml (default: $GATEWAY_CONFIG, then ./gateway.yaml)"


def version() -> str:
    """The installed package's version; the source tree's own when it is run without being installed."""
    try:
        return metadata.version("llm-gateway")
    except metadata.PackageNotFoundError:
        return __version__


def default_config_path() -> str:
    return os.environ.get("GATEWAY_CONFIG") or "gateway.yaml"


def parser() -> argparse.ArgumentParser:
    from gateway import keytool
    from gateway.ledger.report import add_arguments as add_usage_arguments

    p = argparse.ArgumentParser(
        prog="gateway",
        description="Lightweight LLM API gateway. Read-only commands (check --allow-unset, usage, keys list) "
        "do not need the vendor secrets' environment variables to be set.",
    )
    p.add_argument("--version", action="version", version=f"gateway {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{serve,check,usage,keys,version}")
    p_serve = sub.add_parser("serve", help="serve the gateway")
    p_serve.add_argument("--config", help=CONFIG_HELP)
    p_serve.add_argument("--listen", help="HOST:PORT, overriding the config's listen")
    p_check = sub.add_parser("check", help="validate the config and print every problem")
    p_check.add_argument("--config", help=CONFIG_HELP)
    p_check.add_argument("--allow-unset", action="store_true",
                         help="an unset ${VAR} is a warning, not a problem (to check a file where its secrets are not set)")
    p_usage = sub.add_parser("usage", help="usage and cost report from the database")
    p_usage.add_argument("--config", help=CONFIG_HELP)
    add_usage_arguments(p_usage)
    p_keys = sub.add_parser("keys", help="list client keys, hash a key, make a new one",
                            description="Client keys.\n\n" + keytool.HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    keytool.add_arguments(p_keys, CONFIG_HELP)
    sub.add_parser("version", help="print the version")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "version":
        print(version())
        return 0
    path = getattr(args, "config", None) or default_config_path()
    if args.command == "check":
        return check(path, allow_unset=args.allow_unset)
    if args.command == "usage":
        from gateway.ledger.report import report

        return report(_load_or_exit(path, allow_unset=True).config, args)
    if args.command == "keys":
        from gateway import keytool

        if args.keys_command == "hash":
            return keytool.hash_key()
        if args.keys_command == "new":
            return keytool.new_key(args.name, args.prefix)
        return keytool.list_keys(_load_or_exit(path, allow_unset=True).config, args.format)
    return serve(_load_or_exit(path), path, args.listen)


def check(path: str, *, allow_unset: bool = False) -> int:
    try:
        loaded = load_config(path, providers=CHANNEL_PROVIDERS, allow_unset=allow_unset)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    cfg = loaded.config
    missing = unpriced(cfg)
    if missing:
        print(f"unpriced: {', '.join(missing)}: served by a channel, priced by no models.*.price (their rows get no cost)")
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
    log_summary(loaded, path, listen)
    return run(config, path, listen)


def log_summary(loaded: Loaded, path: str | None, listen: Listen) -> None:
    """What is about to be served, once at start-up: one line for the gateway, then the config's warnings
    and one line per channel (gateway.state.log_loaded, which a reload repeats)."""
    import structlog

    log = structlog.get_logger("gateway")
    config = loaded.config
    enabled = [c for c in config.channels if c.enabled]
    (log.info if enabled else log.warning)(
        "starting",
        version=version(),
        config=path,
        listen=str(listen),
        workers=config.workers,
        channels_enabled=len(enabled),
        channels_disabled=len(config.channels) - len(enabled),
        keys=len(config.keys),
        **({} if enabled else {"detail": "no channel is enabled: every model request gets 503"}),
    )
    from gateway.state import log_loaded

    log_loaded(loaded)


def _load_or_exit(path: str, *, allow_unset: bool = False) -> Loaded:
    try:
        return load_config(path, providers=CHANNEL_PROVIDERS, allow_unset=allow_unset)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from exc


def _exit(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(1)
