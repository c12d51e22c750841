"""The task vocabulary: ids "0".."p-1", the operators in configured order, "=", "<boe>", "<eoe>", "<pad>".

Pure Python; shared by the JAX process, the tokenizer, the rewards and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

ALLOWED_OPERATORS = ("+", "-", "*")


@dataclass(frozen=True)
class Vocab:
    """Token ids for a modulus ``p`` and an ordered operator tuple.

    >>> v = Vocab(13, ("+", "-", "*"))
    >>> v.size, v.eq, v.boe, v.eoe, v.pad
    (20, 16, 17, 18, 19)
    >>> v.decode(v.encode("<boe> 3 4 + 2 *"))
    '<boe> 3 4 + 2 *'
    """

    p: int
    operators: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.p < 2:
            raise ValueError(f"p must be >= 2, got {self.p}")
        bad = [op for op in self.operators if op not in ALLOWED_OPERATORS]
        if bad or not self.operators or len(set(self.operators)) != len(self.operators):
            raise ValueError(
                f"operators must be a non-empty ordered subset of {''.join(ALLOWED_OPERATORS)} without repeats, "
                f"got {''.join(self.operators)!r}"
            )

    @cached_property
    def tokens(self) -> tuple[str, ...]:
        return (*[str(i) for i in range(self.p)], *self.operators, "=", "<boe>", "<eoe>", "<pad>")

    @cached_property
    def token_to_id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        return self.p + len(self.operators) + 4

    @property
    def first_operator(self) -> int:
        return self.p

    @property
    def eq(self) -> int:
        return self.p + len(self.operators)

    @property
    def boe(self) -> int:
        return self.eq + 1

    @property
    def eoe(self) -> int:
        return self.eq + 2

    @property
    def pad(self) -> int:
        return self.eq + 3

    def is_operand(self, token_id: int) -> bool:
        return 0 <= token_id < self.p

    def is_operator(self, token_id: int) -> bool:
        return self.p <= token_id < self.eq

    def operator_symbol(self, token_id: int) -> str:
        return self.operators[token_id - self.p]

    def encode(self, text: str) -> list[int]:
        """Space-separated tokens to ids; raises ValueError naming the unknown token."""
        ids = []
        for tok in text.split():
            if tok not in self.token_to_id:
                raise ValueError(f"unknown token {tok!r}; allowed: {' '.join(self.tokens)}")
            ids.append(self.token_to_id[tok])
        return ids

    def decode(self, ids: list[int] | tuple[int, ...]) -> str:
        """Ids to space-separated tokens; out-of-range ids render as ``<unk:ID>`` (never raises)."""
        return " ".join(self.tokens[i] if 0 <= i < self.size else f"<unk:{i}>" for i in ids)
