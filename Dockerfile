# One image for every nightshift service in docker-compose.yaml: Airflow's api-server,
# scheduler, dag-processor and triggerer, the Dask scheduler and the CPU or GPU Dask workers,
# and the MLflow server.
#   docker compose build                                  # CPU image
#   docker compose build --build-arg EXTRAS="postgres mlflow-server fab gpu"  # CUDA XGBoost, dask-cuda
# BASE_IMAGE: any Debian-like image with Python 3.11 or 3.12 and pip; where Docker Hub is out
# of reach, compose/stand-ins/build.sh builds nightshift-stand-in/python:3.11 from Debian.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# cpu or gpu: which XGBoost build (pyproject's extras; the CPU one carries no CUDA or NCCL).
ARG EXTRAS="postgres mlflow-server fab cpu"
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/nightshift/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/nightshift/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    NIGHTSHIFT_HOME=/opt/nightshift \
    NIGHTSHIFT_PIPELINES_DIR=/opt/nightshift/include/pipelines

RUN pip install --no-cache-dir "uv>=0.9" && useradd --create-home --uid 50000 nightshift
WORKDIR /opt/nightshift
# Dependencies first (from the lock), so code changes do not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project $(for e in $EXTRAS; do printf -- '--extra %s ' "$e"; done)
COPY include ./include
COPY dags ./dags
COPY plugins ./plugins
RUN uv sync --frozen --no-dev $(for e in $EXTRAS; do printf -- '--extra %s ' "$e"; done) \
    && mkdir -p /opt/airflow /opt/nightshift/data && chown -R nightshift /opt/airflow /opt/nightshift/data
USER nightshift
