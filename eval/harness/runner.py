"""Run arms over the same questions and score every answer, saving each record as it comes.

A few questions per arm run one at a time so latency figures are single-request latencies; the
rest run batched for throughput (batching changes speed, never the metric definitions). Records go
to an append-only JSONL journal, so a killed run resumes with the questions it had not finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from tqdm.auto import tqdm

from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.core.types import Answer
from ragtune.eval.harness import metrics
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.arms import arm as to_arm
from ragtune.eval.harness.backends import Backend, InProcessBackend
from ragtune.eval.harness.baselines import answer_baseline
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.latency import MIN_SAMPLES
from ragtune.serving.pipeline import Pipeline

# Metrics whose per-question value is 0/1 (McNemar applies) and those where lower is better.
LOWER_IS_BETTER = {"stale", "retrieve_ms", "ttft_ms", "total_ms"}


class Record(BaseModel):
    id: str
    arm: str
    mode: str = ""
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
    retrieved: list[str] = Field(default_factory=list, description="ranked distinct doc ids (cited docs over HTTP)")
    cited: list[str] = Field(default_factory=list, description="doc ids of the passages the prompt used")
    gold_docs: list[str] = Field(default_factory=list)
    scores: dict[str, float | None] = Field(default_factory=dict, description="every metric of this question")
    snapshot: str | None = None
    adapter: str | None = None
    batched: bool = False
    retrieve_ms: float = 0.0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    wall_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Scoring(BaseModel):
    """How answers are scored; the same for every arm of a run."""

    answer_regex: str | None = None
    format_regex: str | None = None
    format_schema: dict[str, Any] | None = None
    ks: list[int] = Field(default_factory=lambda: [1, 3, 5, 10])
    hit_k: int = 3

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> Scoring:
        cfg = config.eval
        base = {
            "answer_regex": cfg.answer_regex,
            "format_regex": cfg.format_regex,
            "format_schema": getattr(cfg, "format_schema", None),
            "ks": list(getattr(cfg, "ks", [1, 3, 5, 10])),
            "hit_k": config.retrieval.top_k,
        }
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def depth(self) -> int:
        return max([*self.ks, self.hit_k])


def score(
    item: EvalItem,
    arm: ArmSpec,
    ans: Answer,
    scoring: Scoring,
    ranked: list[str] | None,
    contexts: list[str] | None,
    batched: bool,
    wall_ms: float,
) -> Record:
    text = ans.answer
    span = metrics.extract(text, scoring.answer_regex)
    cited = list(dict.fromkeys(c.doc_id for c in ans.citations))
    retrieved = ranked if ranked is not None else cited
    gold = item.doc_ids
    s: dict[str, float | None] = {}
    if item.answers and not arm.retrieval_only:
        s["exact_match"] = metrics.exact_match(span, item.answers)
        s["f1"] = metrics.token_f1(span, item.answers)
        s["contains"] = metrics.contains(text, item.answers)
        s["extracted_match"] = metrics.extracted_match(text, item.answers, scoring.answer_regex)
        s["format"] = metrics.format_ok(text, scoring.format_regex, scoring.format_schema)
        s["stale"] = metrics.contains(text, item.stale_answers) if item.stale_answers else None
    if arm.retrieves and gold:
        for k in scoring.ks:
            if ranked is None and k > len(retrieved):
                continue  # over HTTP only the cited passages are known
            s[f"hit@{k}"] = metrics.hit_at_k(retrieved, gold, k)
            s[f"recall@{k}"] = metrics.recall_at_k(retrieved, gold, k)
            s[f"ndcg@{k}"] = metrics.ndcg_at_k(retrieved, gold, k)
        s["mrr"] = metrics.mrr(retrieved, gold)
        s["citation"] = metrics.citation_correct(cited, gold)
    if arm.retrieves:
        s["grounding"] = metrics.grounding(text, contexts or [])
    hit = metrics.hit_at_k(retrieved, gold, scoring.hit_k) if arm.retrieves else None
    return Record(
        id=item.id,
        arm=arm.name,
        mode=arm.mode,
        question=item.question,
        answer=text,
        extracted=span,
        golds=item.answers,
        exact_match=s.get("exact_match") or 0.0,
        f1=s.get("f1") or 0.0,
        contains=s.get("contains") or 0.0,
        format_ok=s.get("format"),
        stale=s.get("stale"),
        hit=hit,
        retrieved=retrieved,
        cited=cited,
        gold_docs=gold,
        scores={k: v for k, v in s.items() if v is not None},
        snapshot=ans.snapshot,
        adapter=ans.adapter,
        batched=batched,
        retrieve_ms=ans.timings.retrieve_ms,
        ttft_ms=ans.timings.ttft_ms,
        total_ms=ans.timings.total_ms,
        wall_ms=round(wall_ms, 2),
        prompt_tokens=ans.usage.prompt_tokens,
        completion_tokens=ans.usage.completion_tokens,
    )


class Journal:
    """Append-only JSONL of records; a torn last line (killed mid-write) is ignored on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[Record]:
        if not self.path.is_file():
            return []
        out: list[Record] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Record.model_validate_json(line))
            except ValidationError:
                continue
        return out

    def append(self, records: Sequence[Record]) -> None:
        data = self.path.read_bytes() if self.path.is_file() else b""
        with self.path.open("a", encoding="utf-8") as fh:
            if data and not data.endswith(b"\n"):
                fh.write("\n")  # a torn line from a killed run stays on its own
            for r in records:
                fh.write(r.model_dump_json() + "\n")
            fh.flush()


