"""gateway.yaml validation: every problem named by its key path, interpolation, defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config import ConfigError, interpolate, parse_config, sha256_hex
from config.loader import unset_variables
from providers import CHANNEL_PROVIDERS

GOOD = f"""
listen: 127.0.0.1:9000
keys:
  - {{name: app1, key: "${{APP1_KEY}}", models: ["gpt-4o*"], platforms: [openai], tags: [prod], rpm: 60}}
  - {{name: app2, key_sha256: "{sha256_hex("second-secret")}"}}
channels:
  - name: main
    provider: openai
    base_url: https://api.openai.com/v1/
    api_keys: ["${{OPENAI_API_KEY}}", "${{OPENAI_API_KEY_2:-}}"]
    models: [gpt-4o, "gpt-4o-*"]
    model_map: {{gpt-4o: gpt-4o-2024-11-20}}
    weight: 3
    priority: 10
    tags: [prod]
    headers: {{OpenAI-Organization: org-x}}
    timeouts: {{connect_s: 5, first_byte_s: 60, idle_s: 120}}
models:
  gpt-4o: {{catalog: t2t, price: {{input: 2.5, output: 10.0, cached_input: 1.25}}}}
"""


def load(text: str, **env: str):
    return parse_config(text, env=env, providers=CHANNEL_PROVIDERS)


def problems(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, **env)
    return info.value.problems


def test_good_config_is_typed():
    loaded = load(GOOD, APP1_KEY="k1", OPENAI_API_KEY="sk-a")
    cfg = loaded.config
    assert (cfg.listen.host, cfg.listen.port) == ("127.0.0.1", 9000)
    ch = cfg.channels[0]
    assert ch.base_url == "https://api.openai.com/v1"
    assert ch.api_keys == ("sk-a",)  # the unset second key is dropped, the channel stays on
    assert ch.enabled and ch.serves("gpt-4o-mini") and not ch.serves("gpt-3.5")
    assert ch.upstream_model("gpt-4o") == "gpt-4o-2024-11-20"
    assert ch.timeouts.first_byte_s == 60
    assert cfg.keys[0].key_sha256 == sha256_hex("k1")
    assert cfg.keys_by_hash[sha256_hex("second-secret")].name == "app2"
    assert cfg.models["gpt-4o"].price is not None and cfg.models["gpt-4o"].price.cached_input == 1.25
    assert loaded.warnings == []


def test_channel_with_empty_keys_is_disabled_with_warning():
    loaded = load(GOOD, APP1_KEY="k1")
    assert not loaded.config.channels[0].enabled
    assert "channels[0]" in loaded.warnings[-1] and "disabled" in loaded.warnings[-1]


def test_interpolation():
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("${A} ${B:-two} ${EMPTY:-three} ${B}|", env) == "1 two three |"


def test_every_problem_has_its_key_path():
    text = """
listen: 0.0.0.0:99999
workers: 0
lgo: {level: info}
log: {level: loud}
routing: {retries: -1, cooldown_s: "soon"}
keys:
  - {name: a}
  - {name: a, key: x, key_sha256: abc}
channels:
  - name: c1
    provider: nope
    base_url: ftp://x
    models: []
    weight: -1
    timeouts: {connect_s: 0, idle: 3}
  - {name: c1, provider: openai, base_url: "http://x/v1", models: [m], platform: "V1"}
models:
  m: {catalog: movie}
