# syntax=docker/dockerfile:1
# Airflow (scheduler, api-server, dag-processor, triggerer) for the official apache-airflow Helm
# chart: the official image of the pinned Airflow version, plus requirements-airflow.txt and our
# thin DAGs baked in. Airflow never imports the ML code: steps run in the pipeline image.
#
#   docker build -f docker/airflow.Dockerfile -t machine-health/airflow:0.1.0 .
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

# ---- wheels: resolve and build every pinned requirement once -----------------------------------
FROM ${AIRFLOW_IMAGE} AS wheels
USER 50000:0
COPY --chown=50000:0 requirements-airflow.txt /tmp/requirements-airflow.txt
RUN pip wheel --no-cache-dir --wheel-dir /tmp/wheels -r /tmp/requirements-airflow.txt

# ---- airflow: install from those wheels only; they are bind-mounted, never a layer --------------
FROM ${AIRFLOW_IMAGE} AS airflow
LABEL org.opencontainers.image.title="machine-health airflow" \
      org.opencontainers.image.source="https://github.com/machine-health/machine-health" \
      org.opencontainers.image.licenses="Apache-2.0"
# The official image runs as the unprivileged `airflow` user (UID 50000, group 0); stay on it.
USER 50000:0
COPY --chown=50000:0 requirements-airflow.txt /tmp/requirements-airflow.txt
# Re-stating apache-airflow's version keeps pip from up- or downgrading the image's own Airflow,
# as the image's documentation recommends.
RUN --mount=type=bind,from=wheels,source=/tmp/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-index --find-links=/tmp/wheels \
        "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements-airflow.txt
COPY --chown=50000:0 airflow/dags/ /opt/airflow/dags/
# The chart probes each component itself (scheduler job check, api-server health endpoint).
HEALTHCHECK NONE
