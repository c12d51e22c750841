# MLflow tracking server for cluster/: the MLflow of pyproject.toml plus the PostgreSQL driver and boto3 that the
# GPU overlay's backend (PostgreSQL) and artifact store (S3) need. Non-root; the Deployment passes `mlflow server`.
#   docker build -f docker/mlflow.Dockerfile -t rlvr-ray-mlflow:0.1.0 .    (from the repository root)
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# Kept equal to pyproject's mlflow requirement (tests/cluster check it), so server and clients agree.
ARG MLFLOW_SPEC="mlflow>=3.0,<4"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Version ranges, like pyproject.toml: the newest MLflow 3.x the clients also accept.
# hadolint ignore=DL3013
RUN pip install "${MLFLOW_SPEC}" "psycopg2-binary>=2.9,<3" "boto3>=1.34,<2" \
    && groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid 1000 --create-home mlflow

USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
