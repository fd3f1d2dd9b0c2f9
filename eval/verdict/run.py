"""`ragtune verdict`: measure "fine-tune, retrieve, or both" on the user's own data, in one run.

Order matters for fairness: every adapter is trained and every arm evaluated on one pinned index
snapshot before the document update is applied; the update is then absorbed the way each arm
would in production (re-index for rag/hybrid, a short re-tune for ft) and only the changed facts
are asked again.
"""

from __future__ import annotations

import itertools
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ragtune.core.adapters import read_card
from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.eval.harness import stats
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.data import EvalItem, evenly_spaced
from ragtune.eval.harness.report import manifest
from ragtune.eval.harness.runner import Record, Scoring, run_arms, summarize
from ragtune.eval.verdict.inputs import VerdictData
from ragtune.eval.verdict.learning_curve import nested_subsets
from ragtune.eval.verdict.recommend import (
    ArmFigures,
    Comparison,
    CurvePoint,
    Estimate,
    SetupCost,
    UpdateCost,
    VerdictFigures,
    recommend,
)
from ragtune.eval.verdict.report import VerdictResult, write_verdict
from ragtune.eval.verdict.update_cost import absorb_update
from ragtune.retrieval.index import Index
from ragtune.serving.pipeline import Pipeline
from ragtune.tuning.data import Example, data_hash
from ragtune.tuning.trainer import train_adapter

METRIC = "token F1"


def few_shot_prompt(system_prompt: str, examples: Sequence[Example], k: int) -> str:
    """The house system prompt followed by k worked examples: the no-training alternative to ft."""
    shots = "\n\n".join(f"Question: {ex.question}\nAnswer:\n{ex.answer}" for ex in examples[:k])
    return f"{system_prompt}\n\nExamples of answers in the house style:\n\n{shots}"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class _Trainer:
    """Train an adapter unless one with the same data and base model is already there."""

    def __init__(self, config: Config, console: Console) -> None:
        self.config = config
        self.console = console

    def __call__(
        self,
        examples: list[Example],
        name: str,
        snapshot: str | None = None,
        tuning: dict[str, Any] | None = None,
        init: str | None = None,
    ) -> float:
        config = self.config
        if tuning:
            config = config.model_copy(update={"tuning": config.tuning.model_copy(update=tuning)})
        card_dir = config.adapters_dir / name
        if (card_dir / "adapter_card.json").is_file():
            card = read_card(card_dir)
            if (
                card.data_hash == data_hash(examples)
                and card.base_model == config.models.generator
                and card.parent_adapter == init
            ):
                self.console.print(f"adapter '{name}' already trained on this data ({card.wall_time_s:.0f} s); reused")
                return float(card.wall_time_s or 0.0)
        self.console.print(f"training '{name}' on {len(examples)} examples")
        init_dir = config.adapters_dir / init if init else None
        result = train_adapter(examples, name, config, snapshot=snapshot, init_adapter=init_dir)
        return float(result.card.wall_time_s or 0.0)

    def retune(self, examples: list[Example], name: str, init: str) -> float:
        """Always trained (it is a measurement): continue `init` on the changed facts, no held-out split."""
        tuning = self.config.tuning.model_copy(update={"val_fraction": 0.0, "test_fraction": 0.0})
        config = self.config.model_copy(update={"tuning": tuning})
        self.console.print(f"re-tuning '{init}' on {len(examples)} changed-fact examples")
        t0 = time.perf_counter()
        train_adapter(
            examples, name, config, epochs=self.config.verdict.retune_epochs, init_adapter=config.adapters_dir / init
        )
        return time.perf_counter() - t0


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


def raft_rows(
    examples: list[Example], index: Index, config: Config, snapshot: str | None, console: Console
) -> list[Example] | None:
    """RAFT training data from the live index, or None (with the reason printed) when it cannot be built."""
    if not config.verdict.raft:
        return None
    if not any(e.doc_id for e in examples):
        console.print("no training example names its gold document (doc_id): no RAFT arm")
        return None
    from ragtune.tuning.raft import RaftSettings, build_raft_examples

    tc = config.tuning
    # `examples` is already a seeded shuffle (the learning curve's order), so a prefix is a seeded subset
    examples = examples[: config.verdict.raft_examples]
    return build_raft_examples(examples, index, RaftSettings.from_tuning(tc), snapshot=snapshot)


def raft_tuning(config: Config) -> dict[str, Any]:
    """RAFT prompts carry k retrieved chunks (up to the embedder's 256-token window each), so they need
    room the plain fine-tune does not, and each row costs several times the activations of a plain one
    (a micro-batch of three 700-token rows peaked at 9 GB here). So: one row per micro-batch with
    accumulation keeping the effective batch. Context dropout is off: RAFT's own gold-dropping (1 - p)
    already teaches answering without the gold chunk."""
    tc = config.tuning
    return {
        "max_length": max(tc.max_length, tc.raft_k * 256 + 256),
        "context_dropout": 0.0,
        "batch_size": 1,
        "grad_accum": tc.batch_size * tc.grad_accum,
    }


