"""Where a channel is chosen: candidates for a request, then the order to try them in (README: "How a
channel is chosen")."""

from __future__ import annotations

import random
from collections.abc import Iterable

from config import Channel, ClientKey, Config
from gateway.errors import GatewayError, NoChannel
from gateway.relay.health import Health
from gateway.state import Lookups
from providers import PROVIDERS
from providers.tasks import TASK_VENDORS


def check_platform(key: ClientKey | None, platform: str | None) -> None:
    """Raise 403 when a /<platform>/v1 prefix names a platform the key may not use."""
    if platform is not None and key is not None and key.platforms is not None and platform not in key.platforms:
        raise GatewayError(403, f"This key may not use platform {platform!r}.", code="platform_not_allowed")


def check_access(config: Config, key: ClientKey | None, model: str, platform: str | None) -> None:
    """Raise 404 for a model no channel knows, 403 when the key may not use it or the platform."""
    check_platform(key, platform)
    if not any(c.serves(model) and (platform is None or c.platform == platform) for c in config.channels):
        where = f" on platform {platform!r}" if platform else ""
        raise GatewayError(
            404,
            f"The model {model!r} does not exist{where}; GET /v1/models lists the models you can use.",
            type="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    if key is not None and key.models is not None and not key.models.match(model):
        raise GatewayError(403, f"This key may not use model {model!r}.", code="model_not_allowed", param="model")


def request_tags(header: str | None) -> frozenset[str] | None:
    """The tags of an `X-Gateway-Tag: a,b` header; None when there are none."""
    tags = frozenset(t.strip() for t in header.split(",") if t.strip()) if header else frozenset()
    return tags or None


def candidates(
    config: Config,
    key: ClientKey | None,
    model: str,
    platform: str | None,
    request_tags: frozenset[str] | None,
    *,
    disabled: bool = False,
    tasks: bool = False,
) -> list[Channel]:
    """The enabled channels a request may use; `disabled`: the disabled ones it could use if they were on.
    `tasks`: channels whose vendor runs async generation tasks, else those that speak a chat protocol."""
    protocols = TASK_VENDORS if tasks else PROVIDERS
    out = []
    for c in config.channels:
        if c.enabled == disabled or not c.serves(model) or c.provider not in protocols:
            continue
        if platform is not None and c.platform != platform:
            continue
        if key is not None:
            if key.platforms is not None and c.platform not in key.platforms:
                continue
            if key.tags is not None and not (key.tags & c.tags):
                continue
        if request_tags and not (request_tags & c.tags):
            continue
        out.append(c)
    return out


def order(channels: Iterable[Channel], health: Health, rng: random.Random | None = None) -> list[Channel]:
    """Highest priority tier first; weighted random without replacement inside a tier.

    Weight-0 channels come only after every weighted one, and channels whose keys are all cooling
    down come last of all, so a request still has somewhere to go when everything is cooling.
    """
    rand = (rng or random).random
    healthy: list[Channel] = []
    cooling: list[Channel] = []
    for c in channels:
        (cooling if health.cooling(c) else healthy).append(c)

    def sort_key(c: Channel) -> tuple[bool, int, float]:
        # Efraimidis-Spirakis: sorting by u^(1/w) descending is a weighted draw without replacement.
        draw = rand() ** (1.0 / c.weight) if c.weight > 0 else rand()
        return (c.weight == 0, -c.priority, -draw)

    return sorted(healthy, key=sort_key) + sorted(cooling, key=sort_key)


def plan(
    lookups: Lookups,
    health: Health,
    key: ClientKey | None,
    model: str,
    platform: str | None,
    request_tags: frozenset[str] | None = None,
    *,
    tasks: bool = False,
) -> list[Channel]:
    """Channels to try for one request, best first (`Attempts` tries at most `routing.retries + 1`).
    `tasks`: for an async generation task (gateway.tasks), among the channels whose vendor runs them."""
    # Who may use what depends only on the config, so it is worked out once per key, model, platform
    # and tags; only the order (health, weighted draw) is decided per request.
    config, routes = lookups.config, lookups.routes
    route = (id(key), model, platform, request_tags, tasks)  # the config holds the key, so its id is stable
    found = routes.get(route)
    if found is None:
        check_access(config, key, model, platform)
        found = tuple(candidates(config, key, model, platform, request_tags, tasks=tasks))
        if not found:
            if key is not None and not candidates(config, key, model, platform, None, tasks=tasks) and candidates(
                config, None, model, platform, None, tasks=tasks
            ):
                # Channels serve the model, but the key's platforms or tags rule out every one of them.
                raise GatewayError(
                    403, f"This key may not use any channel serving model {model!r}.", code="model_not_allowed", param="model"
                )
            off = candidates(config, key, model, platform, request_tags, disabled=True, tasks=tasks)
            raise NoChannel(model, [(c.name, c.disabled_reason) for c in off])
        if len(routes) >= lookups.MAX_ROUTES:  # model names come from clients: bound what they can make us keep
            routes.clear()
        routes[route] = found
    if len(found) == 1:
        return [found[0]]
    return order(found, health)
