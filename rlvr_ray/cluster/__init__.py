"""Kubernetes (KubeRay) support: check a manifest's worker groups against a config's placement plan (check), and a
config against what breaks on any multi-node cluster (readiness: storage URI, tracking server; dry_run).

    python -m rlvr_ray.cluster check MANIFEST [--config-name NAME] [key=value ...]
    python -m rlvr_ray.main --dry-run [--cluster] [--manifest MANIFEST] --config-name NAME
"""
