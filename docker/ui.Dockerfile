# syntax=docker/dockerfile:1
# Streamlit UI (`machine-health ui`). It talks to the API over HTTP only (MH_API_URL), so it does
# not carry TensorFlow, MLflow or the store driver: the packages below are resolved with
# requirements.txt as constraints (the same pinned versions as everywhere else), and the package
# itself is installed without its dependencies.
#
#   docker build -f docker/ui.Dockerfile -t machine-health/ui:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt ./
# Keep in sync with what src/machine_health/ui imports (tests/helm/test_docker.py checks it).
ARG UI_PACKAGES="streamlit altair httpx pandas pyarrow scipy pydantic-settings typer rich tenacity"
RUN pip install --no-cache-dir -c requirements.txt ${UI_PACKAGES}
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE} AS ui
LABEL org.opencontainers.image.title="machine-health ui" \
      org.opencontainers.image.source="https://github.com/machine-health/machine-health" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# Streamlit writes nothing it needs to keep; its caches go to /tmp (an emptyDir in the cluster).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/app \
    MH_ENV=prod \
    MH_VAR_DIR=/tmp/machine-health \
    MH_UI_PORT=8501 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_HEADLESS=true
WORKDIR /home/app
USER 10001:10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
ENTRYPOINT ["machine-health"]
CMD ["ui"]