@dataclass
class RunSettings:
    """How a run goes, not what it measures: scoring and pinning, journaling, progress, when to stop.

    `block`: run every arm on `block` questions before the next ones, so a run stopped early still
    holds paired records of all arms. `deadline` (a `time.monotonic()` value): start no new block
    after it (the first block always runs); a later call with the journal finishes the run.
    """

    scoring: Scoring | None = None
    snapshot: str | None = None
    journal: Journal | None = None
    latency_samples: int = 4
    progress: bool = True
    block: int | None = None
    deadline: float | None = None
    fresh: bool = False


def run_arm(
    pipeline: Pipeline | Backend,
    items: Sequence[EvalItem],
    arm: str | ArmSpec,
    config: Config,
    settings: RunSettings | None = None,
    *,
    adapter: str | None = None,
    desc: str | None = None,
    done: set[tuple[str, str]] | None = None,
) -> list[Record]:
    """Answer and score `items` with one arm; skip (arm, id) pairs in `done`, journal the rest."""
    run = settings or RunSettings()
    backend: Backend = InProcessBackend(pipeline) if isinstance(pipeline, Pipeline) else pipeline
    spec = to_arm(arm, adapter)
    scoring = run.scoring or Scoring.from_config(config)
    snapshot, journal, latency_samples, progress = run.snapshot, run.journal, run.latency_samples, run.progress
    todo = [it for it in items if (spec.name, it.id) not in (done or set())]
    first_single = max(0, latency_samples - (len(items) - len(todo)))
    single, batched = todo[:first_single], todo[first_single:]
    groups: list[tuple[list[EvalItem], bool]] = [([it], False) for it in single]
    # Several batches per call: the generator sorts them by length so padding stays small.
    per_call = 4 * config.generation.batch_size
    groups += [(batched[i : i + per_call], True) for i in range(0, len(batched), per_call)]
    records: list[Record] = []
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc or f"eval {spec.name}", disable=not progress)
    for group, is_batch in groups:
        pin = snapshot or (backend.current_snapshot() if spec.retrieves else None)
        questions = [it.question for it in group]
        t0 = time.perf_counter()
        if spec.baseline is not None:  # no generator: eval/harness/baselines.py
            answers = answer_baseline(backend, questions, spec, pin, config.retrieval.top_k)
        elif spec.retrieval_only:
            answers = [Answer(answer="", mode=spec.mode) for _ in group]
        else:
            answers = backend.answer(questions, spec, pin)
        wall = (time.perf_counter() - t0) * 1000 / len(group)
        t1 = time.perf_counter()
        ranked = backend.ranked_docs(questions, spec, pin, scoring.depth)
        if spec.retrieval_only:
            if ranked is None:
                raise DataError(f"arm '{spec.name}' is retrieval-only, which needs the in-process backend")
            wall = (time.perf_counter() - t1) * 1000 / len(group)
            for a in answers:
                a.timings.retrieve_ms = a.timings.total_ms = round(wall, 2)
        new = [
            score(it, spec, ans, scoring, ranked[i] if ranked else None, backend.context_texts(ans), is_batch, wall)
            for i, (it, ans) in enumerate(zip(group, answers, strict=True))
        ]
        if journal is not None:
            journal.append(new)
        records += new
        bar.update(len(group))
    bar.close()
    return records


