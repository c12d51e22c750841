"""Plain-Python reference of the RPN reduction: the oracle the JAX process is tested against, and what the
rewards use to compute the true chain of a prompt.

One reduction pass scans left to right and replaces every (operand, operand, operator) triple by its value
mod p; after a replacement the scan continues *after* the triple, so reductions never chain within a pass.

>>> v = Vocab(13, ("+", "-", "*"))
>>> [v.decode(e) for e in reduction_chain(v.encode("3 4 + 2 *"), v)]
['7 2 *', '1']
>>> [v.decode(e) for e in reduction_chain(v.encode("5 6 7 + *"), v)]
['5 0 *', '0']
"""

from __future__ import annotations

from collections.abc import Sequence

from rlvr_ray.task.vocab import Vocab


def apply_operator(symbol: str, a: int, b: int, p: int) -> int:
    """``a symbol b`` mod p, always in [0, p) (subtraction included)."""
    if symbol == "+":
        return (a + b) % p
    if symbol == "-":
        return (a - b) % p
    if symbol == "*":
        return (a * b) % p
    raise ValueError(f"unknown operator {symbol!r}")


def is_expression(ids: Sequence[int], vocab: Vocab) -> bool:
    """True when ``ids`` is a valid RPN expression: operands/operators only, every operator has two arguments
    and exactly one value is left (a single operand, complexity 0, counts as valid)."""
    depth = 0
    for token in ids:
        if vocab.is_operand(token):
            depth += 1
        elif vocab.is_operator(token) and depth >= 2:
            depth -= 1
        else:
            return False
    return depth == 1


def reduce_once(ids: Sequence[int], vocab: Vocab) -> list[int]:
    """One reduction pass over any id sequence; tokens that are not part of a triple are copied unchanged."""
    out: list[int] = []
    i = 0
    while i < len(ids):
        if (
            i + 2 < len(ids)
            and vocab.is_operand(ids[i])
            and vocab.is_operand(ids[i + 1])
            and vocab.is_operator(ids[i + 2])
        ):
            out.append(apply_operator(vocab.operator_symbol(ids[i + 2]), ids[i], ids[i + 1], vocab.p))
            i += 3  # continue after the triple: no chained reduction within one pass
        else:
            out.append(int(ids[i]))
            i += 1
    return out


def reduction_chain(expr_ids: Sequence[int], vocab: Vocab) -> list[list[int]]:
    """The chain ``[E1, ..., En]`` of a valid expression E0 (E0 itself excluded; ``[]`` for a single operand).

    Raises ValueError when ``expr_ids`` is not a valid RPN expression.
    """
    if not is_expression(expr_ids, vocab):
        raise ValueError(f"not a valid RPN expression: {vocab.decode(list(expr_ids))!r}")
    chain: list[list[int]] = []
    current = [int(t) for t in expr_ids]
    # A valid expression with an operator always holds a triple (the two tokens before its first operator),
    # so every pass shortens it and the loop ends after at most k passes.
    while len(current) > 1:
        current = reduce_once(current, vocab)
        chain.append(current)
    return chain


def evaluate(expr_ids: Sequence[int], vocab: Vocab) -> int:
    """The value of a valid expression mod p (the operand of En). Raises ValueError when invalid."""
    chain = reduction_chain(expr_ids, vocab)
    return chain[-1][0] if chain else int(expr_ids[0])


def parse_prompt(prompt_ids: Sequence[int], vocab: Vocab) -> list[int]:
    """E0 of a prompt ``<boe> E0`` (trailing ``<pad>`` ignored). Raises ValueError when malformed."""
    ids = [int(t) for t in prompt_ids]
    while ids and ids[-1] == vocab.pad:
        ids.pop()
    if not ids or ids[0] != vocab.boe:
        raise ValueError(f"prompt must start with <boe>, got {vocab.decode(ids)!r}")
    expr = ids[1:]
    if not is_expression(expr, vocab):
        raise ValueError(f"prompt is not '<boe> E0' with E0 a valid RPN expression: {vocab.decode(ids)!r}")
    return expr


def target_completion(expr_ids: Sequence[int], vocab: Vocab) -> list[int]:
    """The target completion ``= E1 = ... = En <eoe>`` of a valid expression E0. Raises ValueError when invalid."""
    out: list[int] = []
    for step in reduction_chain(expr_ids, vocab):
        out += [vocab.eq, *step]
    return [*out, vocab.eoe]
