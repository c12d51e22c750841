# rlvr-ray GPU image: CUDA, upstream vLLM and the project with its `gpu` extra. Every Ray pod of
# cluster/overlays/gpu runs it (Ray needs one Python/Ray version across a cluster, CPU-only groups included).
#   docker build -f docker/gpu.Dockerfile -t rlvr-ray:0.1.0-gpu .          (from the repository root)
# KubeRay runs `ray start ...` in it through bash; a RayJob's entrypoint (python -m rlvr_ray.main ...) runs on the
# head in the working directory /mnt/rlvr (per-pod scratch, or the shared claim with cluster/overlays/rwx), so
# relative output paths of a config land there; checkpoints go to the config's storage_uri.
# The torch and vLLM wheels bring their own CUDA libraries; the base image adds the CUDA user-space bits and the
# driver comes from the node (NVIDIA container toolkit).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
FROM ${CUDA_IMAGE}

# Ubuntu 24.04's Python; must satisfy requires-python in pyproject.toml (tests/cluster check it).
ARG PYTHON_VERSION=3.12

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RLVR_CONFIG_DIR=/app/configs

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Distribution packages follow the base image tag; pinning their versions would break on every Ubuntu update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" "python${PYTHON_VERSION}-dev" \
        build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Non-root user `ray` (uid/gid 1000, the ids the manifests' securityContext use); Ubuntu images ship a uid-1000
# `ubuntu` user, which is removed first. KubeRay starts Ray through a bash login shell, whose /etc/profile resets
# PATH; profile.d puts the venv back in front.
# PATH stays literal in the profile script (it expands at login), hence the single quotes.
# hadolint ignore=SC2016
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && groupadd --gid 1000 ray \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash ray \
    && mkdir -p /app /mnt/rlvr \
    && chown ray:ray /mnt/rlvr \
    && echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/10-rlvr-venv.sh

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rlvr_ray ./rlvr_ray
COPY configs ./configs

# Versions come from pyproject.toml (the `gpu` extra), not from here.
# hadolint ignore=DL3013
RUN "python${PYTHON_VERSION}" -m venv /opt/venv \
    && pip install --upgrade "pip>=24" \
    && pip install ".[gpu]" \
    && python -c "import rlvr_ray, ray, vllm, torch; print('rlvr-ray', rlvr_ray.__name__, 'ray', ray.__version__)"

USER 1000:1000
WORKDIR /mnt/rlvr
CMD ["python", "-m", "rlvr_ray.main", "--help"]
