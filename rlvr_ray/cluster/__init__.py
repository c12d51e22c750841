"""Kubernetes (KubeRay) support: check a manifest's worker groups against a config's placement plan.

    python -m rlvr_ray.cluster check MANIFEST [--config-name NAME] [key=value ...]
"""
