"""Nested, seeded training subsets for the verdict's learning curve.

Nesting (25% inside 50% inside 100%) makes the curve's steps differ only by the added data, so a
rise reflects more data, not a luckier sample.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def nested_subsets(items: Sequence[T], fractions: Sequence[float], seed: int = 0) -> dict[float, list[T]]:
    """Prefixes of one seeded shuffle, one per fraction (each at least one item)."""
    if not items:
        raise ValueError("no training examples to build a learning curve from")
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"learning-curve fractions must be in (0, 1], got {bad}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return {f: [items[i] for i in order[: max(1, round(f * len(items)))]] for f in sorted(fractions)}
