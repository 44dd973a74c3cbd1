"""The deploy files (Dockerfile, docker-compose.yml, deploy/gateway.service) say what docs/deploy.md says
they do, and the reference docs stand alone. Docker and systemd are not run: the files are parsed."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config import parse_config
from providers import CHANNEL_PROVIDERS

ROOT = Path(__file__).resolve().parent.parent
GRACE_S = parse_config((ROOT / "gateway.yaml").read_text(), env={}, providers=CHANNEL_PROVIDERS).config.shutdown_grace_s


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _last_stage() -> list[tuple[str, str]]:
    steps = _dockerfile()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def _only(steps: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in steps if w == word]
    assert len(found) == 1, f"{word}: {found}"
    return found[0]


def _healthcheck_code(command: list[str]) -> str:
    assert command[:2] == ["python", "-c"] and "curl" not in " ".join(command)
    return command[2]


def test_the_image_runs_the_gateway_as_pid_1_not_root():
    final = _last_stage()
    assert re.match(r"python:3\.1[1-9]-slim", _only(final, "FROM"))
    user = _only(final, "USER")
    assert user.split(":")[0] not in ("root", "0")
    entrypoint = json.loads(_only(final, "ENTRYPOINT"))  # exec form: JSON, no shell in between
    cmd = json.loads(_only(final, "CMD"))
    assert entrypoint == ["python", "-m", "gateway"]
    assert cmd == ["serve", "--listen", "0.0.0.0:8080"]
    assert _only(final, "STOPSIGNAL") == "SIGTERM"
    assert json.loads(_only(final, "VOLUME")) == ["/data"]
    env = _only(final, "ENV")
    assert "GATEWAY_CONFIG=/etc/gateway/gateway.yaml" in env and "GATEWAY_DATABASE=/data/gateway.db" in env
    assert all("pip" not in rest or "--no-cache-dir" in rest for word, rest in _dockerfile() if word == "RUN")


def test_the_image_builds_the_c_extension_and_ships_no_compiler():
    """The build stage has a compiler and setup.py (gateway/billing/_lane.c, the limits' calls in C);
    the run stage copies the virtualenv only."""
    steps = _dockerfile()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    build, final = steps[: stages[-1]], steps[stages[-1] :]
    assert any(word == "RUN" and "gcc" in rest for word, rest in build)
    assert any(word == "COPY" and "setup.py" in rest.split() for word, rest in build)
    assert not any("gcc" in rest for _, rest in final)
    assert "**/*.so" in (ROOT / ".dockerignore").read_text().split()  # built in the image, not copied from here


def test_the_image_healthcheck_asks_healthz_without_curl():
    check = _only(_last_stage(), "HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :])
    code = _healthcheck_code(command)
    assert "/healthz" in code and "127.0.0.1:8080" in code
    compile(code, "HEALTHCHECK", "exec")


def test_dockerignore_keeps_secrets_and_state_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "data", "tests"} <= ignored


def test_compose_mounts_the_config_read_only_and_keeps_data_on_a_volume():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gw = compose["services"]["gateway"]
    assert "./gateway.yaml:/etc/gateway/gateway.yaml:ro" in gw["volumes"]
    assert "gateway-data:/data" in gw["volumes"] and "gateway-data" in compose["volumes"]
    assert gw["env_file"] == ".env"
    assert gw["command"] == ["serve", "--listen", "0.0.0.0:8080"]
    assert gw["restart"] in ("unless-stopped", "always", "on-failure")
    assert gw["stop_signal"] == "SIGTERM" and gw.get("init") is not True
    assert int(gw["stop_grace_period"].rstrip("s")) > GRACE_S
    assert "/healthz" in _healthcheck_code(gw["healthcheck"]["test"][1:])
    assert all(port.startswith("127.0.0.1:") for port in gw["ports"])


def _unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "gateway.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_systemd_unit_reloads_drains_and_is_hardened():
    unit = _unit()
    one = {k: v[-1] for k, v in unit.items()}
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["KillMode"] == "mixed" and one["Restart"] == "on-failure"
    assert int(one["TimeoutStopSec"]) > GRACE_S
    assert one["User"] not in ("root", "0") and one["EnvironmentFile"].startswith("/etc/gateway/")
    assert shlex.split(one["ExecStart"])[1:4] == ["-m", "gateway", "serve"]
    assert one["ReadWritePaths"] == one["WorkingDirectory"] == "/var/lib/gateway"
    assert one["CapabilityBoundingSet"] == ""
    assert one["SystemCallFilter"] == "@system-service"
    assert int(one["LimitNOFILE"]) >= 65536
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "MemoryDenyWriteExecute" not in unit  # why: the comment in the unit, and docs/deploy.md


def test_the_image_command_refuses_a_config_without_keys(tmp_path):
    """What the image runs, on the default gateway.yaml (no keys): a clear refusal, not an open gateway."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(ROOT / "gateway.yaml"), "--listen", "0.0.0.0:8080"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_DATABASE": str(tmp_path / "gateway.db")},
    )
    assert proc.returncode == 1
    assert "no keys" in proc.stderr and "0.0.0.0:8080" in proc.stderr