def run_arms(
    backend: Pipeline | Backend,
    items: Sequence[EvalItem],
    arms: Sequence[ArmSpec],
    config: Config,
    settings: RunSettings | None = None,
) -> list[Record]:
    """All arms on the same items; with a journal, resumes and returns old plus new records (see
    `RunSettings` for blocks and the deadline)."""
    run = settings or RunSettings()
    journal, snapshot, block, deadline = run.journal, run.snapshot, run.block, run.deadline
    ids = {it.id for it in items}
    old = [r for r in journal.read() if r.id in ids] if journal is not None else []
    done = {(r.arm, r.id) for r in old}
    if snapshot is None:
        snapshot = next((r.snapshot for r in old if r.snapshot), None)
    out = list(old)
    size = block or max(1, len(items))
    for start in range(0, len(items), size):
        if deadline is not None and start > 0 and time.monotonic() >= deadline:
            break
        chunk = items[start : start + size]
        for a in arms:
            now = replace(run, snapshot=snapshot, latency_samples=run.latency_samples if start == 0 else 0)
            out += run_arm(backend, chunk, a, config, now, done=done)
            if snapshot is None:
                snapshot = next((r.snapshot for r in out if r.snapshot), None)
    order = {(a.name, it.id): n for n, (a, it) in enumerate((a, it) for a in arms for it in items)}
    return sorted((r for r in out if (r.arm, r.id) in order), key=lambda r: order[(r.arm, r.id)])


def check_run_key(path: Path, key: dict[str, Any], fresh: bool = False) -> None:
    """Refuse to resume a journal written by a different run (other data, arms or config)."""
    if fresh or not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(key, indent=2, sort_keys=True))
        return
    old = json.loads(path.read_text())
    if old != key:
        diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        raise DataError(
            f"{path.parent} holds records of a different run ({', '.join(diff)} changed); "
            "use another --out or --fresh to start over"
        )


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(records: Sequence[Record], latency: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Per-arm figures. Latency comes from `latency` (the interleaved sample, eval/harness/latency.py)
    where given, else from the single-request (unbatched) records; a percentile the sample size
    cannot support (see MIN_SAMPLES) is None."""
    out: dict[str, dict[str, Any]] = {}
    for arm_name in dict.fromkeys(r.arm for r in records):
        rs = [r for r in records if r.arm == arm_name]
        lat = [r for r in rs if not r.batched] or rs
        wall_s = sum(r.wall_ms for r in rs) / 1000
        s: dict[str, Any] = {
            "n": len(rs),
            "mode": rs[0].mode,
            "accuracy": _mean([r.contains for r in rs]),
            "exact_match": _mean([r.exact_match for r in rs]),
            "f1": _mean([r.f1 for r in rs]),
            "format": _mean([r.format_ok for r in rs]),
            "stale": _mean([r.stale for r in rs]),
            "hit_at_k": _mean([r.hit for r in rs]),
            "latency_n": len(lat),
        }
        for name, field in (("", "total_ms"), ("ttft_", "ttft_ms"), ("retrieve_", "retrieve_ms")):
            vals = [getattr(r, field) for r in lat]
            for q in MIN_SAMPLES:
                s[f"{name}p{q}_ms"] = metrics.percentile(vals, q) if len(vals) >= MIN_SAMPLES[q] else None
        s.update((latency or {}).get(arm_name, {}))
        s["throughput_qps"] = len(rs) / wall_s if wall_s > 0 else None
        s["prompt_tokens"] = _mean([float(r.prompt_tokens) for r in rs])
        s["completion_tokens"] = _mean([float(r.completion_tokens) for r in rs])
        s["snapshot"] = next((r.snapshot for r in rs if r.snapshot), None)
        s["adapter"] = next((r.adapter for r in rs if r.adapter), None)
        names = dict.fromkeys(k for r in rs for k in r.scores)
        s["metrics"] = {k: _mean([r.scores.get(k) for r in rs]) for k in names}
        out[arm_name] = s
    return out
