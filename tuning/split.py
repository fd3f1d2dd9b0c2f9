"""Seeded train / validation / test split by group, so nothing about a test document leaks into training."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ragtune.tuning.data import Example


@dataclass
class DataSplit:
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def group_of(ex: Example, i: int) -> str:
    """The example's group (explicit `group`, else `doc_id`); an ungrouped row is its own group."""
    return ex.group or f"__row{i}"


def split_groups(examples: list[Example], val_fraction: float, test_fraction: float, seed: int) -> DataSplit:
    """Whole groups go to one split; at least one group stays in train."""
    groups = sorted({group_of(e, i) for i, e in enumerate(examples)})
    random.Random(seed).shuffle(groups)
    n = len(groups)
    n_test = round(n * test_fraction) if test_fraction > 0 else 0
    n_val = round(n * val_fraction) if val_fraction > 0 else 0
    if test_fraction > 0 and n >= 3:
        n_test = max(1, n_test)
    if val_fraction > 0 and n - n_test >= 2 and len(examples) >= 4:
        n_val = max(1, n_val)
    while n_val + n_test >= n and (n_val or n_test):  # keep something to train on
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    test_g, val_g = set(groups[:n_test]), set(groups[n_test : n_test + n_val])
    out = DataSplit([], [], [])
    for i, e in enumerate(examples):
        g = group_of(e, i)
        (out.test if g in test_g else out.val if g in val_g else out.train).append(e)
    return out


def split_by_group(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Two-way form of `split_groups` (train, validation)."""
    s = split_groups(examples, val_fraction, 0.0, seed)
    return s.train, s.val
