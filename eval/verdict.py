"""`ragtune verdict`: measure "fine-tune, retrieve, or both" on the user's own data, in one run.

Order matters for fairness: every adapter is trained and every arm evaluated on one pinned index
snapshot before the document update is applied; the update is then absorbed the way each arm
would in production (re-index for rag/hybrid, a short re-tune for ft) and only the changed facts
are asked again.
"""

from __future__ import annotations

import itertools
import re
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ragtune.core.adapters import read_card
from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.core.types import ContextBlock, Document
from ragtune.eval import stats
from ragtune.eval.arms import ArmSpec
from ragtune.eval.data import EvalItem, load_items
from ragtune.eval.learning_curve import nested_subsets
from ragtune.eval.recommend import (
    ArmFigures,
    Comparison,
    CurvePoint,
    Estimate,
    SetupCost,
    UpdateCost,
    VerdictFigures,
    recommend,
)
from ragtune.eval.report import manifest
from ragtune.eval.runner import Record, Scoring, run_arms, summarize
from ragtune.eval.verdict_report import VerdictResult, write_verdict
from ragtune.retrieval.index import Index
from ragtune.retrieval.loaders import load_documents
from ragtune.serving.pipeline import Pipeline
from ragtune.tuning.data import Example, data_hash, load_examples
from ragtune.tuning.trainer import train_adapter

METRIC = "token F1"


@dataclass
class VerdictInputs:
    data: Path
    train: Path
    docs: list[Path]
    out: Path
    update: Path | None = None
    update_data: Path | None = None


def spread(items: Sequence[Any], n: int | None) -> list[Any]:
    """n items evenly spaced over the set, so every document keeps its share of questions."""
    if n is None or n >= len(items):
        return list(items)
    return [items[round(i * len(items) / n)] for i in range(n)]


def few_shot_prompt(system_prompt: str, examples: Sequence[Example], k: int) -> str:
    """The house system prompt followed by k worked examples: the no-training alternative to ft."""
    shots = "\n\n".join(f"Question: {ex.question}\nAnswer:\n{ex.answer}" for ex in examples[:k])
    return f"{system_prompt}\n\nExamples of answers in the house style:\n\n{shots}"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sentence_with(text: str, answer: str) -> str | None:
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if answer.lower() in sentence.lower():
            return sentence.strip()
    return None


def update_examples(items: Sequence[EvalItem], docs: dict[str, Document]) -> list[Example]:
    """House-style training examples teaching the changed facts, from the new documents' own sentences."""
    out: list[Example] = []
    for it in items:
        doc = next((docs[d] for d in it.doc_ids if d in docs), None)
        if doc is None:
            continue
        sentence = _sentence_with(doc.text, it.answers[0])
        if sentence is None:
            continue
        out.append(
            Example(
                question=it.question,
                answer=f"{sentence}\nSources: {doc.title}",
                context=[ContextBlock(title=doc.title, text=sentence)],
                group=doc.id,
            )
        )
    return out


class _Trainer:
    """Train an adapter unless one with the same data and base model is already there."""

    def __init__(self, config: Config, console: Console) -> None:
        self.config = config
        self.console = console

    def __call__(self, examples: list[Example], name: str, epochs: float | None = None) -> float:
        card_dir = self.config.adapters_dir / name
        if (card_dir / "adapter_card.json").is_file():
            card = read_card(card_dir)
            if card.data_hash == data_hash(examples) and card.base_model == self.config.models.generator:
                self.console.print(f"adapter '{name}' already trained on this data ({card.wall_time_s:.0f} s); reused")
                return float(card.wall_time_s or 0.0)
        self.console.print(f"training '{name}' on {len(examples)} examples")
        result = train_adapter(examples, name, self.config, epochs=epochs)
        return float(result.card.wall_time_s or 0.0)


def _estimate(values: Sequence[float | None], seed: int) -> Estimate | None:
    iv = stats.bootstrap_ci([v for v in values if v is not None], seed=seed)
    if iv.mean is None:
        return None
    return Estimate(mean=iv.mean, lo=iv.low, hi=iv.high)


