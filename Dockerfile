# syntax=docker/dockerfile:1.7
#
# Container image of choreo-insights-proxy. Build from the repository root:
#   docker build -t choreo-insights-proxy:0.1.0 .
#
# The image contains no secret: the client id comes from the environment and the client secret
# and admin token from mounted files (deploy/container/README.md shows a complete `docker run`).
# Pin PYTHON_IMAGE to a digest (python:3.11-slim-bookworm@sha256:...) for repeatable builds.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: install the package and its dependencies into a virtual environment, which the
# runtime stage copies whole. Every dependency has manylinux wheels, so no compiler is needed.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/insights-proxy

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy

# The "fast" extra adds uvloop and orjson. pip and setuptools are removed afterwards because
# nothing needs them at run time.
RUN /opt/insights-proxy/bin/pip install --no-cache-dir ".[fast]" \
    && /opt/insights-proxy/bin/pip uninstall --yes pip setuptools

# Runtime stage: the same base, the virtual environment, and an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="choreo-insights-proxy" \
      org.opencontainers.image.description="A token-free local gateway to the WSO2 Choreo Insights GraphQL API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric id lets Kubernetes check runAsNonRoot and lets hosts grant file access to it.
RUN groupadd --system --gid 10001 insights-proxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin insights-proxy

COPY --from=build /opt/insights-proxy /opt/insights-proxy
COPY --chmod=0644 deploy/container/insights-proxy.toml /etc/insights-proxy/insights-proxy.toml
COPY --chmod=0755 deploy/container/probe.py /usr/local/bin/insights-proxy-probe

# PYTHONDONTWRITEBYTECODE keeps a read-only root file system quiet; the build already compiled.
ENV PATH=/opt/insights-proxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INSIGHTS_PROXY_CONFIG=/etc/insights-proxy/insights-proxy.toml

USER 10001:10001

# 8080: the GraphQL endpoint (server.port). 9901: /healthz, /readyz, /metrics (admin.port).
EXPOSE 8080 9901

# /healthz returns 200 while the process runs and needs no admin token. The slim image has no
# curl, so the probe is a standard-library Python script.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["insights-proxy-probe", "healthz"]

# On SIGTERM the proxy lets in-flight requests finish for up to server.drain_timeout_s (10 s by
# default). Docker's default stop grace is also 10 s, so stop with a longer one
# (`docker stop --time 15`, compose `stop_grace_period: 15s`) or the drain may be cut short.
STOPSIGNAL SIGTERM
ENTRYPOINT ["insights-proxy"]
CMD ["serve"]
