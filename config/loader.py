"""Read gateway.yaml: interpolate the environment, parse, and validate into a `Config`.

Every problem is collected with its key path (`channels[1].base_url: must be an http(s) URL`) so that
`gateway check` can show them all at once. Unknown keys are problems too: a typo must not be ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from config.schema import (
    BILLING_HEADERS,
    DATABASE_SCHEMES,
    ON_REDIS_ERROR,
    STATE_SCHEMES,
    AdminKey,
    Channel,
    ClientKey,
    Config,
    GlobSet,
    Limits,
    Listen,
    LogConfig,
    ModelInfo,
    Price,
    Routing,
    Service,
    StateSettings,
    TaskSettings,
    Timeouts,
)

CATALOGS = frozenset(
    {"t2t", "t2i", "i2i", "t2v", "i2v", "ref2v", "embedding", "rerank", "tts", "asr", "moderation"}
)
BUDGET_PERIODS = ("total", "daily", "monthly")
# Catalogs of async generation: their requests become tasks (gateway.tasks).
TASK_CATALOGS = frozenset({"t2v", "i2v", "ref2v", "t2i", "i2i"})
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")
RESERVED_PLATFORMS = frozenset({"v1", "v1beta", "healthz", "readyz"})
_PLATFORM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
RESPONSES_MODES = ("native", "chat")
MAX_LEASE = 0.1  # state.lease: a share of a limit
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: what a header name may be
# Framing headers the gateway writes for every upstream request.
_GATEWAY_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade"})
_HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

T = TypeVar("T")


class ConfigError(Exception):
    """The file cannot be used; `problems` lists every reason with its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: list[str]
    # The warnings that say a channel is disabled (and why): a server's channel_disabled lines say them
    # already (gateway.state.log_loaded), where `gateway check` prints them with the rest.
    disabled: list[str] = dataclasses.field(default_factory=list)


def interpolate(text: str, env: Mapping[str, str], missing: Callable[[str], str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset (or empty) VAR without default becomes empty,
    or `missing(VAR)` when given."""

    def sub(m: re.Match[str]) -> str:
        value = env.get(m.group(1))
        if m.group(2) is not None and not value:
            return m.group(2)
        if not value and missing is not None:
            return missing(m.group(1))
        return value or ""

    return _VAR_RE.sub(sub, text)


def unset_variables(text: str, env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Where the YAML holds a `${VAR}` that is unset or empty (and has no default): key path -> the
    variables' names, so that a message can say which variable to set. Found by parsing a second time
    with a marker in place of each such variable; {} when there is none (or the marked text does not
    parse, which the real parse then reports)."""
    names: list[str] = []
    nonce = secrets.token_hex(4)

    def marker(name: str) -> str:
        names.append(name)
        return f"__unset{nonce}_{len(names) - 1}__"

    marked = interpolate(text, env, marker)
    if not names:
        return {}
    try:
        tree = yaml.safe_load(marked)
    except yaml.YAMLError:
        return {}
    found: dict[str, tuple[str, ...]] = {}
    marker_re = re.compile(rf"__unset{nonce}_(\d+)__")

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str) and (hits := marker_re.findall(node)):
            found[path] = tuple(dict.fromkeys(names[int(i)] for i in hits))

    walk(tree, "")
    return found


def not_set(names: Collection[str], env: Mapping[str, str]) -> str:
    """`OPENAI_API_KEY is not set`, `A is empty and B is not set`."""
    return " and ".join(f"{n} is {'empty' if n in env else 'not set'}" for n in names)


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    providers: Collection[str] | None = None,
    *,
    allow_unset: bool = False,
) -> Loaded:
    """Load and validate `path`. Raises ConfigError listing every problem.

    `allow_unset`: for the commands that only read (usage, keys): a client key or any other value whose
    `${VAR}` is unset is a warning naming the variable instead of a problem; such a client key is kept
    for its name and limits but matches no secret. Never for serving."""
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text"]) from exc
    loaded = parse_config(
        text, env=os.environ if env is None else env, providers=providers, source=str(path), allow_unset=allow_unset
    )
    # The hash of the very bytes parsed (what /admin/status and /metrics say is in force).
    return dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, sha256=hashlib.sha256(data).hexdigest()))


