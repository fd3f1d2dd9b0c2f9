"""Latency as serving engines report it, measured so arms can be compared fairly.

Every arm answers the same question back to back, one request at a time, in an arm order shuffled per
question (seeded), after an uncounted warm-up: machine drift then hits all arms alike and each question
gives one paired observation per arm. Figures: TTFT, TPOT (time per output token after the first),
end-to-end, retrieval time, prompt and output tokens, and end-to-end at a common output length
(TTFT + TPOT x (L - 1)) so an arm is not faster only because it writes shorter answers.

Pairs of arms are compared by the geometric mean of per-question latency ratios, with a bootstrap 95%
interval and a Wilcoxon signed-rank test on the log ratios, Holm-corrected over the pairs.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from pydantic import BaseModel
from scipy import stats as sps
from tqdm.auto import tqdm

from ragtune.core.types import Answer
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.backends import Backend
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.stats import bootstrap_ci, holm

# A percentile is printed only from enough samples to put some above it (p95 of 4 samples is the max).
MIN_SAMPLES = {50: 1, 95: 20, 99: 100}
FIELDS = ("e2e_ms", "ttft_ms", "tpot_ms", "retrieve_ms", "e2e_equal_ms")
COMPARED = "e2e_equal_ms"  # the figure arms are compared and the verdict ranks on
WILCOXON = "Wilcoxon signed-rank on log ratios"


class LatencySample(BaseModel):
    """One timed single request: an arm on a question, at position `slot` of that question's arm order."""

    id: str
    arm: str
    slot: int
    e2e_ms: float
    ttft_ms: float
    tpot_ms: float
    retrieve_ms: float
    prompt_tokens: int
    output_tokens: int

    def equal_length_ms(self, length: float) -> float:
        """End-to-end time had the answer been `length` tokens long."""
        return self.ttft_ms + self.tpot_ms * max(length - 1, 0.0)


class RatioTest(BaseModel):
    """Latency of arm a over arm b on the same questions (< 1: a is faster)."""

    metric: str
    a: str
    b: str
    n: int
    ratio: float
    low: float
    high: float
    test: str = WILCOXON
    p: float
    p_holm: float = 1.0
    significant: bool = False
    faster: str | None = None
    verdict: str = ""

    def draw(self) -> bool:
        """The interval contains 1: no speed difference shown."""
        return self.low <= 1.0 <= self.high

    def flipped(self) -> RatioTest:
        return self.model_copy(
            update={"a": self.b, "b": self.a, "ratio": 1 / self.ratio, "low": 1 / self.high, "high": 1 / self.low}
        )


def sample_of(ans: Answer, item_id: str, arm: str, slot: int) -> LatencySample:
    """Engine-style figures from the answer's timings: the generator's ttft counts from generation start,
    so request TTFT is end-to-end minus the decoding that followed the first token."""
    t = ans.timings
    out = ans.usage.completion_tokens
    decode = max(t.generate_ms - t.ttft_ms, 0.0)
    return LatencySample(
        id=item_id,
        arm=arm,
        slot=slot,
        e2e_ms=t.total_ms,
        ttft_ms=max(t.total_ms - decode, 0.0),
        tpot_ms=decode / (out - 1) if out > 1 else 0.0,
        retrieve_ms=t.retrieve_ms,
        prompt_tokens=ans.usage.prompt_tokens,
        output_tokens=out,
    )


def timed_arms(arms: Sequence[ArmSpec]) -> list[ArmSpec]:
    """Arms that run the generator; trivial baselines and retrieval-only arms have no serving latency."""
    return [a for a in arms if a.baseline is None and not a.retrieval_only]


def latency_items(items: Sequence[EvalItem], n: int | None, seed: int) -> list[EvalItem]:
    """A seeded sample of n questions in run order (None: all)."""
    if n is None or n >= len(items):
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), n))
    return [it for i, it in enumerate(items) if i in keep]


def run_latency(
    backend: Backend,
    items: Sequence[EvalItem],
    arms: Sequence[ArmSpec],
    seed: int,
    pin: str | None = None,
    progress: bool = False,
) -> list[LatencySample]:
    """Interleaved paired single requests: per question every arm, in a seeded shuffled order (`slot`);
    returned arm by arm in the given order, so comparisons name the arms the same way every run."""
    arms = timed_arms(arms)
    if not items or not arms:
        return []
    rng = random.Random(seed)
    for a in arms:  # warm-up: caches, lazy loads and adapter switches are not counted
        backend.answer([items[0].question], a, pin)
    out: list[LatencySample] = []
    for it in tqdm(items, desc="latency", disable=not progress):
        order = list(arms)
        rng.shuffle(order)
        for slot, a in enumerate(order):
            ans = backend.answer([it.question], a, pin)[0]
            out.append(sample_of(ans, it.id, a.name, slot))
    rank = {a.name: i for i, a in enumerate(arms)}
    return sorted(out, key=lambda s: rank[s.arm])  # arms in the given order (stable: questions stay in order)


