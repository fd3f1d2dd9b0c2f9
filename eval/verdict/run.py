"""`ragtune verdict`: measure "fine-tune, retrieve, or both" on the user's own data, in one run.

Order matters for fairness: every adapter is trained and every arm evaluated on one pinned index
snapshot before the document update is applied; the update is then absorbed the way each arm
would in production (re-index for rag/hybrid, a short re-tune for ft) and only the changed facts
are asked again.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ragtune.core.adapters import read_card
from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.eval.harness.arms import ArmSpec, arm
from ragtune.eval.harness.backends import InProcessBackend
from ragtune.eval.harness.baselines import baseline_arms, majority_answer
from ragtune.eval.harness.data import EvalItem, evenly_spaced
from ragtune.eval.harness.labels import label_report
from ragtune.eval.harness.latency import (
    COMPARED,
    LatencySample,
    compare_latency,
    latency_items,
    run_latency,
    summarize_latency,
)
from ragtune.eval.harness.load import HttpLoadTarget, LoadLevel, loadable, run_load, serve_locally
from ragtune.eval.harness.report import manifest
from ragtune.eval.harness.runner import Record, RunSettings, Scoring, run_arms
from ragtune.eval.verdict.answers import collect, disagreements
from ragtune.eval.verdict.compare import arm_figures, comparisons, main_arms
from ragtune.eval.verdict.inputs import VerdictData
from ragtune.eval.verdict.learning_curve import CURVE_ARMS, curve_points, nested_subsets
from ragtune.eval.verdict.recommend import CurvePoint, SetupCost, UpdateCost, VerdictFigures, recommend
from ragtune.eval.verdict.report import VerdictResult, write_verdict
from ragtune.eval.verdict.seeds import base_arm, seed_arm
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
                and card.hyperparameters.get("seed", config.tuning.seed) == config.tuning.seed
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


def train_seeds(
    train: _Trainer, subsets: dict[float, list[Example]], config: Config
) -> tuple[dict[float, list[str]], dict[float, float]]:
    """One adapter per training share and seed (tuning.seed + i); the first seed keeps the plain name.
    Returns the adapter names per share (first seed first) and the first seed's training seconds."""
    first = config.tuning.seed
    names: dict[float, list[str]] = {}
    seconds: dict[float, float] = {}
    for f, rows in subsets.items():
        plain = f"verdict-ft-{round(100 * f)}"
        names[f] = [plain if i == 0 else f"{plain}-seed{first + i}" for i in range(config.verdict.seeds)]
        times = [train(rows, n, tuning={"seed": first + i} if i else None) for i, n in enumerate(names[f])]
        seconds[f] = times[0]
    return names, seconds


def setup_arms(config: Config, examples: Sequence[Example], adapters: Sequence[str], raft: bool) -> list[ArmSpec]:
    """The setups compared, then ft and hybrid with each extra training seed's adapter."""
    full = adapters[0]
    arms = [ArmSpec(name="base", mode="base")]
    if config.verdict.few_shot_k:
        prompt = few_shot_prompt(config.prompt.system_prompt, examples, config.verdict.few_shot_k)
        arms.append(ArmSpec(name="few-shot", mode="base", system_prompt=prompt))
    arms += [
        ArmSpec(name="ft", mode="ft", adapter=full),
        ArmSpec(name="rag", mode="rag"),
        ArmSpec(name="hybrid", mode="hybrid", adapter=full),
    ]
    if raft:
        arms.append(ArmSpec(name="hybrid-raft", mode="hybrid", adapter="verdict-raft"))
    for i, name in enumerate(adapters[1:], 1):
        arms += [ArmSpec(name=seed_arm(m, i, config.tuning.seed), mode=m, adapter=name) for m in CURVE_ARMS]
    return arms


def extra_arms(setups: Sequence[ArmSpec], extra: Sequence[ArmSpec], adapter: str) -> list[ArmSpec]:
    """The suite's own arms (a remote generator's, say) beside the setups; a tuned one that names no
    adapter gets the 100% fine-tune (for a remote generator: the server's model of that name)."""
    taken = {a.name for a in setups}
    clash = sorted(a.name for a in extra if a.name in taken)
    if clash:
        raise DataError(f"verdict suite arms {', '.join(clash)}: the verdict's own arms have these names")
    return [arm(a, adapter) for a in extra]


