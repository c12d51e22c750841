"""The fault-injection tests run on the multi-host harness of tests/cluster (netns.py, netns_ray.py,
netns_evidence.py); pytest's default import mode puts only this directory on sys.path, so add that one too."""

from __future__ import annotations

import sys
from pathlib import Path

CLUSTER_TESTS = str(Path(__file__).resolve().parents[1] / "cluster")
if CLUSTER_TESTS not in sys.path:
    sys.path.insert(0, CLUSTER_TESTS)