DOCS = ["README.md", *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md")))]


@pytest.mark.parametrize("doc", DOCS)
def test_docs_stand_alone(doc):
    """No pointer at a contract outside the repository; every relative link leads to a file."""
    text = (ROOT / doc).read_text()
    assert "SPEC" not in text
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / doc).parent.joinpath(target).exists(), f"{doc}: link to {target}"


def test_the_readme_lists_the_reference_docs():
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/config.md", "docs/api.md", "docs/usage.md", "docs/deploy.md"):
        assert f"]({doc})" in readme, doc


SCALE = ROOT / "deploy" / "scale"


def _nginx_blocks(text: str) -> dict[str, list[str]]:
    """The directives of nginx.conf by the block they sit in (`upstream gateway`, `location /`, ...),
    comments dropped; `name args` each."""
    blocks: dict[str, list[str]] = {}
    stack = ["main"]
    for token in re.findall(r"[^{};]+[{};]|[{}]", re.sub(r"#[^\n]*", "", text)):
        body = " ".join(token[:-1].split())
        if token.endswith("{"):
            stack.append(body)
        elif token.endswith("}"):
            stack.pop()
        elif body:
            blocks.setdefault(stack[-1], []).append(body)
    return blocks


def test_the_scale_compose_runs_two_replicas_on_one_config_with_redis_and_postgres():
    compose = yaml.safe_load((SCALE / "docker-compose.yml").read_text())
    services = compose["services"]
    gateways = {name: s for name, s in services.items() if name.startswith("gateway")}
    assert sorted(gateways) == ["gateway-1", "gateway-2"]
    mounts = {name: sorted(s["volumes"]) for name, s in gateways.items()}
    assert all("./gateway.yaml:/etc/gateway/gateway.yaml:ro" in m for m in mounts.values())
    data = {next(v.split(":")[0] for v in m if v.endswith(":/data")) for m in mounts.values()}
    assert len(data) == 2 and data <= set(compose["volumes"])  # each replica its own spool and counters file
    assert all("task-results:/data/tasks" in m for m in mounts.values())  # stored results: any replica serves them
    assert ("ARG", 'EXTRAS=""') in _dockerfile()  # the build argument the compose file passes
    for gw in gateways.values():
        assert gw["build"]["context"] == "../.." and gw["build"]["args"]["EXTRAS"] == "scale"
        assert gw["env_file"] == ".env" and gw["command"] == ["serve", "--listen", "0.0.0.0:8080"]
        assert gw["depends_on"] == {"redis": {"condition": "service_healthy"}, "postgres": {"condition": "service_healthy"}}
        assert int(gw["stop_grace_period"].rstrip("s")) > GRACE_S and gw["stop_signal"] == "SIGTERM"
        assert "/healthz" in _healthcheck_code(gw["healthcheck"]["test"][1:])
        assert "ports" not in gw  # reached through nginx only
    assert all(port.startswith("127.0.0.1:") for port in services["nginx"]["ports"])
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    pg, redis = services["postgres"], services["redis"]
    assert any(v.endswith(":/var/lib/postgresql/data") and v.split(":")[0] in compose["volumes"] for v in pg["volumes"])
    assert "pg_isready" in pg["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    assert "${POSTGRES_PASSWORD" in pg["environment"]["POSTGRES_PASSWORD"]  # from .env, not the file
    assert "noeviction" in redis["command"]


def test_the_scale_config_shares_state_through_redis_and_postgres():
    text = (SCALE / "gateway.yaml").read_text()
    env = {"APP1_KEY": "sk-app1-" + "x" * 24, "GATEWAY_ADMIN_KEY": "sk-ops-" + "x" * 24, "POSTGRES_PASSWORD": "pw",
           "REDIS_PASSWORD": "rp", "OPENAI_API_KEY": "sk-vendor"}
    config = parse_config(text, env=env, providers=CHANNEL_PROVIDERS).config  # raises on an invalid file
    assert config.database == "postgresql://gateway:pw@postgres:5432/gateway"
    assert config.state.redis == "redis://:rp@redis:6379/0"
    assert config.keys and config.spool is not None and config.spool.startswith("/data/")
    raw = yaml.safe_load(text)
    assert "${POSTGRES_PASSWORD}" in raw["database"] and "${REDIS_PASSWORD}" in raw["state"]["redis"]


def test_the_scale_nginx_balances_both_replicas_and_streams_unbuffered():
    blocks = _nginx_blocks((SCALE / "nginx.conf").read_text())
    upstream = blocks["upstream gateway"]
    assert "least_conn" in upstream
    servers = [d.split()[1] for d in upstream if d.startswith("server ")]
    assert servers == ["gateway-1:8080", "gateway-2:8080"]
    assert all("max_fails=" in d for d in upstream if d.startswith("server "))
    root = blocks["location /"]
    assert "proxy_pass http://gateway" in root
    assert "proxy_buffering off" in root and "proxy_request_buffering off" in root
    assert "proxy_http_version 1.1" in root
    read = next(d for d in root if d.startswith("proxy_read_timeout"))
    assert int(read.split()[1].rstrip("s")) >= 600
    assert "deny all" in blocks["location /metrics"] and "deny all" in blocks["location /admin/"]
