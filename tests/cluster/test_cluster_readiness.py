"""Cluster readiness without a cluster: `python -m rlvr_ray.main --dry-run` (and `python -m rlvr_ray.cluster check`)
catch what breaks on a multi-node cluster but not on one machine: relative output paths with no storage URI, a
SQLite or local-file tracking store, local paths no shared volume holds, resources no worker group provides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cluster_helpers import CLUSTER, one, rendered

from rlvr_ray.cluster.readiness import cluster_problems, cluster_reason
from rlvr_ray.config import load_config
from rlvr_ray.main import main

PINNED = ["rollout.resource=rollout", "verifier.resource=verifier", "learner.resource=learner"]
SERVER = "tracking.tracking_uri=http://mlflow.example:5000"


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def problems(*overrides: str, env: dict | None = None, shared: frozenset[str] | None = None) -> list[str]:
    return cluster_problems(load_config("train_rlvr_test", list(overrides)), env or {}, shared)


@pytest.mark.parametrize(
    ("overrides", "env", "starts"),
    [
        # Relative output paths with no storage URI: each names its field and says to set storage_uri.
        ([SERVER], {}, ["output_dir: 'outputs/train_rlvr_test' is a relative path and storage_uri is not set",
                        "warm_start_dir: 'outputs/warm_start_test' is a relative path"]),
        ([SERVER, "output_dir=/mnt/x/run"], {}, ["warm_start_dir: "]),
        ([SERVER, "storage_uri=checkpoints"], {}, ["storage_uri: 'checkpoints' is a relative local path"]),
        ([SERVER, "storage_uri=file:ckpt"], {}, ["storage_uri: 'file:ckpt' is a relative local path"]),
        # Tracking stores in one host's files.
        (["storage_uri=s3://b/p"], {}, ["tracking.tracking_uri: not set and $MLFLOW_TRACKING_URI is unset"]),
        (["storage_uri=s3://b/p", "tracking.tracking_uri=sqlite:///mlflow.db"], {},
         ["tracking.tracking_uri: 'sqlite:///mlflow.db' is a SQLite store"]),
        (["storage_uri=s3://b/p"], {"MLFLOW_TRACKING_URI": "sqlite:////tmp/m.db"},
         ["$MLFLOW_TRACKING_URI: 'sqlite:////tmp/m.db' is a SQLite store"]),
        (["storage_uri=s3://b/p"], {"MLFLOW_TRACKING_URI": "./mlruns"},
         ["$MLFLOW_TRACKING_URI: './mlruns' is a local file store"]),
        (["storage_uri=gs://b/p", "tracking.tracking_uri=file:///tmp/mlruns"], {},
         ["tracking.tracking_uri: 'file:///tmp/mlruns' is a local file store"]),
    ],
)
def test_each_problem_is_one_line_naming_field_and_fix(overrides: list[str], env: dict, starts: list[str]) -> None:
    found = problems(*overrides, env=env)
    assert len(found) == len(starts), found
    for line, start in zip(found, starts, strict=True):
        assert line.startswith(start) and "\n" not in line
        assert "; set " in line, f"no fix named: {line}"


@pytest.mark.parametrize(
    ("overrides", "env"),
    [
        (["storage_uri=s3://bucket/runs", SERVER], {}),
        (["storage_uri=/mnt/shared/ckpt"], {"MLFLOW_TRACKING_URI": "http://rlvr-mlflow:5000"}),
        (["output_dir=/mnt/shared/run", "warm_start_dir=/mnt/shared/warm"], {"MLFLOW_TRACKING_URI": "https://m.io"}),
        (["storage_uri=s3://bucket/runs"], {"MLFLOW_TRACKING_URI": None}),  # from a Secret: taken to be a server
        (["storage_uri=s3://b/p", SERVER], {"MLFLOW_TRACKING_URI": "sqlite:///m.db"}),  # the config wins
    ],
)
def test_ready_configs_have_no_problems(overrides: list[str], env: dict) -> None:
    assert problems(*overrides, env=env) == []


def test_local_paths_must_be_on_a_volume_every_pod_shares() -> None:
    shared = frozenset({"/mnt/rlvr"})
    assert problems("storage_uri=/mnt/rlvr/ckpt", SERVER, shared=shared) == []
    assert problems("storage_uri=file:///mnt/rlvr/ckpt", SERVER, shared=shared) == []
    (line,) = problems("storage_uri=/data/ckpt", SERVER, shared=shared)
    assert line.startswith("storage_uri: '/data/ckpt' is not on a volume every Ray pod of the manifest shares "
                           "(shared mounts: /mnt/rlvr)")
    lines = problems("output_dir=/mnt/rlvrx/run", "warm_start_dir=/mnt/rlvr/warm", SERVER, shared=shared)
    assert len(lines) == 1 and lines[0].startswith("output_dir: '/mnt/rlvrx/run' is not on a volume")
    assert problems("storage_uri=/mnt/rlvr/ckpt", SERVER, shared=frozenset())[0].endswith("(cluster/overlays/rwx)")


def test_what_counts_as_aimed_at_a_cluster() -> None:
    local = load_config("train_rlvr_test")
    assert cluster_reason(local, {}) is None
    assert cluster_reason(local, {"RAY_ADDRESS": "local"}) is None
    assert cluster_reason(local, {"RAY_ADDRESS": "10.0.0.1:6379"}) == "$RAY_ADDRESS is set (10.0.0.1:6379)"
    assert cluster_reason(local, {}, forced=True) == "--cluster was given"
    assert cluster_reason(local, {}, manifest="m.yaml") == "checked against the manifest m.yaml"
    pinned = load_config("train_rlvr_test", ["learner.resource=learner"])
    assert cluster_reason(pinned, {}) == "roles pinned to worker groups by custom resources (learner)"


# ----------------------------------------------------------------------------------------------------------------
# python -m rlvr_ray.main --dry-run


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--dry-run", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["train_rlvr_large", "cluster_cpu_local"])
def test_the_cluster_configs_are_ready(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dry_run(capsys, "--config-name", name)
    assert (code, err) == (0, "")
    assert "cluster checks: aimed at a cluster (roles pinned" in out and "cluster checks: OK" in out


def test_a_local_config_aimed_at_a_cluster_fails_with_one_line_per_problem(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = dry_run(capsys, "--config-name", "train_rlvr_test")
    assert (code, err) == (0, "") and "cluster checks: skipped" in out
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    code, out, err = dry_run(capsys, "--config-name", "train_rlvr_test")
    assert code == 1 and out.startswith("placement plan")
    lines = err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["output_dir", "warm_start_dir", "tracking.tracking_uri"]
    assert all(line.startswith("error: ") for line in lines)
    assert "cluster checks: 3 problem(s)" in out
    code, _, err = dry_run(capsys, "--config-name", "train_rlvr_test", "storage_uri=s3://b/runs", SERVER)
    assert (code, err) == (0, "")


def test_cluster_flag_and_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    """--manifest judges tracking with the head pod's environment (MLFLOW_TRACKING_URI of cluster/base) and
    placement with the manifest's groups; --cluster alone does not know that environment."""
    args = ["--config-name", "train_rlvr_model", "storage_uri=s3://b/runs", *PINNED]
    code, _, err = dry_run(capsys, *args, "--cluster")
    assert code == 1 and err.startswith("error: tracking.tracking_uri: not set")
    code, out, err = dry_run(capsys, *args, "--manifest", str(CLUSTER / "base"))
    assert (code, err) == (0, "") and "RayCluster/rlvr (this config): OK" in out
    laptop = str(CLUSTER / "overlays/cpu-local")
    code, _, err = dry_run(capsys, "--config-name", "train_rlvr_large", "--manifest", laptop)
    assert code == 1
    assert "error: RayCluster/rlvr: rollout actor needs resource 'GPU' (1) but no worker group provides it" in err
    code, _, err = dry_run(capsys, "--config-name", "cluster_cpu_local", "--manifest", str(CLUSTER / "overlays/gpu"))
    assert code == 1 and "error: storage_uri: '/mnt/rlvr/checkpoints' is not on a volume" in err
    code, _, err = dry_run(capsys, "--config-name", "cluster_cpu_local", "--manifest", "/no/such/file.yaml")
    assert code == 2 and err.count("\n") == 1 and "cannot read" in err


def test_check_judges_each_rayjob_with_its_head_pods_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlvr_ray.cluster.__main__ import main as check

    docs = rendered("base")
    job = one(docs, "RayJob", "rlvr-train")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"] = [env for env in head["env"] if env["name"] != "MLFLOW_TRACKING_URI"]
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text(yaml.safe_dump_all([job]))
    assert check(["check", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "RayJob/rlvr-train (entrypoint config train_rlvr_model): NOT READY FOR A CLUSTER" in out
    assert "  tracking.tracking_uri: not set and $MLFLOW_TRACKING_URI is unset" in out
    assert check(["check", str(CLUSTER / "base")]) == 0