def percentile(values: Sequence[float], q: int) -> float | None:
    """The q-th percentile, or None when the sample is too small to support it (see MIN_SAMPLES)."""
    if len(values) < MIN_SAMPLES[q]:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def common_length(samples: Sequence[LatencySample]) -> float:
    """The median output length over every arm: the length end-to-end times are equalised to."""
    lengths = [s.output_tokens for s in samples]
    return float(statistics.median(lengths)) if lengths else 0.0


def values(samples: Sequence[LatencySample], field: str, length: float) -> list[float]:
    if field == "e2e_equal_ms":
        return [s.equal_length_ms(length) for s in samples]
    return [float(getattr(s, field)) for s in samples]


def arm_latency(samples: Sequence[LatencySample], length: float) -> dict[str, Any]:
    """Percentiles of every figure for one arm, with the sample size they rest on."""
    name = {"e2e_ms": "", "ttft_ms": "ttft_", "tpot_ms": "tpot_", "retrieve_ms": "retrieve_", "e2e_equal_ms": "equal_"}
    out: dict[str, Any] = {"latency_n": len(samples), "latency_length": length}
    for field in FIELDS:
        vals = values(samples, field, length)
        for q in MIN_SAMPLES:
            out[f"{name[field]}p{q}_ms"] = percentile(vals, q)
    out["latency_prompt_tokens"] = float(np.mean([s.prompt_tokens for s in samples])) if samples else None
    out["latency_output_tokens"] = float(np.mean([s.output_tokens for s in samples])) if samples else None
    return out


def summarize_latency(samples: Sequence[LatencySample]) -> dict[str, dict[str, Any]]:
    length = common_length(samples)
    arms = dict.fromkeys(s.arm for s in samples)
    return {a: arm_latency([s for s in samples if s.arm == a], length) for a in arms}


def ratio_test(
    a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, float]:
    """(geometric-mean ratio a/b, bootstrap 95% low, high, Wilcoxon p) over paired latencies."""
    la = np.log(np.maximum(np.asarray(a, dtype=float), 1e-6))
    lb = np.log(np.maximum(np.asarray(b, dtype=float), 1e-6))
    d = la - lb
    mean = float(d.mean())
    if np.all(d == d[0]):
        return float(np.exp(mean)), float(np.exp(mean)), float(np.exp(mean)), 1.0 if mean == 0 else 0.0
    ci = bootstrap_ci(d.tolist(), resamples, seed)  # of the mean log ratio: exp of it is the geometric mean
    p = float(sps.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    low, high = (mean, mean) if ci.low is None or ci.high is None else (ci.low, ci.high)
    return float(np.exp(mean)), float(np.exp(low)), float(np.exp(high)), p


def paired(
    samples: Sequence[LatencySample], a: str, b: str, field: str, length: float
) -> tuple[list[float], list[float]]:
    bmap = {s.id: s for s in samples if s.arm == b}
    pa = [s for s in samples if s.arm == a and s.id in bmap]
    return values(pa, field, length), values([bmap[s.id] for s in pa], field, length)


def compare_latency(
    samples: Sequence[LatencySample],
    field: str = COMPARED,
    resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[RatioTest]:
    """Every pair of arms (later arm over earlier), one Holm family."""
    length = common_length(samples)
    arms = list(dict.fromkeys(s.arm for s in samples))
    family: list[RatioTest] = []
    for x, y in pairs if pairs is not None else [(b, a) for a, b in combinations(arms, 2)]:
        va, vb = paired(samples, x, y, field, length)
        if len(va) < 2:
            continue
        ratio, low, high, p = ratio_test(va, vb, resamples, seed)
        family.append(RatioTest(metric=field, a=x, b=y, n=len(va), ratio=ratio, low=low, high=high, p=p))
    for t, padj in zip(family, holm([t.p for t in family]), strict=True):
        t.p_holm = padj
        t.significant = padj < alpha and not t.draw()
        t.faster = (t.a if t.ratio < 1 else t.b) if t.significant else None
        t.verdict = f"{t.faster} faster" if t.faster else "no significant difference"
    return family