def _curve(
    pipeline: Pipeline,
    config: Config,
    items: list[EvalItem],
    records: list[Record],
    subsets: dict[float, list[Example]],
    adapter_of: dict[float, str],
    scoring: Scoring,
    snapshot: str | None,
) -> list[CurvePoint]:
    """ft and hybrid per training share; the 100% point reuses the main run's answers to the same questions."""
    curve_items = evenly_spaced(items, config.verdict.curve_eval_limit)
    ids = {it.id for it in curve_items}
    curve: list[CurvePoint] = []
    for f in sorted(subsets):
        if f == 1.0:
            rs = [r for r in records if r.id in ids and r.arm in ("ft", "hybrid")]
        else:
            arms = [
                ArmSpec(name="ft", mode="ft", adapter=adapter_of[f]),
                ArmSpec(name="hybrid", mode="hybrid", adapter=adapter_of[f]),
            ]
            rs = run_arms(pipeline, curve_items, arms, config, scoring=scoring, snapshot=snapshot)
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
    return curve


def run_verdict(config: Config, data: VerdictData, out: Path, console: Console | None = None) -> dict[str, Path]:
    console = console or Console()
    vc = config.verdict
    seed = config.generation.seed
    notes: list[str] = []
    config.workspace.mkdir(parents=True, exist_ok=True)
    if not data.items:
        raise DataError("the verdict needs at least one eval question")
    if not data.examples:
        raise DataError("the verdict needs at least one training example")

    console.rule("1. index the documents")
    index = Index.from_config(config)
    t0 = time.perf_counter()
    built = index.upsert(data.docs)
    index_build_s = time.perf_counter() - t0
    console.print(f"{built.summary()} in {index_build_s:.1f} s")
    if built.unchanged and not (built.added or built.updated):
        notes.append(
            f"the workspace index already held these documents, so the index build time ({index_build_s:.1f} s) "
            "is that of a no-op check; use a fresh workspace to measure a build"
        )
    snapshot = index.snapshot

    console.rule("2. train: the full set, the learning-curve subsets and RAFT")
    fractions = sorted(set(vc.curve_fractions) | {1.0})
    subsets = nested_subsets(data.examples, fractions, seed)
    train = _Trainer(config, console)
    adapter_of = {f: f"verdict-ft-{round(100 * f)}" for f in fractions}
    train_s = {f: train(subsets[f], adapter_of[f]) for f in fractions}
    raft = raft_rows(subsets[1.0], index, config, snapshot, console)
    # RAFT continues the ft adapter (style already learned) so a bounded set of long RAFT rows only has to
    # teach reading the context: the full set from scratch took 13.5 min of the 30-min budget on the sample
    full = adapter_of[1.0]
    raft_s = train(raft, "verdict-raft", snapshot=snapshot, tuning=raft_tuning(config), init=full) if raft else None
    peak_mb = _peak_rss_mb()

    pipeline = Pipeline.from_config(config, with_index=False)
    pipeline.index = index
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
    if raft:
        arms.append(ArmSpec(name="hybrid-raft", mode="hybrid", adapter="verdict-raft"))
    if vc.few_shot_k == 0:
        arms = [a for a in arms if a.name != "few-shot"]
    scoring = Scoring.from_config(config)

    console.rule("3. evaluate every arm on the same questions and snapshot")
    items = evenly_spaced(data.items, vc.eval_limit)
    records = run_arms(pipeline, items, arms, config, scoring=scoring, snapshot=snapshot)
    names = [a.name for a in arms]

    console.rule("4. learning curve")
    curve = _curve(pipeline, config, items, records, subsets, adapter_of, scoring, snapshot)

    update: list[UpdateCost] = []
    if data.new_docs:
        console.rule("5. a document change: re-index for rag/hybrid, re-tune for ft")
        if not data.changed:
            raise DataError("a document update needs questions about the changed facts (--update-data)")
        outcome = absorb_update(config, index, pipeline, arms, data.new_docs, data.changed, train.retune, scoring)
        update, notes = outcome.costs, notes + outcome.notes
        console.print("\n".join(outcome.notes))

    setup_notes = (
        f"RAFT adapter: {len(raft or [])} retrieval-augmented examples on top of '{full}', trained in {raft_s:.0f} s"
        if raft_s is not None
        else None
    )
    figs = VerdictFigures(
        metric=METRIC,
        arms=_arm_figures(records, seed),
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
    if setup_notes:
        notes.append(setup_notes)
    result = VerdictResult(
        figures=figs,
        recommendation=recommend(figs),
        manifest=manifest(
            config,
            {
                "snapshot": snapshot,
                **data.sources,
                "questions": len(items),
                "train_examples": len(data.examples),
                "seed": seed,
            },
        ),
        notes=notes,
    )
    paths = write_verdict(out, result)
    console.rule("verdict")
    console.print(f"[bold]Recommendation: {result.recommendation.choice}[/]")
    console.print(result.recommendation.text)
    console.print(f"report: {paths['md']} and {paths['html']}")
    return paths