def verdict_baselines(config: Config, examples: Sequence[Example], scoring: Scoring) -> tuple[list[ArmSpec], list[str]]:
    """`eval.baselines` with the constant taken from the training answers, as the eval extracts them."""
    constant = majority_answer((e.answer for e in examples), scoring.answer_regex)
    arms, notes = baseline_arms(config.eval.baselines, constant)
    for a in arms:
        if a.baseline == "constant":
            notes.append(f'constant: "{a.constant}" for every question, the most frequent training answer')
        else:
            notes.append("extractive: the retrieved sentence nearest the question, no generator")
    return arms, notes


def _run_curve(
    pipeline: Pipeline,
    config: Config,
    items: list[EvalItem],
    records: list[Record],
    subsets: dict[float, list[Example]],
    adapters: dict[float, list[str]],
    scoring: Scoring,
    snapshot: str | None,
) -> list[CurvePoint]:
    """ft and hybrid per training share and seed; the 100% point reuses the main run's answers."""
    curve_items = evenly_spaced(items, config.verdict.curve_eval_limit)
    ids = {it.id for it in curve_items}
    curve: list[CurvePoint] = []
    for f in sorted(subsets):
        if f == 1.0:
            rs = [r for r in records if r.id in ids]
        else:
            arms = [
                ArmSpec(name=seed_arm(m, i, config.tuning.seed), mode=m, adapter=name)
                for i, name in enumerate(adapters[f])
                for m in CURVE_ARMS
            ]
            rs = run_arms(pipeline, curve_items, arms, config, RunSettings(scoring=scoring, snapshot=snapshot))
        curve += curve_points(rs, f, len(subsets[f]))
    return curve


def _index(config: Config, data: VerdictData, console: Console) -> tuple[Index, float, list[str]]:
    """The documents indexed (timed), and a note when that was a no-op on an existing index."""
    index = Index.from_config(config)
    t0 = time.perf_counter()
    built = index.upsert(data.docs)
    index_build_s = time.perf_counter() - t0
    console.print(f"{built.summary()} in {index_build_s:.1f} s")
    notes = []
    if built.unchanged and not (built.added or built.updated):
        notes.append(
            f"the workspace index already held these documents, so the index build time ({index_build_s:.1f} s) "
            "is that of a no-op check; use a fresh workspace to measure a build"
        )
    return index, index_build_s, notes


def _timed(
    config: Config, pipeline: Pipeline, items: Sequence[EvalItem], arms: Sequence[ArmSpec], snapshot: str | None
) -> list[LatencySample]:
    """The interleaved paired latency sample of the setups (first training seed only)."""
    n, seed = config.eval.latency_samples, config.generation.seed
    chosen = latency_items(items, None if n == "all" else n, seed)
    mains = [a for a in arms if base_arm(a.name) == a.name]
    return run_latency(InProcessBackend(pipeline), chosen, mains, seed, snapshot, progress=True)


def _loaded(
    config: Config, pipeline: Pipeline, items: Sequence[EvalItem], arms: Sequence[ArmSpec], snapshot: str | None
) -> tuple[list[LoadLevel], list[str]]:
    """The setups at `verdict.load_levels`, closed loop through the pipeline served on loopback; and a
    note naming the setups a request cannot ask for (few-shot's own system prompt)."""
    levels = config.verdict.load_levels or []
    mains, skipped = loadable([a for a in arms if base_arm(a.name) == a.name])
    with serve_locally(pipeline) as url:
        questions = [it.question for it in items]
        table, _ = run_load(HttpLoadTarget(url), questions, mains, levels, config.eval.load_requests, snapshot)
    note = f"not run under load (server-side settings no request can carry): {', '.join(skipped)}"
    return table, [note] if skipped else []


def _figures(
    config: Config,
    records: list[Record],
    arms: Sequence[ArmSpec],
    scoring: Scoring,
    timed: Sequence[LatencySample] = (),
) -> VerdictFigures:
    """Per-arm figures and the paired comparisons (seeds folded in, baselines in the family), and the
    paired latency ratios the speed sentences cite."""
    seed, resamples, alpha = config.generation.seed, config.eval.bootstrap_resamples, config.eval.alpha
    mains = main_arms(records)
    return VerdictFigures(
        metric=METRIC,
        arms=arm_figures(records, {a.name: a for a in arms}, seed, resamples, summarize_latency(timed)),
        comparisons=comparisons(records, METRIC, seed, alpha, resamples),
        margin=config.verdict.margin,
        hit_k=scoring.hit_k,
        labels=label_report(records, mains),
        latency=compare_latency(timed, COMPARED, resamples, seed, alpha),
    )