def _arm_figures(records: Sequence[Record], seed: int) -> list[ArmFigures]:
    summary = summarize(records)
    out: list[ArmFigures] = []
    for name, s in summary.items():
        rs = [r for r in records if r.arm == name]
        lat = [r for r in rs if not r.batched] or rs
        gen_ms = sum(max(r.total_ms - r.retrieve_ms, 1e-6) for r in lat)
        quality = _estimate([r.f1 for r in rs], seed)
        assert quality is not None
        out.append(
            ArmFigures(
                arm=name,
                quality=quality,
                format=_estimate([r.format_ok for r in rs], seed),
                p50_ms=float(s["p50_ms"] or 0.0),
                p95_ms=float(s["p95_ms"] or 0.0),
                tokens_per_s=1000 * sum(r.completion_tokens for r in lat) / gen_ms,
                prompt_tokens=s["prompt_tokens"],
            )
        )
    return out


def _comparisons(records: Sequence[Record], arms: Sequence[str], seed: int, alpha: float) -> list[Comparison]:
    """Every pair of arms on token F1 over the same questions, Holm-corrected as one family."""
    by_arm = {a: {r.id: r.f1 for r in records if r.arm == a} for a in arms}
    tests = []
    for a, b in itertools.combinations(arms, 2):
        ids = [i for i in by_arm[a] if i in by_arm[b]]
        xa, xb = [by_arm[a][i] for i in ids], [by_arm[b][i] for i in ids]
        tests.append(stats.compare_pair(METRIC, a, xa, b, xb, binary=stats.is_binary(xa + xb), seed=seed))
    stats.apply_holm(tests, alpha=alpha)
    return [
        Comparison(
            a=t.a,
            b=t.b,
            metric=METRIC,
            diff=t.diff or 0.0,
            lo=t.low,
            hi=t.high,
            p_value=t.p_holm,
            significant=t.significant,
        )
        for t in tests
    ]


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def run_verdict(config: Config, inputs: VerdictInputs, console: Console | None = None) -> dict[str, Path]:
    console = console or Console()
    vc = config.verdict
    seed = config.generation.seed
    notes: list[str] = []
    config.workspace.mkdir(parents=True, exist_ok=True)

    console.rule("1. index the documents")
    docs = load_documents(inputs.docs)
    if not docs:
        raise DataError(f"no documents found in {', '.join(map(str, inputs.docs))}")
    index = Index(config.index_dir, config.retrieval, config.models.embedder)
    t0 = time.perf_counter()
    built = index.upsert(docs)
    index_build_s = time.perf_counter() - t0
    console.print(f"{built.summary()} in {index_build_s:.1f} s")
    snapshot = index.snapshot

    console.rule("2. train: the full set and the learning-curve subsets")
    examples = load_examples(inputs.train)
    fractions = sorted(set(vc.curve_fractions) | {1.0})
    subsets = nested_subsets(examples, fractions, seed)
    train = _Trainer(config, console)
    adapter_of = {f: f"verdict-ft-{round(100 * f)}" for f in fractions}
    train_s = {f: train(subsets[f], adapter_of[f]) for f in fractions}
    peak_mb = _peak_rss_mb()

    pipeline = Pipeline.from_config(config, with_index=False)
    pipeline.index = index
    full = adapter_of[1.0]
    arms = [
        ArmSpec(name="base", mode="base"),
        ArmSpec(
            name="few-shot",
            mode="base",
            system_prompt=few_shot_prompt(config.prompt.system_prompt, subsets[1.0], vc.few_shot_k),
        ),
        ArmSpec(name="ft", mode="ft", adapter=full),
        ArmSpec(name="rag", mode="rag"),
        ArmSpec(name="hybrid", mode="hybrid", adapter=full),
    ]
    if vc.few_shot_k == 0:
        arms = [a for a in arms if a.name != "few-shot"]
    scoring = Scoring.from_config(config)

    console.rule("3. evaluate every arm on the same questions and snapshot")
    items = spread(load_items(inputs.data), vc.eval_limit)
    records = run_arms(pipeline, items, arms, config, scoring=scoring, snapshot=snapshot)
    names = [a.name for a in arms]
    figures = _arm_figures(records, seed)

    console.rule("4. learning curve")
    curve_items = spread(items, vc.curve_eval_limit)
    curve_ids = {it.id for it in curve_items}
    curve: list[CurvePoint] = []
    for f in fractions:
        if f == 1.0:
            rs = [r for r in records if r.id in curve_ids and r.arm in ("ft", "hybrid")]
        else:
            curve_arms = [
                ArmSpec(name="ft", mode="ft", adapter=adapter_of[f]),
                ArmSpec(name="hybrid", mode="hybrid", adapter=adapter_of[f]),
            ]
            rs = run_arms(pipeline, curve_items, curve_arms, config, scoring=scoring, snapshot=snapshot)
        for arm_name in ("ft", "hybrid"):
            mine = [r for r in rs if r.arm == arm_name]
            curve.append(
                CurvePoint(
                    arm=arm_name,
                    fraction=f,
                    n_examples=len(subsets[f]),
                    quality=_mean([r.f1 for r in mine]) or 0.0,
                    format=_mean([r.format_ok for r in mine]),
                )
            )

    update: list[UpdateCost] = []
    if inputs.update is not None:
        console.rule("5. a document change: re-index for rag/hybrid, re-tune for ft")
        if inputs.update_data is None:
            raise DataError("--update needs --update-data: questions whose answers the update changes")
        changed = load_items(inputs.update_data)
        new_docs = load_documents([inputs.update])
        t0 = time.perf_counter()
        upd = index.upsert(new_docs)
        ingest_s = time.perf_counter() - t0
        console.print(f"update: {upd.summary()} in {ingest_s:.2f} s")
        retune_examples = update_examples(changed, {d.id: d for d in new_docs})
        if not retune_examples:
            notes.append("no changed fact could be located in the new documents: ft was not re-tuned")
            retune_s = None
        else:
            retune_s = train([*subsets[1.0], *retune_examples], "verdict-ft-retuned")
            notes.append(
                f"ft absorbs the change by re-training on the training set plus {len(retune_examples)} examples "
                "built from the changed sentences of the new documents (the same facts the update questions ask)"
            )
        after_arms = [a for a in arms if a.name in ("base", "few-shot", "rag", "hybrid")]
        if retune_s is not None:
            after_arms.append(ArmSpec(name="ft", mode="ft", adapter="verdict-ft-retuned"))
        after = run_arms(pipeline, changed, after_arms, config, scoring=scoring, snapshot=index.snapshot)
        how = {"rag": ("ingest", ingest_s), "hybrid": ("ingest", ingest_s), "ft": ("retune", retune_s)}
        for a in after_arms:
            method, secs = how.get(a.name, ("none", None))
            update.append(
                UpdateCost(
                    arm=a.name,
                    method=method,
                    seconds=secs,
                    changed_correct=_mean([r.contains for r in after if r.arm == a.name]),
                    n_changed=len(changed),
                )
            )

    figs = VerdictFigures(
        metric=METRIC,
        arms=figures,
        comparisons=_comparisons(records, names, seed, config.eval.alpha),
        update=update,
        setup=SetupCost(
            training_s=train_s[1.0],
            peak_mem_mb=peak_mb,
            train_examples=len(subsets[1.0]),
            index_build_s=index_build_s,
        ),
        curve=curve,
    )
    result = VerdictResult(
        figures=figs,
        recommendation=recommend(figs),
        manifest=manifest(
            config,
            {
                "snapshot": snapshot,
                "data": str(inputs.data),
                "train": str(inputs.train),
                "docs": [str(d) for d in inputs.docs],
                "update": str(inputs.update) if inputs.update else None,
                "questions": len(items),
                "curve_questions": len(curve_items),
                "seed": seed,
            },
        ),
        notes=notes,
    )
    paths = write_verdict(inputs.out, result)
    console.rule("verdict")
    console.print(f"[bold]Recommendation: {result.recommendation.choice}[/]")
    console.print(result.recommendation.text)
    console.print(f"report: {paths['md']} and {paths['html']}")
    return paths
