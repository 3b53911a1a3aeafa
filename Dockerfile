# syntax=docker/dockerfile:1
# molecule-runtime: serve any agent over A2A 1.0, durable on Temporal when TEMPORAL_HOST is set.
#
#   docker build -t molecule-runtime .                              # echo + any ADAPTER_MODULE
#   docker build -t molecule-runtime:langgraph --build-arg EXTRAS=langgraph .
#   docker run -p 8000:8000 -v molecule-data:/data molecule-runtime
#
# A template image builds FROM this one and only adds adapter.py and its
# requirements (examples/template-image/Dockerfile).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the runtime into a virtualenv that the final stage copies
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/molecule
WORKDIR /src
# Only what the package build needs (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY molecule_runtime ./molecule_runtime
# Optional extras, e.g. EXTRAS=langgraph or EXTRAS=langgraph,local.
ARG EXTRAS=""
RUN /opt/molecule/bin/pip install "/src${EXTRAS:+[$EXTRAS]}"

# ---- runtime
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/molecule /opt/molecule
# A fixed, unprivileged uid so volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 molecule \
    && useradd --system --uid 10001 --gid molecule --home-dir /app --shell /usr/sbin/nologin molecule \
    && mkdir -p /app /data \
    && chown molecule:molecule /app /data
ENV PATH=/opt/molecule/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    MOLECULE_DATA_DIR=/data
# The adapter loader looks for ADAPTER_MODULE's file in the working directory.
WORKDIR /app
# Numeric, so a runtime (e.g. Kubernetes runAsNonRoot) can verify it is not root.
USER 10001:10001
# SQLite task store and embedded Temporal live here unless TASK_STORE_URL /
# TEMPORAL_HOST point elsewhere: keep it on a volume.
VOLUME ["/data"]
EXPOSE 8000
# The slim image has no curl: Python's urllib does the probe. /healthz only
# says the process serves HTTP; orchestrators should gate traffic on /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["molecule-runtime"]
CMD ["serve"]
