"""The runtime: a reload swaps the config and the lookups derived from it together."""

from __future__ import annotations

import yaml

from config import load_config
from gateway.relay.health import Health
from gateway.relay.routing import plan
from gateway.state import Runtime
from providers import PROVIDERS

CHANNEL = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_keys": ["vk"], "models": ["gpt-*"]}


def test_lookups_belong_to_the_config_they_were_made_from(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"database": str(tmp_path / "u.db"), "channels": [{"name": "old", **CHANNEL}]}))
    runtime = Runtime(load_config(str(path), providers=PROVIDERS).config, str(path))
    old = runtime.config
    assert runtime.lookups(old) is runtime.lookups(old)  # kept and reused
    assert [c.name for c in plan(runtime.lookups(old), Health(), None, "gpt-4o", None)] == ["old"]

    path.write_text(yaml.safe_dump({"database": str(tmp_path / "u.db"), "channels": [{"name": "new", **CHANNEL}]}))
    assert runtime.reload()
    assert runtime.lookups(runtime.config).routes == {}  # fresh with the new config
    # A request that started before the reload still routes on the config it started with.
    assert [c.name for c in plan(runtime.lookups(old), Health(), None, "gpt-4o", None)] == ["old"]
    assert [c.name for c in plan(runtime.lookups(runtime.config), Health(), None, "gpt-4o", None)] == ["new"]