def run_verdict(config: Config, data: VerdictData, out: Path, console: Console | None = None) -> dict[str, Path]:
    console = console or Console()
    vc = config.verdict
    seed = config.generation.seed
    config.workspace.mkdir(parents=True, exist_ok=True)
    if not data.items:
        raise DataError("the verdict needs at least one eval question")
    if not data.examples:
        raise DataError("the verdict needs at least one training example")

    console.rule("1. index the documents")
    index, index_build_s, notes = _index(config, data, console)
    snapshot = index.snapshot

    console.rule("2. train: the full set, the learning-curve subsets (per seed) and RAFT")
    fractions = sorted(set(vc.curve_fractions) | {1.0})
    subsets = nested_subsets(data.examples, fractions, seed)
    train = _Trainer(config, console)
    adapters, train_s = train_seeds(train, subsets, config)
    raft = raft_rows(subsets[1.0], index, config, snapshot, console)
    # RAFT continues the ft adapter (style already learned) so a bounded set of long RAFT rows only has to
    # teach reading the context: the full set from scratch took 13.5 min of the 30-min budget on the sample
    full = adapters[1.0][0]
    raft_s = train(raft, "verdict-raft", snapshot=snapshot, tuning=raft_tuning(config), init=full) if raft else None
    peak_mb = _peak_rss_mb()

    pipeline = Pipeline.from_config(config, with_index=False)
    pipeline.index = index
    setups = setup_arms(config, subsets[1.0], adapters[1.0], bool(raft))
    scoring = Scoring.from_config(config)
    baselines, baseline_notes = verdict_baselines(config, data.examples, scoring)
    arms = [*setups, *extra_arms(setups, data.arms, adapters[1.0][0]), *baselines]

    console.rule("3. evaluate every arm (and the trivial baselines) on the same questions and snapshot")
    items = evenly_spaced(data.items, vc.eval_limit)
    records = run_arms(
        pipeline, items, arms, config, RunSettings(scoring=scoring, snapshot=snapshot, latency_samples=0)
    )
    console.rule("latency: every setup on the same questions, one request at a time, interleaved")
    timed = _timed(config, pipeline, items, arms, snapshot)
    loaded: list[LoadLevel] = []
    if vc.load_levels:
        console.rule(f"under load: every setup at concurrency {', '.join(map(str, vc.load_levels))}, closed loop")
        loaded, load_notes = _loaded(config, pipeline, items, arms, snapshot)
        notes += load_notes

    console.rule("4. learning curve")
    curve = _run_curve(pipeline, config, items, records, subsets, adapters, scoring, snapshot)

    update: list[UpdateCost] = []
    if data.new_docs:
        console.rule("5. a document change: re-index for rag/hybrid, re-tune for ft")
        if not data.changed:
            raise DataError("a document update needs questions about the changed facts (--update-data)")
        deployed = [a for a in setups if a.name in main_arms(records)]
        outcome = absorb_update(config, index, pipeline, deployed, data.new_docs, data.changed, train.retune, scoring)
        update, notes = outcome.costs, notes + outcome.notes
        console.print("\n".join(outcome.notes))

    if raft_s is not None:
        n_raft = len(raft or [])
        notes.append(
            f"RAFT adapter: {n_raft} retrieval-augmented examples on top of '{full}', trained in {raft_s:.0f} s"
        )
    if vc.seeds > 1:
        notes.append(f"ft and hybrid trained with seeds {config.tuning.seed}..{config.tuning.seed + vc.seeds - 1}")
    figs = _figures(config, records, arms, scoring, timed).model_copy(
        update={
            "update": update,
            "setup": SetupCost(
                training_s=train_s[1.0],
                peak_mem_mb=peak_mb,
                train_examples=len(subsets[1.0]),
                index_build_s=index_build_s,
            ),
            "curve": curve,
            "load": loaded,
        }
    )
    rows = collect(records)
    meta: dict[str, Any] = {
        "snapshot": snapshot,
        **data.sources,
        "questions": len(items),
        "train_examples": len(data.examples),
    }
    meta |= {"seed": seed, "training_seeds": [config.tuning.seed + i for i in range(vc.seeds)]}
    result = VerdictResult(
        figures=figs,
        recommendation=recommend(figs),
        manifest=manifest(config, meta),
        notes=notes + baseline_notes,
        disagreements=disagreements(rows, main_arms(records)),
    )
    paths = write_verdict(out, result, rows)
    console.rule("verdict")
    console.print(f"[bold]Recommendation: {result.recommendation.choice}[/]")
    console.print(result.recommendation.text)
    console.print(f"report: {paths['md']} and {paths['html']}; every answer in {paths['answers']}")
    return paths
