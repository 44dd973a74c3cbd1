"""GET /v1/models in OpenAI, Anthropic and Gemini shape: what a key may use, concrete names only."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import KEYS

BASE = "http://127.0.0.1:9/v1"  # never called: listing models does not touch vendors


def chan(name: str, platform: str, models: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "platform": platform, "base_url": BASE, "api_keys": ["vk"], "models": models, **kw}


CONFIG: dict[str, Any] = {
    "keys": [
        *KEYS,
        {"name": "gpt-only", "key": "gpt-key", "models": ["gpt-*"]},
        {"name": "ds-only", "key": "ds-key", "platforms": ["deepseek"]},
    ],
    "channels": [
        chan("openai", "openai", ["gpt-*", "dall-e-3", "text-embedding-3-small"], model_map={"gpt-4o": "gpt-4o-2024-11-20"}),
        chan("backup", "azure", ["gpt-4o", "sora-2"], priority=5),
        chan("deepseek", "deepseek", ["deepseek-chat", "deepseek-reasoner"]),
        chan("off", "offline", ["ghost-1"], enabled=False),
    ],
    "models": {
        "gpt-4o-mini": {"catalog": "t2t"},
        "gpt-4o": {"catalog": "t2t"},
        "dall-e-3": {"catalog": "t2i"},
        "sora-2": {"catalog": "t2v"},
        "wan2.2-i2v": {"catalog": "i2v"},  # no channel serves it: not listed
        "deepseek-chat": {"catalog": "t2t"},
    },
}
ALL = ["dall-e-3", "deepseek-chat", "deepseek-reasoner", "gpt-4o", "gpt-4o-mini", "sora-2", "text-embedding-3-small"]


async def test_openai_list_is_the_union_of_concrete_names(gateway_factory):
    gw = await gateway_factory(CONFIG)
    page = await gw.client().models.list()
    assert [m.id for m in page.data] == ALL
    owners = {m.id: m.owned_by for m in page.data}
    assert owners["gpt-4o"] == "azure"  # the higher-priority channel's platform
    assert owners["gpt-4o-mini"] == "openai" and owners["deepseek-chat"] == "deepseek"
    assert all(m.object == "model" for m in page.data)
    rows = await gw.rows()
    assert (rows[0]["endpoint"], rows[0]["status"], rows[0]["attempts"]) == ("models", 200, 0)


async def test_list_is_narrowed_by_key_and_platform(gateway_factory):
    gw = await gateway_factory(CONFIG)
    assert [m.id async for m in gw.client(key="gpt-key").models.list()] == ["gpt-4o", "gpt-4o-mini"]
    assert [m.id async for m in gw.client(key="ds-key").models.list()] == ["deepseek-chat", "deepseek-reasoner"]
    assert [m.id async for m in gw.client(platform="openai").models.list()] == [
        "dall-e-3", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    owners = {m.id: m.owned_by async for m in gw.client(platform="openai").models.list()}
    assert owners["gpt-4o"] == "openai"
    with pytest.raises(openai.PermissionDeniedError):
        await gw.client(key="ds-key", platform="openai").models.list()
    with pytest.raises(openai.AuthenticationError):
        await gw.client(key="nope").models.list()


@pytest.mark.parametrize(("query", "expected"), [
    ({"catelogid": "t2t"}, ["deepseek-chat", "gpt-4o", "gpt-4o-mini"]),
    ({"catalog": "t2i"}, ["dall-e-3"]),
    ({"catalog": "t2v,t2i"}, ["dall-e-3", "sora-2"]),
    ({"catalog": "i2v"}, []),
])
async def test_catalog_filter(gateway_factory, query, expected):
    gw = await gateway_factory(CONFIG)
    page = await gw.client().models.list(extra_query=query)
    assert [m.id for m in page.data] == expected


async def test_unknown_catalog_is_a_400(gateway_factory):
    gw = await gateway_factory(CONFIG)
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client().models.list(extra_query={"catalog": "t3x"})
    assert "t2t" in exc.value.body["message"]


async def test_retrieve_a_model(gateway_factory):
    gw = await gateway_factory(CONFIG)
    client = gw.client()
    model = await client.models.retrieve("gpt-4o")
    assert (model.id, model.owned_by) == ("gpt-4o", "azure")
    model = await client.models.retrieve("gpt-4.1")  # not listed, but served by the gpt-* glob
    assert model.owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("ghost-1")  # only on a disabled channel
    with pytest.raises(openai.NotFoundError):
        await gw.client(key="gpt-key").models.retrieve("deepseek-chat")


async def test_anthropic_shape_when_anthropic_headers(gateway_factory):
    gw = await gateway_factory(CONFIG)
    headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/v1/models", headers=headers, params={"limit": "3"}) as r:
            page = await r.json()
        assert r.status == 200
        assert [m["id"] for m in page["data"]] == ALL[:3]
        assert page["data"][0] == {"type": "model", "id": "dall-e-3", "display_name": "dall-e-3", "created_at": "1970-01-01T00:00:00Z"}
        assert (page["has_more"], page["first_id"], page["last_id"]) == (True, "dall-e-3", "deepseek-reasoner")
        async with http.get(f"{gw.url}/v1/models", headers=headers, params={"after_id": "deepseek-reasoner", "limit": "5"}) as r:
            page = await r.json()
        assert [m["id"] for m in page["data"]] == ALL[3:] and page["has_more"] is False
        async with http.get(f"{gw.url}/v1/models", headers=headers, params={"before_id": "gpt-4o", "limit": "2"}) as r:
            page = await r.json()
        assert [m["id"] for m in page["data"]] == ALL[1:3] and page["has_more"] is True
        async with http.get(f"{gw.url}/v1/models/sora-2", headers=headers) as r:
            assert (await r.json())["type"] == "model"
        async with http.get(f"{gw.url}/v1/models/nope", headers=headers) as r:
            body = await r.json()
        assert r.status == 404 and body["type"] == "error" and body["error"]["type"] == "not_found_error"
        async with http.get(f"{gw.url}/v1/models", headers={**headers, "x-api-key": "bad"}) as r:
            body = await r.json()
        assert r.status == 401 and body["error"]["type"] == "authentication_error"


async def test_gemini_shape(gateway_factory):
    gw = await gateway_factory(CONFIG)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/v1beta/models", params={"key": "test-key", "pageSize": "4"}) as r:
            page = await r.json()
        assert r.status == 200
        assert [m["name"] for m in page["models"]] == [f"models/{n}" for n in ALL[:4]]
        gpt = page["models"][3]
        assert gpt["displayName"] == "gpt-4o" and "generateContent" in gpt["supportedGenerationMethods"]
        assert page["models"][0]["supportedGenerationMethods"] == []  # dall-e-3 is t2i
        async with http.get(f"{gw.url}/v1beta/models", headers={"x-goog-api-key": "test-key"},
                            params={"pageToken": page["nextPageToken"]}) as r:
            page = await r.json()
        assert [m["name"] for m in page["models"]] == [f"models/{n}" for n in ALL[4:]] and "nextPageToken" not in page
        async with http.get(f"{gw.url}/v1beta/models/deepseek-chat", params={"key": "test-key"}) as r:
            assert (await r.json())["name"] == "models/deepseek-chat"
        async with http.get(f"{gw.url}/v1beta/models/nope", params={"key": "test-key"}) as r:
            body = await r.json()
        assert r.status == 404 and body["error"]["status"] == "NOT_FOUND"
        async with http.get(f"{gw.url}/v1beta/models") as r:
            body = await r.json()
        assert r.status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
