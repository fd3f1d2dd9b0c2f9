"""Nested, seeded training subsets for the verdict's learning curve.

Nesting (25% inside 50% inside 100%) makes the curve's steps differ only by the added data, so a
rise reflects more data, not a luckier sample of it; training each point with several seeds
(`verdict.seeds`) measures how far a point moves by training randomness alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from ragtune.eval.verdict.figures import CurvePoint
from ragtune.eval.verdict.seeds import base_arm, seed_names

if TYPE_CHECKING:  # records are only read here
    from ragtune.eval.harness.runner import Record

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


CURVE_ARMS = ("ft", "hybrid")


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def curve_points(records: Sequence[Record], fraction: float, n_examples: int) -> list[CurvePoint]:
    """One point per curve arm at one training share: the mean over its seeds, each seed's mean kept."""
    names = [r.arm for r in records]
    out: list[CurvePoint] = []
    for arm in CURVE_ARMS:
        per_seed = [[r.f1 for r in records if r.arm == n] for n in seed_names(names, arm)]
        means = [sum(s) / len(s) for s in per_seed if s]
        if not means:
            continue
        out.append(
            CurvePoint(
                arm=arm,
                fraction=fraction,
                n_examples=n_examples,
                quality=sum(means) / len(means),
                format=_mean([r.format_ok for r in records if base_arm(r.arm) == arm]),
                seeds=means if len(means) > 1 else [],
            )
        )
    return out