def parse_config(
    text: str,
    env: Mapping[str, str],
    providers: Collection[str] | None = None,
    source: str = "<string>",
    *,
    allow_unset: bool = False,
) -> Loaded:
    try:
        raw = yaml.safe_load(interpolate(text, env))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{source}: invalid YAML{where}: {getattr(exc, 'problem', exc)}"]) from exc
    v = _Validator(providers, unset_variables(text, env), env, allow_unset)
    config = v.config(raw if raw is not None else {}, source)
    if v.problems:
        raise ConfigError(v.problems)
    assert config is not None
    return Loaded(config, v.warnings, v.disabled)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class _Validator:
    """Walks the parsed YAML, building schema objects and collecting problems."""

    def __init__(
        self,
        providers: Collection[str] | None,
        unset: Mapping[str, tuple[str, ...]] | None = None,
        env: Mapping[str, str] | None = None,
        allow_unset: bool = False,
    ) -> None:
        self.providers = providers
        self.unset = unset or {}
        self.env = env or {}
        self.allow_unset = allow_unset
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.disabled: list[str] = []  # the warnings of disabled channels (see Loaded.disabled)

    def fail(self, path: str, message: str) -> None:
        names = self.unset.get(path)
        if names:
            message = f"{message} ({self.not_set(path)})"
            if self.allow_unset:
                self.warnings.append(f"{path}: {message}")
                return
        self.problems.append(f"{path}: {message}")

    def not_set(self, *paths: str) -> str:
        """`OPENAI_API_KEY is not set` for the variables behind these key paths; "" when none is known."""
        names = dict.fromkeys(n for p in paths for n in self.unset.get(p, ()))
        return not_set(names, self.env)

    # -- primitives -------------------------------------------------------------------------

    def mapping(self, node: Any, path: str, allowed: Collection[str]) -> dict[str, Any] | None:
        if not isinstance(node, dict):
            self.fail(path, f"must be a mapping, got {_kind(node)}")
            return None
        for key in node:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else str(key), f"unknown key (expected one of: {', '.join(allowed)})")
        return node

    def string(self, node: Any, path: str, *, empty_ok: bool = False) -> str | None:
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            node = str(node)  # `gpt-4: ...` style keys and numeric names read as numbers
        if not isinstance(node, str):
            self.fail(path, f"must be a string, got {_kind(node)}")
            return None
        if not node and not empty_ok:
            self.fail(path, "must not be empty")
            return None
        return node

    def integer(self, node: Any, path: str, minimum: int) -> int | None:
        if isinstance(node, bool) or not isinstance(node, int):
            self.fail(path, f"must be an integer, got {_kind(node)}")
            return None
        if node < minimum:
            self.fail(path, f"must be at least {minimum}")
            return None
        return node

    def number(self, node: Any, path: str, minimum: float, *, exclusive: bool = False) -> float | None:
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            self.fail(path, f"must be a number, got {_kind(node)}")
            return None
        if node < minimum or (exclusive and node == minimum):
            self.fail(path, f"must be {'greater than' if exclusive else 'at least'} {minimum:g}")
            return None
        return float(node)

    def lease_share(self, node: Any, path: str) -> float | None:
        share = self.number(node, path, 0)
        if share is not None and share > MAX_LEASE:  # a lease is granted only under 90% of a limit
            self.fail(path, f"must be at most {MAX_LEASE:g} (a share of each limit)")
            return None
        return share

    def boolean(self, node: Any, path: str) -> bool | None:
        if not isinstance(node, bool):
            self.fail(path, f"must be true or false, got {_kind(node)}")
            return None
        return node

    def strings(self, node: Any, path: str) -> tuple[str, ...] | None:
        if not isinstance(node, list):
            self.fail(path, f"must be a list of strings, got {_kind(node)}")
            return None
        out = [self.string(item, f"{path}[{i}]") for i, item in enumerate(node)]
        return tuple(s for s in out if s is not None) if None not in out else None

    def str_map(self, node: Any, path: str) -> dict[str, str] | None:
        if not isinstance(node, dict):
            self.fail(path, f"must be a mapping of strings, got {_kind(node)}")
            return None
        out: dict[str, str] = {}
        for k, val in node.items():
            key, value = self.string(k, f"{path}.{k}"), self.string(val, f"{path}.{k}")
            if key is not None and value is not None:
                out[key] = value
        return out

    def opt(self, node: dict[str, Any], key: str, path: str, read: Callable[[Any, str], T | None], default: T) -> T:
        if key not in node or node[key] is None:
            return default
        value = read(node[key], f"{path}.{key}" if path else key)
        return default if value is None else value

    # -- sections -----------------------------------------------------------------------------

    def config(self, raw: Any, source: str) -> Config | None:
        top = self.mapping(
            raw,
            "",
            (
                "listen", "database", "spool", "log", "limits", "workers", "shutdown_grace_s",
                "routing", "keys", "channels", "models", "admin_keys", "metrics_listen", "tasks", "services", "state",
            ),
        )
        if top is None:
            return None
        listen = self.opt(top, "listen", "", self.listen, Listen("127.0.0.1", 8080))
        database = self.opt(top, "database", "", self.string, "data/gateway.db")
        if "://" in database and not database.startswith(DATABASE_SCHEMES):
            # Never echo the URL: it may carry a password.
            self.fail("database", "must be a SQLite file path or a PostgreSQL URL (postgresql://...)")
        spool = self.opt(top, "spool", "", self.string, None)
        log = self.opt(top, "log", "", self.log, LogConfig())
        limits = self.opt(top, "limits", "", self.limits, Limits())
        workers = self.opt(top, "workers", "", lambda n, p: self.integer(n, p, 1), 1)
        grace = self.opt(top, "shutdown_grace_s", "", lambda n, p: self.number(n, p, 0), 30.0)
        routing = self.opt(top, "routing", "", self.routing, Routing())
        keys = self.opt(top, "keys", "", self.keys, tuple[ClientKey, ...]())
        channels = self.opt(top, "channels", "", self.channels, tuple[Channel, ...]())
        models = self.opt(top, "models", "", self.models, dict[str, ModelInfo]())
        admin_keys = self.opt(top, "admin_keys", "", self.admin_keys, tuple[AdminKey, ...]())
        for i, admin in enumerate(admin_keys):
            client = next((k.name for k in keys if k.key_sha256 == admin.key_sha256), None)
            if client is not None:
                self.fail(f"admin_keys[{i}]", f"same secret as client key {client!r}: an admin key is not a client key")
        metrics_listen = self.opt(top, "metrics_listen", "", self.listen, None)
        if metrics_listen is not None and metrics_listen == listen:
            self.fail("metrics_listen", f"{metrics_listen} is the listen address itself: give /metrics a port of its own")
        elif metrics_listen is not None and not metrics_listen.is_loopback:
            self.warnings.append(f"metrics_listen: {metrics_listen} serves /metrics without auth beyond this host")
        tasks = self.opt(top, "tasks", "", self.tasks, TaskSettings())
        services = self.opt(top, "services", "", self.services, tuple[Service, ...]())
        state = self.opt(top, "state", "", self.state, StateSettings())
        if not keys and not listen.is_loopback:
            self.fail("listen", f"{listen} is not a loopback address and no keys are defined: add keys: or listen on 127.0.0.1")
        return Config(
            listen=listen, database=database, spool=spool, log=log, limits=limits, workers=workers,
            shutdown_grace_s=grace, routing=routing, keys=keys, channels=channels,
            models=models, admin_keys=admin_keys, metrics_listen=metrics_listen, source=source,
            tasks=tasks, services=services, state=state,
        )

    def tasks(self, node: Any, path: str) -> TaskSettings | None:
        m = self.mapping(node, path, ("poll_interval_s", "timeout_s", "store_results", "allow_private_callbacks"))
        if m is None:
            return None
        d = TaskSettings()
        timeouts = dict(d.timeout_s)
        given = m.get("timeout_s")
        if given is not None:
            t = self.mapping(given, f"{path}.timeout_s", tuple(sorted(TASK_CATALOGS))) or {}
            for catalog, value in t.items():
                seconds = self.number(value, f"{path}.timeout_s.{catalog}", 0, exclusive=True)
                if seconds is not None:
                    timeouts[catalog] = seconds
        positive = lambda n, p: self.number(n, p, 0, exclusive=True)  # noqa: E731
        return TaskSettings(
            poll_interval_s=self.opt(m, "poll_interval_s", path, positive, d.poll_interval_s),
            timeout_s=timeouts,
            store_results=self.opt(m, "store_results", path, self.boolean, False),
            allow_private_callbacks=self.opt(m, "allow_private_callbacks", path, self.boolean, False),
        )

    def state(self, node: Any, path: str) -> StateSettings | None:
        m = self.mapping(node, path, ("redis", "on_redis_error", "prefix", "reservation_ttl_s", "lease"))
        if m is None:
            return None
        # Empty (`redis: ${REDIS_URL:-}` with the variable unset) shares nothing, like no `redis` at all.
        url = self.opt(m, "redis", path, lambda n, p: self.string(n, p, empty_ok=True), None) or None
        if url is not None and not url.startswith(STATE_SCHEMES):
            # Never echo the URL: it may carry a password.
            self.fail(f"{path}.redis", f"must be a Redis URL ({', '.join(s + '...' for s in STATE_SCHEMES)})")
            url = None
        prefix = self.opt(m, "prefix", path, self.string, "gw")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", prefix):
            self.fail(f"{path}.prefix", "may hold only letters, digits and _ . : - (braces would change the keys' hash slot)")
        return StateSettings(
            redis=url,
            on_redis_error=self.opt(m, "on_redis_error", path, lambda n, p: self.choice(n, p, ON_REDIS_ERROR), "local"),
            prefix=prefix,
            reservation_ttl_s=self.opt(m, "reservation_ttl_s", path, lambda n, p: self.number(n, p, 0, exclusive=True), 600.0),
            lease=self.opt(m, "lease", path, self.lease_share, 0.02),
        )

    def services(self, node: Any, path: str) -> tuple[Service, ...] | None:
        if not isinstance(node, list):
            self.fail(path, f"must be a list, got {_kind(node)}")
            return None
        out: list[Service] = []
        codes: set[str] = set()
        for i, item in enumerate(node):
            p = f"{path}[{i}]"
            m = self.mapping(item, p, ("service_code", "name", "category", "model", "description"))
            if m is None:
                continue
            code = self.string(m.get("service_code"), f"{p}.service_code")
            name = self.string(m.get("name"), f"{p}.name")
            model = self.string(m.get("model"), f"{p}.model")
            if code in codes:
                self.fail(f"{p}.service_code", f"duplicate service_code {code!r}")
            if code and name and model:
                codes.add(code)
                out.append(Service(
                    service_code=code, name=name, model=model,
                    category=self.opt(m, "category", p, self.string, None),
                    description=self.opt(m, "description", p, self.string, None),
                ))  # fmt: skip
        return tuple(out)

    def listen(self, node: Any, path: str) -> Listen | None:
        text = self.string(node, path)
        if text is None:
            return None
        return parse_listen(text, lambda msg: self.fail(path, msg))

    def log(self, node: Any, path: str) -> LogConfig | None:
        m = self.mapping(node, path, ("level", "format"))
        if m is None:
            return None
        level = self.opt(m, "level", path, lambda n, p: self.choice(n, p, LOG_LEVELS), "info")
        fmt = self.opt(m, "format", path, lambda n, p: self.choice(n, p, LOG_FORMATS), "json")
        return LogConfig(level=level, format=fmt)

    def choice(self, node: Any, path: str, choices: Collection[str]) -> str | None:
        value = self.string(node, path)
        if value is not None and value not in choices:
            self.fail(path, f"must be one of {', '.join(sorted(choices))}, got {value!r}")
            return None
        return value

    def limits(self, node: Any, path: str) -> Limits | None:
        m = self.mapping(
            node,
            path,
            ("max_body_mb", "max_response_mb", "refused_rows_per_s", "max_connections", "idle_timeout_s",
             "header_timeout_s", "body_timeout_s"),
        )
        if m is None:
            return None
        positive = lambda n, p: self.number(n, p, 0, exclusive=True)  # noqa: E731
        count = lambda n, p: self.integer(n, p, 0)  # noqa: E731
        return Limits(
            max_body_mb=self.opt(m, "max_body_mb", path, positive, 32.0),
            max_response_mb=self.opt(m, "max_response_mb", path, positive, 64.0),
            refused_rows_per_s=self.opt(m, "refused_rows_per_s", path, count, 20),
            max_connections=self.opt(m, "max_connections", path, count, 0),
            idle_timeout_s=self.opt(m, "idle_timeout_s", path, positive, 60.0),
            header_timeout_s=self.opt(m, "header_timeout_s", path, positive, 10.0),
            body_timeout_s=self.opt(m, "body_timeout_s", path, positive, 30.0),
        )

    def routing(self, node: Any, path: str) -> Routing | None:
        m = self.mapping(node, path, ("retries", "failure_threshold", "cooldown_s"))
        if m is None:
            return None
        return Routing(
            retries=self.opt(m, "retries", path, lambda n, p: self.integer(n, p, 0), 2),
            failure_threshold=self.opt(m, "failure_threshold", path, lambda n, p: self.integer(n, p, 1), 3),
            cooldown_s=self.opt(m, "cooldown_s", path, lambda n, p: self.number(n, p, 0), 30.0),
        )

    def keys(self, node: Any, path: str) -> tuple[ClientKey, ...] | None:
        if not isinstance(node, list):
            self.fail(path, f"must be a list, got {_kind(node)}")
            return None
        out: list[ClientKey] = []
        names: set[str] = set()
        hashes: dict[str, str] = {}
        for i, item in enumerate(node):
            p = f"{path}[{i}]"
            key = self.client_key(item, p)
            if key is None:
                continue
            if key.name in names:
                self.fail(f"{p}.name", f"duplicate key name {key.name!r}")
            if not key.key_sha256:
                names.add(key.name)  # its secret's variable is unset (allow_unset): it matches nothing
                out.append(key)
                continue
            if key.key_sha256 in hashes:
                self.fail(p, f"same secret as key {hashes[key.key_sha256]!r}")
            names.add(key.name)
            hashes[key.key_sha256] = key.name
            out.append(key)
        return tuple(out)

    def admin_keys(self, node: Any, path: str) -> tuple[AdminKey, ...] | None:
        """Like `keys:`, name and key (or key_sha256) only."""
        if not isinstance(node, list):
            self.fail(path, f"must be a list, got {_kind(node)}")
            return None
        out: list[AdminKey] = []
        names: dict[str, str] = {}
        for i, item in enumerate(node):
            p = f"{path}[{i}]"
            m = self.mapping(item, p, ("name", "key", "key_sha256"))
            if m is None:
                continue
            name, digest = self.string(m.get("name"), f"{p}.name"), self.secret_digest(m, p)
            if name is None or digest is None:
                continue
            if name in names.values():
                self.fail(f"{p}.name", f"duplicate admin key name {name!r}")
            if digest in names:
                self.fail(p, f"same secret as admin key {names[digest]!r}")
            names[digest] = name
            out.append(AdminKey(name=name, key_sha256=digest))
        return tuple(out)

    def secret_digest(self, m: dict[str, Any], path: str) -> str | None:
        """The sha256 of an entry's `key`, or its `key_sha256`; exactly one of them."""
        if ("key" in m) == ("key_sha256" in m):
            self.fail(path, "needs exactly one of key or key_sha256")
        elif "key" in m:
            secret = self.string(m["key"], f"{path}.key", empty_ok=True)
            if secret == "":
                self.fail(f"{path}.key", "is empty (is its environment variable set?)")
            elif secret is not None:
                return sha256_hex(secret)
        else:
            hexd = self.string(m["key_sha256"], f"{path}.key_sha256")
            if hexd is not None and not _HEX64_RE.match(hexd):
                self.fail(f"{path}.key_sha256", "must be 64 hex digits (sha256 of the key)")
            elif hexd is not None:
                return hexd.lower()
        return None

    def client_key(self, node: Any, path: str) -> ClientKey | None:
        m = self.mapping(
            node, path, ("name", "key", "key_sha256", "models", "platforms", "tags", "rpm", "tpm", "budget",
                         "budget_period", "webhook_secret"),
        )
        if m is None:
            return None
        name = self.string(m.get("name"), f"{path}.name")
        digest: str | None = None
        # A key whose ${VAR} is unset: named as such, and for the read-only commands kept (matching nothing).
        unset = self.not_set(f"{path}.key") if "key" in m and "key_sha256" not in m and m["key"] in (None, "") else ""
        if unset and self.allow_unset:
            self.warnings.append(f"{path}.key: {unset}: the key {name!r} cannot authenticate")
            digest = ""
        elif unset:
            self.problems.append(f"{path}.key: {unset}")
        else:
            digest = self.secret_digest(m, path)
        models = self.opt(m, "models", path, self.strings, None)
        platforms = self.opt(m, "platforms", path, self.strings, None)
        tags = self.opt(m, "tags", path, self.strings, None)
        if name is None or digest is None:
            return None
        return ClientKey(
            name=name,
            key_sha256=digest,
            models=GlobSet(models) if models is not None else None,
            platforms=frozenset(platforms) if platforms is not None else None,
            tags=frozenset(tags) if tags is not None else None,
            rpm=self.opt(m, "rpm", path, lambda n, p: self.integer(n, p, 1), None),
            tpm=self.opt(m, "tpm", path, lambda n, p: self.integer(n, p, 1), None),
            budget=self.opt(m, "budget", path, lambda n, p: self.number(n, p, 0), None),
            budget_period=self.opt(m, "budget_period", path, lambda n, p: self.choice(n, p, BUDGET_PERIODS), "total"),
            webhook_secret=self.opt(m, "webhook_secret", path, self.string, None) or None,
        )

    def channels(self, node: Any, path: str) -> tuple[Channel, ...] | None:
        if not isinstance(node, list):
            self.fail(path, f"must be a list, got {_kind(node)}")
            return None
        out: list[Channel] = []
        names: set[str] = set()
        for i, item in enumerate(node):
            ch = self.channel(item, f"{path}[{i}]")
            if ch is None:
                continue
            if ch.name in names:
                self.fail(f"{path}[{i}].name", f"duplicate channel name {ch.name!r}")
            names.add(ch.name)
            out.append(ch)
        return tuple(out)

    def channel(self, node: Any, path: str) -> Channel | None:
        m = self.mapping(
            node,
            path,
            (
                "name", "provider", "platform", "base_url", "api_keys", "models", "model_map",
                "weight", "priority", "tags", "headers", "client_headers", "timeouts", "enabled", "responses",
                "rpm", "tpm",
            ),
        )
        if m is None:
            return None
        name = self.string(m.get("name"), f"{path}.name")
        provider = self.string(m.get("provider"), f"{path}.provider")
        if provider is not None and self.providers is not None and provider not in self.providers:
            self.fail(f"{path}.provider", f"unknown provider {provider!r} (known: {', '.join(sorted(self.providers))})")
            provider = None
        platform = self.opt(m, "platform", path, self.string, provider)
        if platform is not None and (not _PLATFORM_RE.match(platform) or platform in RESERVED_PLATFORMS):
            self.fail(f"{path}.platform", f"{platform!r} cannot be a URL prefix: use lowercase letters, digits, - or _")
        base_url = self.string(m.get("base_url"), f"{path}.base_url")
        if base_url is not None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.fail(f"{path}.base_url", "must be an http(s) URL")
        models = self.strings(m.get("models"), f"{path}.models") if "models" in m else None
        if models is not None and not models:
            self.fail(f"{path}.models", "must list at least one model name or glob")
        elif "models" not in m:
            self.fail(f"{path}.models", "is required: the public model names this channel serves")
        api_keys = self.opt(m, "api_keys", path, self.strings_allow_empty, tuple[str, ...]())
        enabled = self.opt(m, "enabled", path, self.boolean, True)
        given = m.get("api_keys")
        resolved = tuple(k for k in api_keys if k.strip())
        disabled_reason = None if enabled else "enabled: false"
        if enabled and isinstance(given, list) and given and not resolved:
            paths = [f"{path}.api_keys[{i}]" for i in range(len(given))]
            disabled_reason = self.not_set(*paths) or "its api_keys are empty"
            self.disabled.append(f"{path}: channel {name!r} disabled: {disabled_reason}")
            self.warnings.append(self.disabled[-1])
            enabled = False
        timeouts = self.opt(m, "timeouts", path, self.timeouts, Timeouts())
        model_map = self.opt(m, "model_map", path, self.str_map, dict[str, str]())
        weight = self.opt(m, "weight", path, lambda n, p: self.number(n, p, 0), 1.0)
        priority = self.opt(m, "priority", path, lambda n, p: self.integer(n, p, -(10**9)), 0)
        tags = self.opt(m, "tags", path, self.strings, tuple[str, ...]())
        headers = self.opt(m, "headers", path, self.str_map, dict[str, str]())
        client_headers = self.opt(m, "client_headers", path, self.strings, tuple[str, ...]())
        for i, header in enumerate(client_headers):
            if header.lower() not in BILLING_HEADERS:
                self.fail(f"{path}.client_headers[{i}]", f"{header!r} is not a vendor billing header; "
                          f"allowed: {', '.join(sorted(BILLING_HEADERS))}")
        responses = self.opt(m, "responses", path, self.string, "native")
        if responses not in RESPONSES_MODES:
            self.fail(f"{path}.responses", f"must be one of: {', '.join(RESPONSES_MODES)} (chat: serve /v1/responses over /chat/completions)")
        elif responses == "chat" and provider is not None and provider != "openai":
            self.fail(f"{path}.responses", "applies to provider openai only: other providers' Responses clients are always translated")
        self.sendable(api_keys, headers, path)
        if not (name and provider and platform and base_url and models):
            return None
        return Channel(
            name=name,
            provider=provider,
            platform=platform,
            base_url=base_url.rstrip("/"),
            api_keys=resolved,
            models=GlobSet(models),
            model_map=model_map,
            weight=weight,
            priority=priority,
            tags=frozenset(tags),
            headers=headers,
            client_headers=frozenset(h.lower() for h in client_headers),
            timeouts=timeouts,
            enabled=enabled,
            disabled_reason=disabled_reason,
            responses=responses,
            rpm=self.opt(m, "rpm", path, lambda n, p: self.integer(n, p, 1), None),
            tpm=self.opt(m, "tpm", path, lambda n, p: self.integer(n, p, 1), None),
        )

    def sendable(self, api_keys: tuple[str, ...], headers: dict[str, str], path: str) -> None:
        """Keys and headers go into the upstream request head as they are: no line breaks or other
        control characters (a key's value is never echoed), header names that are HTTP tokens, and
        none of the headers the gateway sets itself."""
        for i, key in enumerate(api_keys):
            if _CONTROL_RE.search(key):
                self.fail(f"{path}.api_keys[{i}]", "holds a line break or another control character")
        for name, value in headers.items():
            if not _TOKEN_RE.fullmatch(name):
                self.fail(f"{path}.headers.{name}", "is not a valid header name")
            elif name.lower() in _GATEWAY_HEADERS:
                self.fail(f"{path}.headers.{name}", "is set by the gateway and cannot be configured")
            if _CONTROL_RE.search(value):
                self.fail(f"{path}.headers.{name}", "holds a line break or another control character")

    def strings_allow_empty(self, node: Any, path: str) -> tuple[str, ...] | None:
        if not isinstance(node, list):
            self.fail(path, f"must be a list of strings, got {_kind(node)}")
            return None
        out = [self.string(item if item is not None else "", f"{path}[{i}]", empty_ok=True) for i, item in enumerate(node)]
        return None if None in out else tuple(s for s in out if s is not None)

    def timeouts(self, node: Any, path: str) -> Timeouts | None:
        m = self.mapping(node, path, ("connect_s", "first_byte_s", "idle_s"))
        if m is None:
            return None
        d = Timeouts()
        pos = lambda n, p: self.number(n, p, 0, exclusive=True)  # noqa: E731
        return Timeouts(
            connect_s=self.opt(m, "connect_s", path, pos, d.connect_s),
            first_byte_s=self.opt(m, "first_byte_s", path, pos, d.first_byte_s),
            idle_s=self.opt(m, "idle_s", path, pos, d.idle_s),
        )

    def models(self, node: Any, path: str) -> dict[str, ModelInfo] | None:
        if not isinstance(node, dict):
            self.fail(path, f"must be a mapping of model name to facts, got {_kind(node)}")
            return None
        out: dict[str, ModelInfo] = {}
        for name, facts in node.items():
            p = f"{path}.{name}"
            m = self.mapping(facts if facts is not None else {}, p, ("catalog", "price"))
            if m is None:
                continue
            catalog = self.opt(m, "catalog", p, lambda n, q: self.choice(n, q, CATALOGS), None)
            price = self.opt(m, "price", p, self.price, None)
            out[str(name)] = ModelInfo(catalog=catalog, price=price)
        return out

    def price(self, node: Any, path: str) -> Price | None:
        flat = ("input", "output", "cached_input", "cache_write", "per_image", "per_request", "per_1k_chars")
        m = self.mapping(node, path, (*flat, "per_second"))
        if m is None:
            return None

        def amount(n: Any, p: str) -> float | None:
            return self.number(n, p, 0)

        values: dict[str, Any] = {f: self.opt(m, f, path, amount, None) for f in flat}
        per_second = m.get("per_second")
        if isinstance(per_second, dict):
            values["per_second_by_resolution"] = {
                str(r).upper(): v for r, n in per_second.items() if (v := amount(n, f"{path}.per_second.{r}")) is not None
            }
        else:
            values["per_second"] = self.opt(m, "per_second", path, amount, None)
        return Price(**values)


def unpriced(config: Config) -> list[str]:
    """The models channels serve by name that no `models.*.price` prices: their rows get no cost
    (`gateway check` lists them). Glob patterns are skipped: what they serve is not known in advance."""
    names = dict.fromkeys(
        p for c in config.channels for p in (*c.models.patterns, *c.model_map) if not any(ch in p for ch in "*?[")
    )
    return [n for n in names if (info := config.models.get(n)) is None or info.price is None]


def parse_listen(text: str, fail: Callable[[str], None]) -> Listen | None:
    """Parse `host:port` or `[v6]:port`."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        fail(f"must be HOST:PORT, got {text!r}")
        return None
    port = int(port_text)
    if not 0 < port < 65536:
        fail(f"port must be 1-65535, got {port}")
        return None
    host = host.strip("[]") or "127.0.0.1"
    return Listen(host, port)


def _kind(node: Any) -> str:
    if node is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(node), type(node).__name__)
