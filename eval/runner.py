"""Run arms over the same questions and score every answer.

A few questions per arm run one at a time so latency figures are single-request latencies; the
rest run batched for throughput (batching changes speed, not greedy answers' content much, and
never the metric definitions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from ragtune.core.config import Config
from ragtune.eval import metrics
from ragtune.eval.data import EvalItem
from ragtune.serving.pipeline import RETRIEVING, Pipeline


class Record(BaseModel):
    id: str
    arm: str
    question: str
    answer: str
    extracted: str
    golds: list[str]
    exact_match: float
    f1: float
    contains: float
    format_ok: float | None
    stale: float | None = None
    hit: float | None = None
    retrieved: list[str] = Field(default_factory=list)
    snapshot: str | None = None
    adapter: str | None = None
    batched: bool = False
    retrieve_ms: float = 0.0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def run_arm(
    pipeline: Pipeline,
    items: Sequence[EvalItem],
    arm: str,
    config: Config,
    adapter: str | None = None,
    latency_samples: int = 4,
    progress: bool = True,
    desc: str | None = None,
) -> list[Record]:
    cfg = config.eval
    top_k = config.retrieval.top_k
    records: list[Record] = []
    bar = tqdm(total=len(items), desc=desc or f"eval {arm}", disable=not progress, leave=False)
    single = list(items[:latency_samples])
    batched = list(items[latency_samples:])
    groups: list[tuple[list[EvalItem], bool]] = [([it], False) for it in single]
    # Several batches per call: the generator sorts them by length so padding stays small.
    per_call = 4 * config.generation.batch_size
    groups += [(batched[i : i + per_call], True) for i in range(0, len(batched), per_call)]
    for group, is_batch in groups:
        answers = pipeline.answer_many([it.question for it in group], mode=arm, adapter=adapter)
        for it, ans in zip(group, answers, strict=True):
            text = ans.answer
            span = metrics.extract(text, cfg.answer_regex)
            retrieved = list(dict.fromkeys(c.doc_id for c in ans.citations))
            records.append(
                Record(
                    id=it.id,
                    arm=arm,
                    question=it.question,
                    answer=text,
                    extracted=span,
                    golds=it.answers,
                    exact_match=metrics.exact_match(span, it.answers),
                    f1=metrics.token_f1(span, it.answers),
                    contains=metrics.contains(text, it.answers),
                    format_ok=metrics.format_ok(text, cfg.format_regex),
                    stale=metrics.contains(text, it.stale_answers) if it.stale_answers else None,
                    hit=metrics.hit_at_k(retrieved, it.doc_ids, top_k) if arm in RETRIEVING else None,
                    retrieved=retrieved,
                    snapshot=ans.snapshot,
                    adapter=ans.adapter,
                    batched=is_batch,
                    retrieve_ms=ans.timings.retrieve_ms,
                    ttft_ms=ans.timings.ttft_ms,
                    total_ms=ans.timings.total_ms,
                    prompt_tokens=ans.usage.prompt_tokens,
                    completion_tokens=ans.usage.completion_tokens,
                )
            )
        bar.update(len(group))
    bar.close()
    return records


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Per-arm figures; latency percentiles come from the single-request (unbatched) records."""
    out: dict[str, dict[str, Any]] = {}
    for arm in dict.fromkeys(r.arm for r in records):
        rs = [r for r in records if r.arm == arm]
        lat = [r for r in rs if not r.batched] or rs
        out[arm] = {
            "n": len(rs),
            "accuracy": _mean([r.contains for r in rs]),
            "exact_match": _mean([r.exact_match for r in rs]),
            "f1": _mean([r.f1 for r in rs]),
            "format": _mean([r.format_ok for r in rs]),
            "stale": _mean([r.stale for r in rs]),
            "hit_at_k": _mean([r.hit for r in rs]),
            "latency_n": len(lat),
            "p50_ms": metrics.percentile([r.total_ms for r in lat], 50),
            "p95_ms": metrics.percentile([r.total_ms for r in lat], 95),
            "ttft_p50_ms": metrics.percentile([r.ttft_ms for r in lat], 50),
            "retrieve_p50_ms": metrics.percentile([r.retrieve_ms for r in lat], 50),
            "prompt_tokens": _mean([float(r.prompt_tokens) for r in rs]),
            "snapshot": next((r.snapshot for r in rs if r.snapshot), None),
            "adapter": next((r.adapter for r in rs if r.adapter), None),
        }
    return out
