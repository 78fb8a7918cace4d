# One image recipe for both services and the simulator; pick one with --target:
#
#   docker build --target feeder      -t quaint2/feeder:0.1.0 .
#   docker build --target gap-handler -t quaint2/gap-handler:0.1.0 .
#   docker build --target simulator   -t quaint2/simulator:0.1.0 .
#
# (docker-compose.yml does this for you.) No "# syntax=" line on purpose: it makes BuildKit fetch a
# frontend image from Docker Hub, so offline and air-gapped builds would fail, and nothing here needs more
# than the builder's own Dockerfile support. The build stage installs the project into a virtual
# environment; each service stage copies that environment into a slim base and runs as an
# unprivileged user. Every wheel used (asyncpg, uvloop, orjson, ...) is a binary wheel, so no
# compiler is needed.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: the dependencies first (cached until pyproject.toml changes), then the code ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
# The dependency list is read from pyproject.toml itself, so it is written down in one place only.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY quaint ./quaint
COPY feeder ./feeder
COPY gap_handler ./gap_handler
COPY simulator ./simulator
COPY bench ./bench
# pip byte-compiles what it installs, so the read-only container never needs to write .pyc files.
RUN pip install --no-deps .

# ---- runtime: what both services share ----
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 quaint \
    && useradd --system --uid 10001 --gid quaint --no-create-home --home-dir /app --shell /usr/sbin/nologin quaint
COPY --from=build /opt/venv /opt/venv
# The schema the services apply at start-up (quaint/store/schema.py reads QUAINT_SCHEMA_FILE).
COPY timescaledb/init.sql /app/timescaledb/init.sql
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QUAINT_SCHEMA_FILE=/app/timescaledb/init.sql \
    LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
# Each service stage sets HEALTH_URL; the probe fails on any non-2xx answer (503 = unhealthy).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTH_URL'], timeout=4)"]

# ---- feeder: WebSocket streams -> TimescaleDB; /health and /metrics on 8080 ----
FROM runtime AS feeder
ENV FEEDER_HOST=0.0.0.0 \
    FEEDER_PORT=8080 \
    HEALTH_URL=http://127.0.0.1:8080/health
EXPOSE 8080
CMD ["python", "-m", "feeder"]

# ---- gap-handler: REST backfill of missing candles; /health and /metrics on 9000 ----
FROM runtime AS gap-handler
ENV GAP_HANDLER_HOST=0.0.0.0 \
    GAP_HANDLER_PORT=9000 \
    HEALTH_URL=http://127.0.0.1:9000/health
EXPOSE 9000
CMD ["python", "-m", "gap_handler"]

# ---- simulator: the bundled Binance-compatible exchange (./deploy.sh --simulate); REST + WebSocket on 9443 ----
FROM runtime AS simulator
ENV SIM_HOST=0.0.0.0 \
    SIM_PORT=9443 \
    HEALTH_URL=http://127.0.0.1:9443/api/v3/ping
EXPOSE 9443
CMD ["python", "-m", "simulator"]
