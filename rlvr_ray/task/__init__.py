"""Stage 1, PROMPT: the RPN arithmetic task.

- ``vocab``: token ids (pure Python).
- ``problems``: the :class:`~rlvr_ray.task.problems.Problems` record (numpy).
- ``rpn``: the batched JAX process, ``generate_problems(vocab, n, complexity_range, seed)``.
- ``reference``: the plain-Python reduction the JAX process and the rewards are checked against.
- ``cli``: ``python -m rlvr_ray.task sample|score``.

Importing this package does not import jax: :func:`generate_problems` loads ``rpn`` on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlvr_ray.task.vocab import ALLOWED_OPERATORS, Vocab

if TYPE_CHECKING:
    from rlvr_ray.task.problems import Problems

__all__ = ["ALLOWED_OPERATORS", "Vocab", "generate_problems"]


def generate_problems(vocab: Vocab, n: int, complexity_range: tuple[int, int], seed: int) -> Problems:
    """Lazy front of :func:`rlvr_ray.task.rpn.generate_problems` (imports jax on first call)."""
    from rlvr_ray.task.rpn import generate_problems as _generate

    return _generate(vocab, n, complexity_range, seed)
