"""Training-seed spread: one fine-tune is one draw, so a verdict can train several (`verdict.seeds`).

A setup trained with several seeds is scored per question as the mean over its seeds, and its
intervals and paired tests resample seeds as well as questions (a two-level bootstrap), so a
difference that one lucky seed made does not pass for a difference between setups. Records of the
extra seeds carry the arm name with a `:seedN` suffix (N = tuning.seed + i); the first seed keeps
the plain name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SUFFIX = ":seed"


def seed_arm(arm: str, i: int, first_seed: int) -> str:
    """The record name of `arm` trained with the i-th seed (the plain name for the first)."""
    return arm if i == 0 else f"{arm}{SUFFIX}{first_seed + i}"


def base_arm(name: str) -> str:
    return name.split(SUFFIX, 1)[0]


def seed_names(names: Sequence[str], arm: str) -> list[str]:
    """`arm` and its extra-seed names among `names`, first seed first."""
    return [n for n in dict.fromkeys(names) if base_arm(n) == arm]


def _resampled_means(x: np.ndarray, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per resample: draw seeds (rows) with replacement, average them per question, then average the
    resampled questions `q` (one row of question indices per resample)."""
    s = rng.integers(0, x.shape[0], size=(q.shape[0], x.shape[0]))
    per_question = x[s].mean(axis=1)  # (resamples, questions)
    return np.take_along_axis(per_question, q, axis=1).mean(axis=1)


def seeded_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(mean diff a-b, CI low, CI high, two-sided p) for seeds x questions score matrices on the same
    questions: questions are resampled together (paired), each side's seeds independently."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError("both sides need scores on the same questions")
    if a.shape[1] == 0:
        return 0.0, 0.0, 0.0, 1.0
    diff = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    q = rng.integers(0, a.shape[1], size=(n_resamples, a.shape[1]))
    boots = _resampled_means(a, q, rng) - _resampled_means(b, q, rng)
    if np.all(boots == boots[0]):
        return diff, diff, diff, 1.0 if diff == 0 else 0.0
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    p = 2 * min(float(np.mean(boots <= 0)), float(np.mean(boots >= 0)))
    return diff, float(low), float(high), float(min(1.0, max(p, 1 / (n_resamples + 1))))


def seeded_interval(
    x: np.ndarray, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) of a seeds x questions matrix, resampling seeds and questions."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    rng = np.random.default_rng(seed)
    q = rng.integers(0, x.shape[1], size=(n_resamples, x.shape[1]))
    boots = _resampled_means(x, q, rng)
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    return float(x.mean()), float(low), float(high)
