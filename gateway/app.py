"""The app factory: the routes, each wrapped by the pipeline, and the resources opened and closed with the app."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.api import account, probes, realtime
from gateway.api import anthropic as anthropic_api
from gateway.api import gemini as gemini_api
from gateway.api import models as models_api
from gateway.api import openai as openai_api
from gateway.api import tasks as tasks_api
from gateway.api.pipeline import MAX_HEADER_FIELD, Handler, metered, probe, unknown_route
from gateway.billing import startup
from gateway.errors import HTTPLayerLog
from gateway.http import memory, paths, upstream
from gateway.http.drain import Drain
from gateway.ledger import backends
from gateway.ledger.sink import UsageSink
from gateway.logs import worker_index
from gateway.ops import metrics as ops_metrics
from gateway.ops import routes as ops_routes
from gateway.state import SERVICES, Runtime, Services
from gateway.tasks import lifecycle as tasks_lifecycle

PLATFORM = "{platform:[a-z0-9][a-z0-9_-]*}"


def add_api_route(app: web.Application, method: str, endpoint: str, handler: Handler) -> None:
    """Serve `endpoint` at /v1/<endpoint> and /<platform>/v1/<endpoint>, metered."""
    served = metered(app[SERVICES], handler)
    app.router.add_route(method, f"/v1/{endpoint}", served)
    app.router.add_route(method, f"/{PLATFORM}/v1/{endpoint}", served)


def create_app(
    runtime: Runtime, *, usage: UsageSink | None = None, http_path: str | None = None, metrics_listen: bool = True
) -> web.Application:
    """The app serving `runtime`'s config. `http_path` (auto, lean, public) overrides $GATEWAY_HTTP_PATH.
    `metrics_listen`: bind the config's metrics_listen, if any (with `workers: N`, worker 0 only)."""
    mode = paths.check_mode(http_path or os.environ.get(paths.ENV) or "auto")
    # Bodies are read by the handlers against limits.max_body_mb, which a reload may change.
    app = web.Application(
        client_max_size=1 << 40,
        # Big headers get as far as the pipeline, which refuses them in the client's protocol; the
        # HTTP layer logs what it cannot parse as one line, not a traceback.
        handler_args={"logger": HTTPLayerLog(), "max_line_size": MAX_HEADER_FIELD, "max_field_size": MAX_HEADER_FIELD},
    )
    services = app[SERVICES] = Services(runtime, usage or backends.usage_sink(runtime.config), Drain())
    services.metrics = ops_metrics.Metrics() if ops_metrics.enabled() else None
    app.on_shutdown.append(_begin_drain)
    # The upstream client first: when the lean path was forced and cannot be taken, nothing else is open yet.
    app.cleanup_ctx.append(functools.partial(_session_ctx, mode=mode))
    app.cleanup_ctx.append(_usage_ctx)
    app.cleanup_ctx.append(_tasks_ctx)
    app.cleanup_ctx.append(_limits_ctx)
    if runtime.config.state.redis:
        app.cleanup_ctx.append(_shared_health_ctx)
    app.cleanup_ctx.append(_trim_ctx)
    app.cleanup_ctx.append(ops_routes.refresher_ctx)
    if metrics_listen:
        app.cleanup_ctx.append(ops_routes.metrics_listen_ctx)
    app.router.add_get("/healthz", probe(probes.healthz))
    app.router.add_get("/readyz", probe(probes.readyz))
    app.router.add_get("/metrics", probe(ops_routes.metrics))
    app.router.add_get("/admin/status", probe(ops_routes.admin_status))
    add_api_route(app, "POST", "chat/completions", openai_api.chat_completions)
    add_openai_routes(app)
    add_account_routes(app)
    add_task_routes(app)
    add_api_route(app, "POST", "messages", anthropic_api.messages)
    add_api_route(app, "POST", "messages/count_tokens", anthropic_api.count_tokens)
    # Last, so it answers only what no route above serves: 404, or 405 with the methods that are.
    app.router.add_route("*", "/{path:.*}", metered(services, unknown_route, authenticated=False))
    return app


def add_task_routes(app: web.Application) -> None:
    """Async generation (docs/tasks.md): OpenAI videos, video generations, async images, the neutral view,
    and the 元境 and AI逢源 dialects. The 元境 routes come before /<platform>/v1/...: `llmage` is a dialect."""
    services = app[SERVICES]
    for path, method, handler in (
        ("/llmage/v1/video/generations", "POST", tasks_api.llmage_video),
        ("/llmage/v1/image/generations", "POST", tasks_api.llmage_image),
        ("/llmage/v1/tasks", "GET", tasks_api.llmage_tasks),
    ):
        app.router.add_route(method, path, metered(services, handler))
    for endpoint, method, handler in (
        ("videos", "POST", tasks_api.create_video),
        ("videos", "GET", tasks_api.list_videos),
        ("videos/{id}", "GET", tasks_api.get_video),
        ("videos/{id}", "DELETE", tasks_api.delete_video),
        ("videos/{id}/content", "GET", tasks_api.content),
        ("videos/{id}/remix", "POST", tasks_api.remix_video),
        ("video/generations", "POST", tasks_api.create_video_generation),
        ("video/generations/{id}", "GET", tasks_api.get_video_generation),
        ("images/{task_id}", "GET", tasks_api.get_image_task),
        ("tasks", "GET", tasks_api.find_tasks),
        ("tasks/{id}", "GET", tasks_api.get_task),
        ("tasks/{id}/content", "GET", tasks_api.content),
    ):
        add_api_route(app, method, endpoint, handler)
    for prefix in ("", f"/{PLATFORM}"):
        app.router.add_get(f"{prefix}/api/service/list", metered(services, tasks_api.service_list, authenticated=False))
        app.router.add_post(f"{prefix}/api/service/invoke", metered(services, tasks_api.service_invoke))
        app.router.add_get(f"{prefix}/api/service/task/{{id}}", metered(services, tasks_api.service_task))
        app.router.add_get(f"{prefix}/api/task/list", metered(services, tasks_api.task_list))


