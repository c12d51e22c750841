"""rlvr-ray: reinforcement learning from verifiable rewards on Ray.

Importing the package starts nothing and imports nothing heavy (no torch, ray, vllm or jax).
"""

__version__ = "0.1.0"
