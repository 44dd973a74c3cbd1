# syntax=docker/dockerfile:1
# The gateway in a small image: docs/deploy.md says how to run, reload and upgrade it.
#
#   docker build -t llm-gateway .                          # --build-arg EXTRAS=scale: Redis, PostgreSQL
#   docker run --env-file .env -v "$PWD/gateway.yaml:/etc/gateway/gateway.yaml:ro" \
#       -v gateway-data:/data -p 127.0.0.1:8080:8080 llm-gateway
#
# Inside the container the gateway listens on 0.0.0.0:8080 (the --listen below). It refuses a
# non-loopback address unless gateway.yaml defines `keys:`, so the config you mount must have them.

# --- build: install the package and its dependencies into a virtualenv --------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A compiler for the gateway's one C extension (gateway/billing/_lane.c: the calls a limited request
# makes, ~10k instructions less than their Python twins); the run stage gets the built module only.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/gateway
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY config ./config
COPY providers ./providers
COPY gateway ./gateway
# Optional extras, comma-separated: `--build-arg EXTRAS=scale` adds redis and asyncpg for several replicas
# (state.redis, database: postgresql://...; deploy/scale/docker-compose.yml passes it).
ARG EXTRAS=""
RUN /opt/gateway/bin/pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"

# --- run: the virtualenv only; no compiler, no pip cache, no sources ----------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /data --no-create-home --shell /usr/sbin/nologin gateway \
 && mkdir -p /data/tasks /etc/gateway \
 && chown gateway:gateway /data /data/tasks
COPY --from=build /opt/gateway /opt/gateway
# The default config, for a first look; mount your own over it (read-only is enough: SIGHUP only reads it).
COPY gateway.yaml /etc/gateway/gateway.yaml
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    GATEWAY_DATABASE=/data/gateway.db
# The usage database, its WAL and the spool: keep them on a volume, they are the billing record.
VOLUME ["/data"]
WORKDIR /data
USER gateway:gateway
EXPOSE 8080
# No curl in a slim image: the standard library asks /healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
# SIGTERM drains requests in flight for shutdown_grace_s, then flushes usage rows (docker stop's
# default). Give `docker stop -t` / compose's stop_grace_period more than shutdown_grace_s.
STOPSIGNAL SIGTERM
# Exec form: the gateway is PID 1 and gets SIGTERM and SIGHUP itself, with no shell in between.
# No tini needed: it installs its own handlers for both, and reaps the only children it has (the
# workers of `workers: N`).
ENTRYPOINT ["python", "-m", "gateway"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