def add_openai_routes(app: web.Application) -> None:
    """The rest of the OpenAI-compatible surface (docs/api.md), plus the model lists in every shape."""
    for endpoint, handler in (
        ("completions", openai_api.completions),
        ("responses", openai_api.responses),
        ("embeddings", openai_api.embeddings),
        ("engines/{model}/embeddings", openai_api.engine_embeddings),
        ("moderations", openai_api.moderations),
        ("rerank", openai_api.rerank),
        ("images/generations", openai_api.image_generations),
        ("images/edits", openai_api.image_edits),
        ("audio/speech", openai_api.audio_speech),
        ("audio/transcriptions", openai_api.audio_transcriptions),
        ("audio/translations", openai_api.audio_translations),
    ):
        add_api_route(app, "POST", endpoint, handler)
    add_api_route(app, "GET", "models", models_api.list_models)
    add_api_route(app, "GET", "models/{model:.+}", models_api.get_model)
    add_api_route(app, "GET", "realtime", realtime.realtime)
    add_api_route(app, "*", "files", openai_api.files)
    add_api_route(app, "*", "files/{tail:.*}", openai_api.files)
    services = app[SERVICES]
    for prefix in ("", f"/{PLATFORM}"):
        app.router.add_get(f"{prefix}/v1beta/models", metered(services, models_api.gemini_list_models))
        app.router.add_get(f"{prefix}/v1beta/models/{{model:[^:]+}}", metered(services, models_api.gemini_get_model))
        for version in ("v1beta", "v1"):
            app.router.add_post(f"{prefix}/{version}/models/{{target:[^/]+:[^/]+}}", metered(services, gemini_api.model_method))


def add_account_routes(app: web.Application) -> None:
    """A key holder's own data (gateway.api.account), each route also under /<platform>/. The handlers
    authenticate for themselves: an admin key gets a 403 there, and /api/user/info answers in its envelope."""
    services = app[SERVICES]
    for method, endpoint, handler in account.ROUTES:
        served = metered(services, handler, authenticated=False)
        app.router.add_route(method, f"/v1/{endpoint}", served)
        app.router.add_route(method, f"/{PLATFORM}/v1/{endpoint}", served)
    user_info = metered(services, account.user_info, authenticated=False)
    app.router.add_get("/api/user/info", user_info, allow_head=False)
    app.router.add_get(f"/{PLATFORM}/api/user/info", user_info, allow_head=False)


async def _begin_drain(app: web.Application) -> None:
    # on_shutdown runs once the listener is closed and before aiohttp waits for handlers.
    services = app[SERVICES]
    services.drain.begin(services.runtime.config.shutdown_grace_s)


async def _usage_ctx(app: web.Application) -> AsyncIterator[None]:
    """The usage writer, and the reader the key holders' views use (`database:` changes apply at a restart)."""
    services = app[SERVICES]
    writer = services.usage
    await writer.start()
    services.reader = backends.usage_reader(services.runtime.config.database, pooled=True)
    yield
    reader, services.reader = services.reader, None
    await reader.close()
    await writer.close()


async def _limits_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    runtime = services.runtime
    held = services.tasks.store.reserved_by_key if services.tasks is not None else None
    limiter = await startup.open_limiter(runtime.config, fresh=False, worker=worker_index(), held=held)
    url = runtime.config.state.redis  # `state:` changes apply at a restart
    metrics = services.metrics
    client = None
    if url:  # several replicas: Redis first, the counters file as its fallback
        from gateway.billing.redis_counters import connect  # redis is an optional extra

        client = connect(url)
        limiter = startup.share(limiter, client, lambda: runtime.config, count=metrics.state_fallback if metrics else None)
    services.limiter = limiter
    if metrics is not None:
        limiter.refused = metrics.limited
    hook = startup.refill_on_reload(limiter, runtime.config)
    runtime.on_reload.append(hook)
    yield
    runtime.on_reload.remove(hook)
    services.limiter = None
    await limiter.aclose()
    if client is not None:
        await client.aclose()


async def _shared_health_ctx(app: web.Application) -> AsyncIterator[None]:
    """Channel key cooldowns shared with the other replicas (gateway.relay.shared_health)."""
    runtime = app[SERVICES].runtime
    state = runtime.config.state
    assert state.redis is not None
    from gateway.billing.redis_counters import connect  # redis is an optional extra
    from gateway.relay.shared_health import HealthSync

    client = connect(state.redis)
    sync = HealthSync(client, runtime, state.prefix)
    sync.start()
    yield
    await sync.stop()
    await client.aclose()


async def _tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    async with tasks_lifecycle.running(app[SERVICES]):
        yield


async def _session_ctx(app: web.Application, *, mode: str) -> AsyncIterator[None]:
    services = app[SERVICES]
    chosen = await paths.open_paths(mode, app)
    services.client, services.answer = chosen.upstream, chosen.answer
    yield
    await chosen.upstream.close()


async def _trim_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]

    def release() -> None:
        # The burst's spare upstream connections first, so the collection and trim after free their buffers.
        services.upstream.close_idle(upstream.MAX_IDLE_PER_HOST)
        memory.release()

    trimmer = memory.Trimmer(lambda: services.drain.in_flight, release)
    trimmer.start()
    yield
    trimmer.stop()