"""
    found = problems(text)
    expected = [
        "listen: port must be 1-65535",
        "workers: must be at least 1",
        "lgo: unknown key",
        "log.level: must be one of",
        "routing.retries: must be at least 0",
        "routing.cooldown_s: must be a number",
        "keys[0]: needs exactly one of key or key_sha256",
        "keys[1]: needs exactly one of key or key_sha256",
        "channels[0].provider: unknown provider 'nope'",
        "channels[0].base_url: must be an http(s) URL",
        "channels[0].models: must list at least one",
        "channels[0].weight: must be at least 0",
        "channels[0].timeouts.connect_s: must be greater than 0",
        "channels[0].timeouts.idle: unknown key",
        "channels[1].platform: 'V1' cannot be a URL prefix",
        "models.m.catalog: must be one of",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)


def test_public_listen_without_keys_is_refused():
    found = problems("listen: 0.0.0.0:8080\n")
    assert found == ["listen: 0.0.0.0:8080 is not a loopback address and no keys are defined: add keys: or listen on 127.0.0.1"]
    load("listen: 0.0.0.0:8080\nkeys: [{name: a, key: s}]\n")  # with keys it is fine


def test_client_key_from_unset_variable_is_an_error_naming_it():
    assert problems("keys: [{name: a, key: '${NOPE}'}]\n") == ["keys[0].key: NOPE is not set"]
    assert problems("keys: [{name: a, key: '${NOPE}'}]\n", NOPE="") == ["keys[0].key: NOPE is empty"]


def test_unset_variables_are_found_by_key_path_even_in_flow_lists():
    text = "a: [${X}, '${Y:-y}']\nb: {c: ${Z}}\nd: 'pre-${X}-${W}'\n"
    assert unset_variables(text, {"W": ""}) == {"a[0]": ("X",), "b.c": ("Z",), "d": ("X", "W")}
    assert unset_variables(text, {"X": "1", "Z": "2", "W": "3"}) == {}


def test_channel_disabled_reason_names_the_variables():
    text = "channels: [{name: c, provider: openai, base_url: 'http://x', api_keys: ['${K1}', '${K2}'], models: [m]}]\n"
    loaded = load(text, K2="")
    (ch,) = loaded.config.channels
    assert not ch.enabled and ch.disabled_reason == "K1 is not set and K2 is empty"
    assert loaded.warnings == ["channels[0]: channel 'c' disabled: K1 is not set and K2 is empty"]
    off = load(text.replace("models: [m]", "models: [m], enabled: false"), K1="k")
    assert off.config.channels[0].disabled_reason == "enabled: false" and off.warnings == []


def test_allow_unset_keeps_keys_for_read_only_commands():
    text = ("listen: 0.0.0.0:80\nkeys: [{name: a, key: '${A}', rpm: 5}, {name: b, key: '${B}'}]\n"
            "channels: [{name: c, provider: openai, base_url: '${BASE_URL}', models: [m]}]\n")
    assert problems(text) == [
        "keys[0].key: A is not set", "keys[1].key: B is not set", "channels[0].base_url: must not be empty (BASE_URL is not set)",
        "listen: 0.0.0.0:80 is not a loopback address and no keys are defined: add keys: or listen on 127.0.0.1",
    ]
    loaded = parse_config(text, env={}, allow_unset=True)
    assert [(k.name, k.key_sha256, k.rpm) for k in loaded.config.keys] == [("a", "", 5), ("b", "", None)]
    assert "keys[0].key: A is not set: the key 'a' cannot authenticate" in loaded.warnings
    assert "channels[0].base_url: must not be empty (BASE_URL is not set)" in loaded.warnings


def test_invalid_yaml_names_the_line():
    (problem,) = problems("channels: [\n  {name: x\n")
    assert "invalid YAML at line" in problem


@pytest.mark.parametrize(("text", "rc"), [(GOOD, 0), ("channels: 3\n", 1)])
def test_check_command(tmp_path: Path, text: str, rc: int):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        capture_output=True, text=True, env={"APP1_KEY": "k", "OPENAI_API_KEY": "sk-x", "PATH": "/usr/bin"}, timeout=60,
    )
    assert proc.returncode == rc, proc.stdout + proc.stderr
    if rc:
        assert proc.stdout.strip() == "channels: must be a list, got int"
    else:
        assert "OK" in proc.stdout
        assert "sk-x" not in proc.stdout + proc.stderr


def test_keys_and_headers_must_be_sendable_in_a_request_head():
    text = """
channels:
  - name: c
    provider: openai
    base_url: http://x/v1
    models: [m]
    api_keys: ["sk-secret-value\\r\\n", ok]
    headers: {"Bad Name": v, Host: other, X-Ok: "line\\nbreak", X-Fine: fine}
"""
    found = problems(text)
    assert found == [
        "channels[0].api_keys[0]: holds a line break or another control character",
        "channels[0].headers.Bad Name: is not a valid header name",
        "channels[0].headers.Host: is set by the gateway and cannot be configured",
        "channels[0].headers.X-Ok: holds a line break or another control character",
    ]
    assert not any("sk-secret-value" in p for p in found)  # a key's value is never echoed


def test_client_headers_may_only_allow_vendor_billing_headers():
    raw = {"channels": [{"name": "c", "provider": "openai", "base_url": "http://x/v1", "api_keys": ["k"], "models": ["m"],
                         "client_headers": ["OpenAI-Project", "Authorization"]}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml.safe_dump(raw), env={}, providers=CHANNEL_PROVIDERS)
    assert any(p.startswith("channels[0].client_headers[1]: 'Authorization' is not a vendor billing header") for p in exc.value.problems)


def test_state_names_redis_and_what_to_do_without_it():
    assert load("listen: 127.0.0.1:8080").config.state.redis is None  # nothing shared by default
    state = load('state: {redis: "rediss://:pw@10.0.0.5:6380/2", on_redis_error: refuse, reservation_ttl_s: 5}').config.state
    assert (state.redis, state.on_redis_error, state.prefix, state.reservation_ttl_s, state.lease) == (
        "rediss://:pw@10.0.0.5:6380/2", "refuse", "gw", 5.0, 0.02
    )
    assert load("state: {redis: 'redis://r:6379', lease: 0}").config.state.lease == 0
    assert "pw" not in repr(state)  # a URL's password is never in a repr, so never in a log
    assert load("state: {redis: ''}").config.state.redis is None  # `${REDIS_URL:-}` unset: nothing shared
    assert problems('state: {redis: "http://10.0.0.5:6379", on_redis_error: maybe, prefix: "a{b}", ttl: 1, lease: 0.5}') == [
        "state.ttl: unknown key (expected one of: redis, on_redis_error, prefix, reservation_ttl_s, lease)",
        "state.redis: must be a Redis URL (redis://..., rediss://..., unix://...)",
        "state.prefix: may hold only letters, digits and _ . : - (braces would change the keys' hash slot)",
        "state.on_redis_error: must be one of local, refuse, got 'maybe'",
        "state.lease: must be at most 0.1 (a share of each limit)",
    ]
