"""The CLI: the console command, the usage report, client keys, unset secrets, the start-up summary, and
refusing an open proxy on a public address."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import structlog
import yaml

import gateway
from config import Loaded
from gateway.cli import log_summary, version
from gateway.ledger.sink import UsageRow
from tests.conftest import KEYS, channel, make_config
from tests.procs import GatewayProcess

ROOT = Path(__file__).parent.parent.parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=env)


def test_serve_refuses_public_listen_without_keys(tmp_path: Path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(tmp_path / "u.db")}))
    proc = run("serve", "--config", str(cfg), "--listen", "0.0.0.0:18080")
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0:18080 with no keys" in proc.stderr


async def test_usage_report(vendor, gateway_factory, tmp_path: Path):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor)],
                                "models": {"gpt-4o": {"price": {"input": 1000000, "output": 2000000}}}})
    client = gw.client()
    for _ in range(3):
        await client.chat.completions.create(model="gpt-4o", messages=[])
    rows = await gw.rows()
    assert rows[0]["cost"] == 11 * 1 + 3 * 2  # no cached_input price: cached tokens bill as input
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(gw.db_path)}))
    proc = run("usage", "--config", str(cfg), "--by", "model", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (report,) = orjson.loads(proc.stdout)
    assert report["model"] == "gpt-4o" and report["requests"] == 3 and report["total_tokens"] == 42
    table = run("usage", "--config", str(cfg)).stdout.splitlines()
    assert table[0].split()[:3] == ["key", "requests", "errors"] and table[1].split()[:2] == ["app1", "3"]


def test_replay_log_puts_unsaved_rows_back_once(tmp_path: Path):
    db = tmp_path / "usage.db"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"database": str(db)}))
    rows = [UsageRow(request_id=f"r{i}", ts=1000.0 + i, key_name="app1", status=200, total_tokens=i) for i in range(3)]
    log = tmp_path / "gateway.log"
    lines = [orjson.dumps({"row": dataclasses.asdict(r), "error": "disk full", "event": "usage_row_unsaved",
                           "level": "critical"}) for r in rows]
    log.write_bytes(b"\n".join([b'{"event":"request"}', *lines, b"usage_row_unsaved but not JSON"]) + b"\n")
    first = run("usage", "--config", str(config), "--replay-log", str(log))
    assert first.returncode == 0 and first.stdout.strip() == "3 row(s) inserted, 0 already there, 1 line(s) unreadable"
    again = run("usage", "--config", str(config), "--replay-log", str(log))
    assert again.stdout.strip() == "0 row(s) inserted, 3 already there, 1 line(s) unreadable"
    got = sqlite3.connect(db).execute("SELECT request_id, ts, key_name, total_tokens FROM usage ORDER BY id").fetchall()
    assert got == [(f"r{i}", 1000.0 + i, "app1", i) for i in range(3)]


# -- the console command, keys, unset secrets, the start-up summary (issue 17) ---------------------------

UNSET_CONFIG = {
    "keys": [{"name": "app1", "key": "${GW_TEST_APP1_KEY}", "models": ["gpt-4o*"], "rpm": 60, "budget": 10.0},
             {"name": "ops", "key_sha256": hashlib.sha256(b"ops-secret").hexdigest(), "platforms": ["openai"]}],
    "channels": [{"name": "openai-main", "provider": "openai", "base_url": "https://api.openai.com/v1",
                  "api_keys": ["${GW_TEST_OPENAI_KEY}"], "models": ["gpt-4o"]}],
}


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(tmp_path / "u.db"), **raw}))
    return cfg


def test_console_script_is_installed_and_prints_the_version():
    script = Path(sys.executable).parent / "gateway"
    assert script.exists(), "make install installs the `gateway` console script into the venv"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"gateway {version()}"
    assert version() == gateway.__version__  # setup.cfg reads it from the package
    assert run("version").stdout.strip() == version()
    assert "usage: gateway " in run("--help").stdout


def test_keys_hash_and_new():
    proc = subprocess.run([sys.executable, "-m", "gateway", "keys", "hash"], input="s3cret\n", capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == hashlib.sha256(b"s3cret").hexdigest() + "\n"
    empty = subprocess.run([sys.executable, "-m", "gateway", "keys", "hash"], input="", capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert empty.returncode == 1 and "no key on stdin" in empty.stderr
    new = run("keys", "new", "--name", "ci bot")
    assert new.returncode == 0, new.stderr
    key, blank, *snippet = new.stdout.splitlines()
    assert key.startswith("sk-gw-") and len(key) > 40 and blank == ""
    (entry,) = yaml.safe_load("\n".join(snippet))
    assert entry == {"name": "ci bot", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
    assert run("keys", "new", "--name", "x").stdout.split()[0] != key


def test_keys_list_and_usage_need_no_secrets(tmp_path: Path):
    cfg = write(tmp_path, UNSET_CONFIG)
    env = env_without("GW_TEST_APP1_KEY", "GW_TEST_OPENAI_KEY")
    rows = [UsageRow(request_id=f"r{i}", ts=1000.0 + i, key_name="app1", status=200, total_tokens=5, cost=1.5)
            for i in range(2)]
    log = tmp_path / "gateway.log"
    log.write_bytes(b"\n".join(orjson.dumps({"row": dataclasses.asdict(r), "event": "usage_row_unsaved"}) for r in rows))
    assert run("usage", "--config", str(cfg), "--replay-log", str(log), env=env).returncode == 0
    usage = run("usage", "--config", str(cfg), "--format", "json", env=env)
    assert usage.returncode == 0, usage.stderr
    assert orjson.loads(usage.stdout)[0]["requests"] == 2

    listed = run("keys", "list", "--config", str(cfg), "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    app1, ops = orjson.loads(listed.stdout)
    assert app1 == {"name": "app1", "models": ["gpt-4o*"], "platforms": None, "tags": None, "rpm": 60, "tpm": None,
                    "budget": 10.0, "budget_period": "total", "period_start": None, "period_end": None,
                    "spend": 3.0, "remaining": 7.0}
    assert ops["name"] == "ops" and ops["platforms"] == ["openai"] and ops["spend"] == 0.0
    table = run("keys", "--config", str(cfg), env=env).stdout.splitlines()
    assert table[0].split() == ["name", "models", "platforms", "tags", "rpm", "tpm", "budget", "budget_period", "spend",
                                "remaining"]
    assert table[1].split() == ["app1", "gpt-4o*", "*", "*", "60", "-", "10", "total", "3", "7"]
    assert "ops-secret" not in listed.stdout and hashlib.sha256(b"ops-secret").hexdigest() not in listed.stdout + "".join(table)


def test_check_names_the_unset_variables(tmp_path: Path):
    cfg = write(tmp_path, UNSET_CONFIG)
    env = env_without("GW_TEST_APP1_KEY", "GW_TEST_OPENAI_KEY")
    strict = run("check", "--config", str(cfg), env=env)
    assert strict.returncode == 1 and strict.stdout.splitlines() == ["keys[0].key: GW_TEST_APP1_KEY is not set"]
    lenient = run("check", "--config", str(cfg), "--allow-unset", env=env)
    assert lenient.returncode == 0, lenient.stdout
    lines = lenient.stdout.splitlines()
    assert "warning: keys[0].key: GW_TEST_APP1_KEY is not set: the key 'app1' cannot authenticate" in lines
    assert "warning: channels[0]: channel 'openai-main' disabled: GW_TEST_OPENAI_KEY is not set" in lines
    assert lines[-1] == f"{cfg}: OK (0/1 channels enabled, 2 keys, listen 127.0.0.1:8080)"
    ok = run("check", "--config", str(cfg), env={**env, "GW_TEST_APP1_KEY": "k"})
    assert ok.returncode == 0 and "GW_TEST_OPENAI_KEY is not set" in ok.stdout


async def test_serve_logs_a_start_up_summary_without_secrets(vendor, tmp_path: Path):
    config = {"log": {"format": "console"}, "keys": KEYS, "channels": [
        channel("main", vendor),
        channel("spare", vendor, api_keys=["${GW_TEST_SPARE_KEY}"]),
        channel("off", vendor, enabled=False),
    ]}
    gw = GatewayProcess(tmp_path, config, env={"GW_TEST_SPARE_KEY": ""})
    try:
        await gw.start()
        await gw.wait_log("listening")
        logs = gw.logs()
    finally:
        await gw.stop()
    assert f"listen=127.0.0.1:{gw.port}" in logs and "channels_enabled=1" in logs and "channels_disabled=2" in logs
    assert "keys=1" in logs
    main = next(line for line in logs.splitlines() if "channel_enabled" in line)
    assert "channel=main" in main and "api_keys=1" in main
    spare = next(line for line in logs.splitlines() if "channel_disabled" in line and "channel=spare" in line)
    # (structlog's console renderer quotes a value with spaces from 25.x on, not before)
    assert re.search(r"reason='?GW_TEST_SPARE_KEY is empty", spare)
    assert re.search(r"reason='?enabled: false", next(line for line in logs.splitlines() if "channel=off" in line))
    assert "secret" not in logs and "test-key" not in logs
    assert "config_warning" not in logs  # the disabled channel's warning is its channel_disabled line


def test_summary_function_names_every_channel():
    from config import Listen

    cfg = make_config({"channels": [{**channel("a", _Fake()), "api_keys": ["${NOPE}"]}]}, Path("/nonexistent"))
    with structlog.testing.capture_logs() as logs:
        log_summary(Loaded(cfg, []), "g.yaml", Listen("127.0.0.1", 9))
    start, ch = logs
    assert start["event"] == "starting" and start["log_level"] == "warning" and start["channels_enabled"] == 0
    assert "every model request gets 503" in start["detail"]
    assert ch == {"event": "channel_disabled", "log_level": "warning", "channel": "a", "provider": "openai",
                  "platform": "openai", "models": ["gpt-*"], "reason": "NOPE is not set"}


async def test_503_names_the_disabled_channel_and_why(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [
        {**channel("openai-main", vendor, models=["gpt-4o"]), "api_keys": ["${OPENAI_API_KEY}"]},
        channel("other", vendor, models=["gpt-5"]),
    ]})
    with pytest.raises(openai.APIStatusError) as info:
        await gw.client().chat.completions.create(model="gpt-4o", messages=[])
    assert info.value.status_code == 503
    assert info.value.body["message"] == (  # type: ignore[index]
        "No enabled channel serves model 'gpt-4o' right now: channel 'openai-main' is disabled "
        "(OPENAI_API_KEY is not set)."
    )


class _Fake:
    base_url = "http://127.0.0.1:9/v1"


def test_check_lists_the_models_nothing_prices(tmp_path: Path):
    cfg = write(tmp_path, {
        "channels": [{"name": "c", "provider": "openai", "base_url": "http://x/v1", "api_keys": ["k"],
                      "models": ["gpt-4o", "gpt-4o-mini", "o*"], "model_map": {"gpt-5": "gpt-5-2025"}}],
        "models": {"gpt-4o": {"price": {"input": 2.5, "output": 10}}, "gpt-4o-mini": {"catalog": "t2t"}},
    })  # fmt: skip
    out = run("check", "--config", str(cfg))
    assert out.returncode == 0
    assert "unpriced: gpt-4o-mini, gpt-5: served by a channel, priced by no models.*.price" in out.stdout
