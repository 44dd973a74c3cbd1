"""The runtime: a reload swaps the config and the lookups derived from it together."""

from __future__ import annotations

import yaml

from config import load_config
from gateway.relay.health import Health
from gateway.relay.routing import plan
from gateway.state import Runtime
from providers import CHANNEL_PROVIDERS

CHANNEL = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_keys": ["vk"], "models": ["gpt-*"]}


def test_lookups_belong_to_the_config_they_were_made_from(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"database": str(tmp_path / "u.db"), "channels": [{"name": "old", **CHANNEL}]}))
    runtime = Runtime(load_config(str(path), providers=CHANNEL_PROVIDERS).config, str(path))
    old = runtime.config
    assert runtime.lookups(old) is runtime.lookups(old)  # kept and reused
    assert [c.name for c in plan(runtime.lookups(old), Health(), None, "gpt-4o", None)] == ["old"]

    path.write_text(yaml.safe_dump({"database": str(tmp_path / "u.db"), "channels": [{"name": "new", **CHANNEL}]}))
    assert runtime.reload()
    assert runtime.lookups(runtime.config).routes == {}  # fresh with the new config
    # A request that started before the reload still routes on the config it started with.
    assert [c.name for c in plan(runtime.lookups(old), Health(), None, "gpt-4o", None)] == ["old"]
    assert [c.name for c in plan(runtime.lookups(runtime.config), Health(), None, "gpt-4o", None)] == ["new"]


def test_reload_says_which_channels_serve_and_the_hash_of_the_bytes_it_parsed(tmp_path, monkeypatch):
    import hashlib

    from structlog.testing import capture_logs

    monkeypatch.delenv("GW_TEST_UNSET_KEY", raising=False)
    path = tmp_path / "gateway.yaml"
    raw = {"database": str(tmp_path / "u.db"), "channels": [
        {"name": "a", "provider": "openai", "base_url": "http://127.0.0.1:9", "api_keys": ["k"], "models": ["m"]},
        {"name": "b", "provider": "openai", "base_url": "http://127.0.0.1:9", "api_keys": ["${GW_TEST_UNSET_KEY}"], "models": ["m"]},
    ]}
    path.write_text(yaml.safe_dump(raw))
    runtime = Runtime(load_config(path, providers=CHANNEL_PROVIDERS).config, str(path))
    assert runtime.config_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text(yaml.safe_dump(raw) + "\n# edited\n")
    with capture_logs() as logs:
        assert runtime.reload()
    lines = {e["event"]: e for e in logs if e["event"].startswith("channel_")}
    assert lines["channel_enabled"]["channel"] == "a"
    assert lines["channel_disabled"]["channel"] == "b" and "GW_TEST_UNSET_KEY is not set" in lines["channel_disabled"]["reason"]
    assert runtime.config_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
